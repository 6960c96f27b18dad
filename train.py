"""
This training script can be run both on a single gpu (or a CPU, or a Mac's MPS) in debug mode,
and also in a larger training run with distributed data parallel (ddp).

To run on a single GPU, example:
$ python train.py --batch_size=32 --compile=False

To run on the CPU of a laptop, example:
$ python train.py config/train_shakespeare_char_cpu.py

To run with DDP on 4 gpus on 1 node, example:
$ torchrun --standalone --nproc_per_node=4 train.py
(on CPUs the same works, with gloo instead of nccl: add --device=cpu on a machine that has GPUs)

To run with DDP on 8 gpus on each of 2 nodes, example:
- Run on the first (master) node with example IP 123.456.123.456:
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=0 --master_addr=123.456.123.456 --master_port=1234 train.py
- Run on the worker node:
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=1 --master_addr=123.456.123.456 --master_port=1234 train.py
(If your cluster does not have Infiniband interconnect prepend NCCL_IB_DISABLE=1)

To shard the weights, gradients and optimizer state across the processes instead of copying them (FSDP2,
for models that don't fit one GPU), add --fsdp=True to any of the torchrun commands above.
"""

import math
import os
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import hellaswag
import runtime
from chat_template import conversation_starts, masked_targets, rows_with_a_reply
from data_io import gpt2_encoding, open_tokens, read_meta
from model import GPT2_SIZES, GPTConfig, apply_lora, build_model, merge_lora
from quantize import dequantize, quantize as quantize_model
from tokenizer import load_tokenizer

# -----------------------------------------------------------------------------
# default config values designed to train a gpt2 (124M) on OpenWebText
# I/O
out_dir = 'out' # checkpoints (ckpt.pt, or an FSDP run's ckpt.dcp) go here
eval_interval = 2000 # evaluate train/val loss (and maybe checkpoint) every this many iterations
log_interval = 1 # print the `iter N: loss ...` line every this many iterations
eval_iters = 200 # batches per split in each evaluation
eval_only = False # if True, script exits right after the first eval
always_save_checkpoint = True # if True, always save a checkpoint after each eval
hellaswag_interval = 0 # score HellaSwag's val split every this many iterations (GPT-2 BPE models, rank-sharded); 0 disables
hellaswag_file = '' # a local HellaSwag JSONL file for it; '' downloads the val split into data/hellaswag once
init_from = 'scratch' # 'scratch', 'resume', the out_dir of another run (its weights), 'gpt2*' or a local Hugging Face GPT-2 directory
# wandb logging
wandb_log = False # disabled by default
wandb_project = 'owt' # wandb project name
wandb_run_name = 'gpt2' # the run's name in wandb, e.g. 'run' + str(time.time())
# data
dataset = 'openwebtext' # reads data/<dataset>/train.bin, val.bin (and meta.pkl)
gradient_accumulation_steps = 5 * 8 # used to simulate larger batch sizes
batch_size = 12 # if gradient_accumulation_steps > 1, this is the micro-batch size
block_size = 1024 # context length in tokens
# model
model_type = 'gpt' # 'gpt', or 'bigram': the lecture's baseline, a vocab_size x vocab_size table of next-token logits
n_layer = 12 # transformer blocks
n_head = 12 # attention heads per block; must divide n_embd
n_embd = 768 # width of the residual stream
dropout = 0.0 # for pretraining 0 is good, for finetuning try 0.1+
bias = False # do we use bias inside LayerNorm and Linear layers?
activation = 'gelu' # feed-forward non-linearity: 'gelu' (GPT-2's tanh approximation), 'gelu_exact' or 'relu'
gradient_checkpointing = False # recompute each Block's activations in backward: less memory, one more forward
# LoRA finetuning
lora_rank = 0 # 0 disables; else the base model is frozen and only rank-lora_rank adapters train
lora_alpha = 16.0 # the adapters' output is scaled by lora_alpha / lora_rank
lora_dropout = 0.0 # dropout on the adapters' input
lora_targets = 'attn.c_attn,attn.c_proj' # comma-separated, from model.LORA_TARGETS (also mlp.c_fc, mlp.c_proj)
quantize = '' # '' full precision; 'nf4': the frozen base's Block Linears in 4-bit NF4 (QLoRA: needs lora_rank > 0)
# adamw optimizer
learning_rate = 6e-4 # max learning rate
max_iters = 600000 # total number of training iterations
weight_decay = 1e-1 # AdamW decay of the 2-D weights (not biases or layernorms)
beta1 = 0.9 # AdamW beta1
beta2 = 0.95 # AdamW beta2
grad_clip = 1.0 # clip gradients at this value, or disable if == 0.0
# learning rate decay settings
decay_lr = True # whether to decay the learning rate
warmup_iters = 2000 # how many steps to warm up for
lr_decay_iters = 600000 # should be ~= max_iters per Chinchilla
min_lr = 6e-5 # minimum learning rate, should be ~= learning_rate/10 per Chinchilla
# DDP settings
backend = 'auto' # 'nccl', 'gloo', etc., or 'auto': nccl on cuda, gloo on cpu
fsdp = False # under torchrun: shard weights, gradients and optimizer state across the processes (FSDP2) instead of DDP's full copies
# system
device = 'cuda' # 'cpu', 'cuda', 'cuda:1', 'mps'; without a CUDA GPU, 'cuda' runs on the CPU (and says so)
dtype = 'auto' # 'float32', 'bfloat16', or 'float16' (uses a GradScaler); 'auto': bfloat16 (else float16) on cuda, bfloat16 on CPUs with native bf16, else float32
compile = True # use PyTorch 2.0 to compile the model to be faster
peak_flops = 0.0 # FLOP/s that MFU is measured against; 0: the device's own (runtime.py's table)
seed = 1337 # initial weights; batches and dropout are seeded from (seed, rank, iteration)
# -----------------------------------------------------------------------------
config_keys = [k for k,v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str))]
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read()) # overrides from command line or config file
config = {k: globals()[k] for k in config_keys} # will be useful for logging
runtime.errors_as_one_line()
lora = dict(rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout,
            targets=tuple(t.strip() for t in lora_targets.split(',') if t.strip())) if lora_rank else None
ddp = int(os.environ.get('RANK', -1)) != -1 # is this a ddp run?
ddp_world_size = int(os.environ['WORLD_SIZE']) if ddp else 1 # a stray WORLD_SIZE alone is no torchrun
# -----------------------------------------------------------------------------
# setting checks: what model.py, data_io.py and runtime.py check themselves is not repeated here
for name, least in dict(batch_size=1, block_size=1, gradient_accumulation_steps=1, eval_interval=1, log_interval=1,
                        eval_iters=1, max_iters=0, seed=0, grad_clip=0, peak_flops=0).items():
    runtime.require(globals()[name] >= least, f"{name} must be at least {least}, got {globals()[name]}")
runtime.require(gradient_accumulation_steps % ddp_world_size == 0,
                f"gradient_accumulation_steps={gradient_accumulation_steps} is not divisible by the {ddp_world_size} "
                f"processes: make it a multiple of --nproc_per_node x --nnodes")
runtime.require(not fsdp or ddp, "fsdp=True shards the model across the processes that torchrun starts: launch it with "
                                 "`torchrun --standalone --nproc_per_node=N train.py ... --fsdp=True` (N=1 works too)")
runtime.require(model_type == 'gpt' or not (init_from in GPT2_SIZES or os.path.isfile(os.path.join(init_from, 'config.json'))),
                f"init_from='{init_from}' is a GPT-2; model_type='{model_type}' trains from scratch only")
runtime.require(init_from in ('scratch', 'resume') or os.path.abspath(init_from) != os.path.abspath(out_dir),
                f"init_from='{init_from}' is this run's own out_dir: continue it with --init_from=resume, or "
                f"finetune its weights into another --out_dir")
runtime.require(quantize in ('', 'nf4'), f"quantize='{quantize}' can't train: use '' or 'nf4' (QLoRA); "
                f"int8 is for inference, in sample.py, chat.py and bench.py")
runtime.require(not quantize or lora_rank > 0 or eval_only or init_from == 'resume', # resume: the checkpoint's LoRA
                f"quantize='{quantize}' freezes the base model's weights in 4 bits, which can't be trained: "
                f"train LoRA adapters on it with --lora_rank=8 (QLoRA), or drop --quantize")
runtime.require(not gradient_checkpointing or model_type == 'gpt',
                f"gradient_checkpointing recomputes the Blocks of a GPT; model_type='{model_type}' has none: "
                f"set gradient_checkpointing=False")
# -----------------------------------------------------------------------------

# various inits, derived attributes, I/O setup
rt = runtime.setup(device, dtype, seed) # the same initial weights on every rank
device, device_type, ctx = rt.device, rt.device_type, rt.ctx
if ddp:
    ddp_rank = int(os.environ['RANK'])
    ddp_local_rank = int(os.environ['LOCAL_RANK'])
    if device_type == 'cuda':
        gpus = torch.cuda.device_count()
        runtime.require(ddp_local_rank < gpus, f"LOCAL_RANK={ddp_local_rank}, but this machine has {gpus} GPU(s): start "
                                               f"at most that many processes a node (torchrun --nproc_per_node={gpus})")
        device = f'cuda:{ddp_local_rank}'
        torch.cuda.set_device(device)
    if backend == 'auto':
        backend = 'nccl' if device_type == 'cuda' else 'gloo'
    runtime.join_process_group(backend)
    master_process = ddp_rank == 0 # this process will do logging, checkpointing etc.
    seed_offset = ddp_rank # each process draws its own batches and dropout masks
    # world_size number of processes will be training simultaneously, so we can scale
    # down the desired gradient accumulation iterations per process proportionally
    gradient_accumulation_steps //= ddp_world_size
else:
    # if not ddp, we are running on a single device, and one process
    master_process = True
    seed_offset = 0
if (master_process and device_type == 'cpu' and 'cuda' in config['device']
        and not {'dataset', 'init_from'} & set(_overridden)): # the defaults' data and model, not one's own
    print("note: the default settings are nanoGPT's GPT-2 124M recipe for 8 GPUs; on a CPU start with "
          "config/train_shakespeare_char_cpu.py (or config/train_python_char.py offline)")
config.update(dtype=rt.dtype, device=device, backend=backend) # record what 'auto' resolved to
if not eval_only: # find out now, not at the first checkpoint an hour into training
    runtime.on_rank0(lambda: runtime.ensure_writable(out_dir))
    if master_process and init_from != 'resume' and os.path.exists(runtime.checkpoint_path(out_dir)):
        print(f"note: {out_dir} holds a checkpoint, which this run (init_from='{init_from}') replaces at its first "
              f"save: to continue that one instead, stop now and pass --init_from=resume")

# model init; iter_num and best_val_loss are overridden if init_from='resume' (i.e. from a checkpoint)
iter_num = 0
best_val_loss = 1e9
checkpoint = None
data_dir = os.path.join('data', dataset)
if init_from == 'scratch':
    if master_process:
        print("Initializing a new model from scratch")
    meta_vocab_size = read_meta(data_dir).get('vocab_size')
    if meta_vocab_size is None and master_process:
        print("defaulting to vocab_size of GPT-2 to 50304 (50257 rounded up for efficiency)")
    model = build_model(GPTConfig(block_size=block_size, vocab_size=meta_vocab_size or 50304, n_layer=n_layer,
                                  n_head=n_head, n_embd=n_embd, dropout=dropout, bias=bias,
                                  model_type=model_type, activation=activation))
else:
    model, checkpoint = runtime.load_model(init_from, out_dir, 'cpu', dropout, sharded=fsdp)
    # the run can't honour settings that contradict the weights it starts from: stop before anything is written
    saved = asdict(model.config)
    changed = [f"{k}={globals()[k]!r} (the model's: {saved[k]!r})" for k in _overridden
               if k in ('n_layer', 'n_head', 'n_embd', 'bias', 'model_type', 'activation') and globals()[k] != saved[k]]
    runtime.require(not changed, f"init_from='{init_from}' fixes the architecture, but {', '.join(changed)}: "
                                 f"drop those settings, or train from scratch")
    if init_from == 'resume':
        iter_num = checkpoint['iter_num']
        best_val_loss = checkpoint['best_val_loss']
        runtime.require(block_size == saved['block_size'] or 'block_size' not in _overridden,
                        f"block_size={block_size} but the resumed run has {saved['block_size']}: drop --block_size")
        block_size = saved['block_size']
        if any(k.startswith('lora_') for k in _overridden) and lora != checkpoint.get('lora'):
            raise ValueError(f"the LoRA settings ({lora or 'none'}) differ from the resumed run's "
                             f"({checkpoint.get('lora') or 'none'}), and resuming can't change them: to finetune this "
                             f"run's weights with other LoRA settings, start a new run with --init_from={out_dir} "
                             f"--out_dir=<another folder>")
        lora = checkpoint.get('lora')
        runtime.require('quantize' not in _overridden or quantize == (checkpoint.get('quantize') or ''),
                        f"quantize='{quantize}' but the resumed run has quantize='{checkpoint.get('quantize') or ''}', "
                        f"and resuming can't change it: drop --quantize, or start a new run with --init_from={out_dir}")
        quantize = checkpoint.get('quantize') or ''
    else: # a new run on these weights: fresh optimizer, iteration count and LoRA settings
        model, checkpoint = merge_lora(dequantize(model)), None # its adapters, if any, folded into the weights
# crop down the model block size if desired, using model surgery
if block_size < model.config.block_size:
    model.crop_block_size(block_size)
runtime.require(block_size == model.config.block_size,
                f"block_size={block_size} is larger than the model's {model.config.block_size} ({init_from}): "
                f"set --block_size={model.config.block_size} or less")
# what a resume took from its checkpoint, recorded as this run's settings
config.update(block_size=block_size, quantize=quantize)
if lora:
    config.update(lora_rank=lora['rank'], lora_alpha=lora['alpha'], lora_dropout=lora['dropout'],
                  lora_targets=','.join(lora['targets']))
if master_process:
    print(f"tokens per iteration will be: {gradient_accumulation_steps * ddp_world_size * batch_size * block_size:,}")
meta = read_meta(data_dir)
if init_from != 'resume': # on resume, the checkpoint has grown already
    runtime.grow_vocab_for(model, meta)
model_entries = runtime.model_args_entries(model.config) # model_args, model_extra: what rebuilds it
if lora and init_from != 'resume': # on resume, the checkpoint rebuilt its adapters
    apply_lora(model, **lora)
if lora and 'bos_id' in meta: # the special tokens' embeddings must learn: with LoRA, the embedding trains too
    model.transformer.wte.weight.requires_grad_(True)
if quantize and init_from != 'resume': # after LoRA: the adapters' frozen bases become 4-bit (QLoRA)
    quantize_model(model, quantize)
model.gradient_checkpointing = gradient_checkpointing
if fsdp: # before the optimizer, which then holds the shards; the whole model never goes to the GPU
    runtime.shard_model(model, device_type, rt.ptdtype, ddp_world_size)
    if master_process:
        local, whole, gradient = runtime.model_state_bytes(model)
        print(f"model state per rank: {local / 2**20:.2f} MiB (DDP would hold {whole / 2**20:.2f} MiB)" +
              (f"; accumulating {gradient_accumulation_steps} micro-steps adds {gradient / 2**20:.2f} MiB of "
               f"unsharded gradients" if gradient_accumulation_steps > 1 else ""))
model.to(device)
# the dataset's tokenizer: a model of another vocabulary stops here, before its ids are read as other tokens
tokenizer = None
try:
    tokenizer = load_tokenizer(data_dir) if os.path.isdir(data_dir) else None
except OSError as e: # GPT-2's BPE files out of reach offline: training needs only the token files
    if master_process:
        print(f"note: val bpb is not measured, the dataset's tokenizer can't be loaded ({runtime.first_line(e)})")
if tokenizer is not None:
    tokenizer.check_model(model.config.vocab_size)
if hellaswag_interval: # tokenized once; a model that can't read GPT-2 tokens fails here, not at the first eval
    hellaswag.check_model(model, tokenizer)
    if not hellaswag_file: # downloaded once, by rank 0, the first time
        runtime.on_rank0(lambda: hellaswag.download_val(os.path.join('data', 'hellaswag')))
    hellaswag_items = hellaswag.tokenize_items(hellaswag.load_items(hellaswag_file or hellaswag.download_val(
        os.path.join('data', 'hellaswag'))), gpt2_encoding())

# poor man's data loader; the model's vocab_size is known now, so token ids that don't fit it are caught here
data = {split: open_tokens(data_dir, split, vocab_size=model.config.vocab_size, block_size=block_size)
        for split in ('train', 'val')}
# instruction data: a mask beside the tokens (1 on the assistant's replies, the only targets the loss counts),
# and rows that start at a conversation's boundary token
masks, starts = None, None
if 'bos_id' in meta:
    masks = {split: np.memmap(os.path.join(data_dir, f"{split}_mask.bin"), dtype=np.uint8, mode='r') for split in data}
    starts = {}
    for split, tokens in data.items():
        every = conversation_starts(tokens, meta['bos_id'], block_size)
        runtime.require(len(masks[split]) == len(tokens) and len(every),
                        f"{data_dir}/{split}_mask.bin does not match {split}.bin, or no conversation fits "
                        f"block_size={block_size}: rerun the dataset's prepare.py")
        starts[split] = rows_with_a_reply(every, masks[split], block_size)
        runtime.require(len(starts[split]), f"no conversation of {split} has a reply within block_size={block_size}: "
                                            f"raise --block_size")
        if len(starts[split]) < len(every) and master_process:
            print(f"note: {len(every) - len(starts[split])} of the {len(every)} conversations of {split} have no reply "
                  f"within block_size={block_size}: their rows are left out")


def get_batch(split, ix):
    """ The windows of `split` starting at offsets ix: inputs x and next-token targets y, on the device. """
    # We recreate np.memmap every batch to avoid a memory leak, as per
    # https://stackoverflow.com/questions/45132940/numpy-memmap-memory-usage-want-to-iterate-once/61472122#61472122
    tokens = np.memmap(data[split].filename, dtype=data[split].dtype, mode='r')
    x = torch.stack([torch.from_numpy((tokens[i:i+block_size]).astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy((tokens[i+1:i+1+block_size]).astype(np.int64)) for i in ix])
    if masks is not None:
        mask = np.memmap(masks[split].filename, dtype=np.uint8, mode='r')
        y = masked_targets(y, torch.stack([torch.from_numpy(mask[i+1:i+1+block_size].astype(np.int64)) for i in ix]))
    if device_type == 'cuda':
        # pin arrays x,y, which allows us to move them to GPU asynchronously (non_blocking=True)
        x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    else:
        x, y = x.to(device), y.to(device)
    return x, y


def rng_for(stream, step):
    """ The random numbers of draw `step` of `stream` (0: batches, 1: dropout) on this rank depend on these
    numbers alone, not on what ran before: a resumed run draws exactly what an uninterrupted one drew. """
    return np.random.default_rng([seed, seed_offset, stream, step])


def train_batch(step):
    """ Micro-batch number `step` of this rank: random windows of train.bin (instruction data: from conversation starts). """
    if starts is not None:
        return get_batch('train', starts['train'][rng_for(0, step).integers(len(starts['train']), size=batch_size)])
    return get_batch('train', rng_for(0, step).integers(len(data['train']) - block_size, size=batch_size))


# evaluation reads the same evenly spread windows each time: its numbers compare across evals and runs
eval_windows = {split: np.linspace(0, len(tokens) - block_size - 1, eval_iters * batch_size).astype(np.int64)
                .reshape(eval_iters, batch_size) for split, tokens in data.items()}
if starts is not None:
    eval_windows = {split: s[np.linspace(0, len(s) - 1, eval_iters * batch_size).astype(np.int64)]
                    .reshape(eval_iters, batch_size) for split, s in starts.items()}

# bits per byte: the val loss in bits per byte of the text its targets stand for compares across tokenizers;
# the eval windows are fixed, so their bytes are counted once. Special tokens stand for no bytes.
val_tokens_per_byte = None
if tokenizer is not None and masks is None: # instruction data: the loss is over the replies only, not the bytes of every window
    token_bytes = tokenizer.token_bytes(model.config.vocab_size)
    val_bytes = sum(int(token_bytes[data['val'][i:i+block_size]].sum()) for i in eval_windows['val'].ravel() + 1)
    val_tokens_per_byte = eval_windows['val'].size * block_size / val_bytes if val_bytes else None

# initialize a GradScaler. If enabled=False scaler is a no-op
scaler = runtime.grad_scaler(rt, sharded=fsdp)

# optimizer: configure_optimizers takes the trainable parameters only (with LoRA, the adapters)
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type, verbose=master_process)
if checkpoint is not None:
    hyper = [{k: group[k] for k in ('weight_decay', 'betas')} for group in optimizer.param_groups]
    if fsdp: # each rank takes its shards of the optimizer state (and, from a ckpt.dcp, of the weights)
        runtime.load_sharded_state(model, optimizer, checkpoint)
    else:
        optimizer.load_state_dict(checkpoint['optimizer'])
    for group, h in zip(optimizer.param_groups, hyper): # the moments resume; weight decay and betas are this run's
        group.update(h)
    if checkpoint.get('scaler'): # float16 runs: the loss scale it had found
        scaler.load_state_dict(checkpoint['scaler'])
checkpoint = None # free up memory

# compile the model
raw_model = model # the plain module: its state_dict has no '_orig_mod.'/'module.' prefixes
X, Y = train_batch(iter_num * gradient_accumulation_steps) # fetch the very first batch
if compile:
    if master_process:
        print("compiling the model... (takes a ~minute)")
    try:
        model = torch.compile(raw_model)
        # compilation happens on the first calls: make them now (an evaluation, and a training forward-backward),
        # so that a compiler that fails falls back to eager here instead of crashing the run
        raw_model.eval()
        with torch.no_grad(), ctx:
            model(X, Y)
        raw_model.train()
        if not eval_only:
            with ctx:
                _, loss = model(X, Y)
            loss.backward()
    except Exception as e:
        model = raw_model.train()
        if master_process:
            print(f"warning: torch.compile failed, running without it ({type(e).__name__}: {runtime.first_line(e)})")
    raw_model.zero_grad(set_to_none=True)

# wrap model into DDP container; evaluation runs on the unwrapped model, on every rank (with FSDP each forward
# gathers the weights from all of them)
train_model = DDP(model, device_ids=[ddp_local_rank] if device_type == 'cuda' else None) if ddp and not fsdp else model


# helps estimate an arbitrarily accurate loss over either split using many batches
@torch.no_grad()
def estimate_loss():
    out = {}
    model.eval()
    for split in ['train', 'val']:
        losses = torch.zeros(eval_iters)
        for k, ix in enumerate(eval_windows[split]):
            X, Y = get_batch(split, ix)
            with ctx:
                logits, loss = model(X, Y)
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    model.train()
    if ddp: # every rank evaluated the same windows; rank 0's numbers decide for all whether to save or stop
        out = [out]
        dist.broadcast_object_list(out, src=0)
        out = out[0]
    return out


# learning rate decay scheduler (cosine with warmup)
def get_lr(it):
    # 1) linear warmup for warmup_iters steps, starting above 0: a step at lr 0 would be wasted
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    # 2) if it >= lr_decay_iters, return min learning rate
    if it >= lr_decay_iters:
        return min_lr
    # 3) in between, use cosine decay down to min learning rate
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio)) # coeff ranges 0..1
    return min_lr + coeff * (learning_rate - min_lr)


def check_finite(what, value):
    if not math.isfinite(value):
        kept = (f"The last good checkpoint in {out_dir} is untouched" if os.path.exists(runtime.checkpoint_path(out_dir))
                else f"No checkpoint was written to {out_dir}")
        raise ValueError(f"{what} is {value} at iter {iter_num}: training diverged; lower learning_rate (or use "
                         f"bfloat16/float32 instead of float16). {kept}")


# logging
def start_wandb():
    try:
        import wandb
    except ImportError:
        raise OSError("wandb_log=True needs wandb, which is not installed: pip install wandb") from None
    try:
        wandb.init(project=wandb_project, name=wandb_run_name, config=config)
    except Exception as e: # wandb's own errors: not logged in, no network
        raise OSError(f"wandb could not start ({runtime.first_line(e)}): run `wandb login`, or set "
                      f"WANDB_MODE=offline") from None
    return wandb
wandb = runtime.on_rank0(start_wandb) if wandb_log else None

# training loop
t0 = time.time()
local_iter_num = 0 # number of iterations in the lifetime of this process
running_mfu = None # until measured
peak = runtime.peak_flops(device, peak_flops, rt.dtype)
saved_at = None # the iteration of the last checkpoint this run wrote
while True:

    # determine and set the learning rate for this iteration
    lr = get_lr(iter_num) if decay_lr else learning_rate
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr

    # evaluate the loss on train/val sets and write checkpoints
    if iter_num % eval_interval == 0 or iter_num == max_iters or eval_only:
        losses = estimate_loss()
        if master_process:
            val_bpb = losses['val'] * val_tokens_per_byte / math.log(2) if val_tokens_per_byte else None
            bpb = '-' if val_bpb is None else f"{val_bpb:.4f}"
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, val bpb {bpb}")
        for split, loss in losses.items():
            check_finite(f"the {split} loss", loss)
        if wandb_log and master_process:
            wandb.log({
                "iter": iter_num,
                "train/loss": losses['train'],
                "val/loss": losses['val'],
                **({"val/bpb": val_bpb} if val_bpb is not None else {}),
                "lr": lr,
                **({"mfu": running_mfu*100} if running_mfu is not None else {}), # convert to percentage
            })
        if losses['val'] < best_val_loss or always_save_checkpoint:
            best_val_loss = min(best_val_loss, losses['val'])
            if iter_num > 0 and not eval_only:
                checkpoint = { # 'model' and 'optimizer' added below: FSDP saves sharded state dicts of its own
                    **model_entries,
                    'iter_num': iter_num,
                    'best_val_loss': best_val_loss,
                    'config': config,
                    'lora': lora,
                    'quantize': quantize or None, # the base is saved quantized: model_from_checkpoint re-quantizes first
                    'scaler': scaler.state_dict(),
                }
                if master_process:
                    print(f"saving checkpoint to {out_dir}")
                if fsdp: # every rank writes its shards
                    runtime.save_sharded_checkpoint(checkpoint, raw_model, optimizer, out_dir)
                else: # rank 0 writes it; a failed write stops every rank
                    runtime.on_rank0(lambda: runtime.save_checkpoint(
                        dict(checkpoint, model=raw_model.state_dict(), optimizer=optimizer.state_dict()), out_dir))
                checkpoint, saved_at = None, iter_num
        t0 = time.time() # the evaluation is not part of the iteration's time
    if hellaswag_interval and (iter_num % hellaswag_interval == 0 or iter_num == max_iters or eval_only):
        # every rank scores its share of the items; the counts add up across ranks
        counts = torch.tensor(hellaswag.score_items(raw_model, hellaswag_items, ctx, device, ddp_rank if ddp else 0,
                                                    ddp_world_size, progress=master_process), device=device)
        if ddp:
            dist.all_reduce(counts)
        n_correct, n_correct_norm, n = counts.tolist()
        if master_process:
            print(f"hellaswag: {n} items, acc {n_correct / n:.4f}, acc_norm {n_correct_norm / n:.4f}")
            if wandb_log:
                wandb.log({"iter": iter_num, "hellaswag/acc": n_correct / n, "hellaswag/acc_norm": n_correct_norm / n})
        t0 = time.time()
    if eval_only or iter_num >= max_iters:
        break

    # forward backward update, with optional gradient accumulation to simulate larger batch size
    # and using the GradScaler if data type is float16
    torch.manual_seed(int(rng_for(1, iter_num).integers(2**63))) # this iteration's dropout masks
    train_loss = 0.0
    for micro_step in range(gradient_accumulation_steps):
        if fsdp: # each rank sums its own gradients until the last micro step, which reduce-scatters the sums
            raw_model.set_requires_gradient_sync(micro_step == gradient_accumulation_steps - 1)
        elif ddp:
            # in DDP training we only need to sync gradients at the last micro step.
            # the official way to do this is with model.no_sync() context manager, but
            # I really dislike that this bloats the code and forces us to repeat code
            # looking at the source of that context manager, it just toggles this variable
            train_model.require_backward_grad_sync = (micro_step == gradient_accumulation_steps - 1)
        with ctx:
            logits, loss = train_model(X, Y)
            loss = loss / gradient_accumulation_steps # scale the loss to account for gradient accumulation
        # immediately async prefetch next batch while model is doing the forward pass on the GPU
        X, Y = train_batch(iter_num * gradient_accumulation_steps + micro_step + 1)
        # backward pass, with gradient scaling if training in fp16
        scaler.scale(loss).backward()
        train_loss += loss.detach()
    # clip the gradient
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
    # step the optimizer and scaler if training in fp16
    scaler.step(optimizer)
    scaler.update()
    # flush the gradients as soon as we can, no need for this memory anymore
    optimizer.zero_grad(set_to_none=True)

    # timing and logging
    t1 = time.time()
    dt = t1 - t0
    t0 = t1
    if iter_num % log_interval == 0:
        # the mean loss over this iteration's micro-batches (rank 0's). note: this is a CPU-GPU sync point
        lossf = train_loss.item()
        if ddp: # a loss that is not finite on any rank stops every rank (NaN and inf survive the sum)
            dist.all_reduce(train_loss)
        check_finite("the loss", train_loss.item())
        if master_process:
            if local_iter_num >= 5 and peak: # let the training loop settle a bit
                mfu = raw_model.estimate_mfu(batch_size * gradient_accumulation_steps, dt, peak)
                running_mfu = mfu if running_mfu is None else 0.9*running_mfu + 0.1*mfu
            print(f"iter {iter_num}: loss {lossf:.4f}, time {dt*1000:.2f}ms, mfu {runtime.format_mfu(running_mfu)}")
    iter_num += 1
    local_iter_num += 1

if master_process and saved_at is None:
    why = ("eval_only=True evaluates, and trains nothing" if eval_only else
           f"no iteration ran (max_iters={max_iters}, the run started at iter {iter_num})" if local_iter_num == 0 else
           f"the val loss never went below {best_val_loss:.4f}, and always_save_checkpoint=False")
    print(f"no checkpoint was written to {out_dir}: {why}")
if ddp:
    runtime.leave_process_group()
