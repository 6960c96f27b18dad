"""
A much shorter version of train.py for benchmarking.
mode='train': the training step alone, burn-in then timed: ms/iter, tokens/s and MFU (or a torch.profiler trace).
mode='compile': the same training step eager and compiled, timed in alternating blocks: both ms/iter and their ratio.
mode='generate': generation tokens/s of a random-weight model with and without the KV cache, and their ratio; the
  decode step's ms/token against the weight-streaming floor (on a CPU with the weights packed, as sample.py runs them); with --quantize=int8 (or nf4) also the quantized model, and the ratio.
mode='memory': peak memory and time of one finetuning step (gpt2-xl shape, random weights, batch 1 x 256 unless set)
for full finetuning, LoRA and QLoRA (LoRA on a 4-bit NF4 base), with and without gradient checkpointing: each in a
fresh process, peak RSS on the CPU (max_memory_allocated on CUDA); rows that can't fit are skipped, estimated first.
$ python bench.py --real_data=False --compile=False --device=cpu --n_layer=4 --n_head=4 --n_embd=128 --block_size=128
$ python bench.py --mode=compile --real_data=False --device=cpu --n_layer=3 --n_head=4 --n_embd=128 --block_size=128 --batch_size=8 --vocab_size=65
$ python bench.py --mode=generate --device=cpu --n_layer=6 --n_head=6 --n_embd=384 --block_size=256 --vocab_size=65
$ python bench.py --mode=generate --device=cpu --dtype=float32 --quantize=int8 --compile=True
$ python bench.py --mode=memory --device=cpu
"""
import copy
import os
import re
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import torch

import runtime
from data_io import open_tokens, read_meta
from model import GPT, GPT2_SIZES, LORA_TARGETS, GPTConfig, apply_lora
from quantize import PackedLinear, check_quantize, quantize as quantize_model

# -----------------------------------------------------------------------------
mode = 'train' # 'train' (the training step), 'compile' (eager vs compiled step), 'generate' (with vs without the KV cache) or 'memory' (finetuning peak memory)
batch_size = 12 # train mode: sequences per iteration
block_size = 1024
n_layer = 12 # model size, GPT-2 124M by default
n_head = 12
n_embd = 768
bias = False
activation = 'gelu' # 'gelu' (tanh approximation), 'gelu_exact' or 'relu', as in train.py
dropout = 0.0 # 0 for determinism
vocab_size = 50304 # random data and generate mode; real data takes its meta.pkl's when it has one
real_data = True # batches from data/<dataset>/train.bin; False: one fixed random batch, no data loading
dataset = 'openwebtext'
seed = 1337
device = 'cuda' # 'cpu', 'cuda', 'cuda:1', 'mps'; without a CUDA GPU, 'cuda' runs on the CPU
dtype = 'auto' # 'float32', 'bfloat16' or 'float16' autocast; 'auto': bf16 (else fp16) on cuda, bf16 on CPUs with native bf16, else fp32
compile = torch.cuda.is_available() # use PyTorch 2.0 to compile the model to be faster
profile = False # train mode: a torch.profiler trace instead of the timing
profile_dir = 'prof_bench' # the trace goes here; open it with TensorBoard or https://ui.perfetto.dev
burnin_iters = 10 # untimed iterations first: compilation, allocator and caches warm up
timed_iters = 20 # iterations that are timed
peak_flops = 0.0 # FLOP/s that MFU is measured against; 0 = the device's own (runtime.py's table)
prompt_len = 100 # generate mode: tokens in the (random) prompt
gen_tokens = 200 # generate mode: new tokens generated
quantize = '' # generate mode: '' (none), 'int8' or 'nf4': also run the model with quantized weights (quantize.py) and print the speed ratio
lora_rank = 8 # memory mode: rank of the LoRA/QLoRA adapters (on all of model.LORA_TARGETS)
memory_row = '' # memory mode: '' measures every row, each in a fresh process that runs with this set to its name
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read()) # overrides from command line or config file
# -----------------------------------------------------------------------------

runtime.errors_as_one_line()
runtime.require(mode in ('train', 'compile', 'generate', 'memory'),
                f"unknown mode '{mode}': use 'train', 'compile', 'generate' or 'memory'")
runtime.require(not quantize or mode == 'generate', f"quantize='{quantize}' is for mode='generate' (inference); "
                f"mode='memory' measures QLoRA training itself")
if mode == 'memory': # finetuning gpt2-xl (1.56B), one sequence of 256 tokens, unless set otherwise
    for k, v in dict(GPT2_SIZES['gpt2-xl'], bias=True, batch_size=1, block_size=256, real_data=False).items():
        if k not in _overridden:
            globals()[k] = v
runtime.require(min(batch_size, block_size, burnin_iters + 1, timed_iters, prompt_len, gen_tokens) > 0,
                "batch_size, block_size, timed_iters, prompt_len and gen_tokens must be > 0, burnin_iters >= 0")
runtime.require(mode != 'generate' or (prompt_len < block_size and gen_tokens > 1),
                f"generate mode times decode steps after the prompt: prompt_len={prompt_len} must be < block_size={block_size} and gen_tokens > 1")
runtime.require(not profile or mode == 'train', f"profile=True traces the training step of mode='train', "
                f"not mode='{mode}': drop --profile, or --mode")
runtime.require(vocab_size > 0, f"vocab_size must be > 0, got {vocab_size}")
runtime.require(peak_flops >= 0, f"peak_flops must be >= 0 (0: the device's own), got {peak_flops}")
if profile: # find out now, not after the timing
    runtime.ensure_writable(profile_dir, 'profile_dir')
check_quantize(quantize)
rt = runtime.setup(device, dtype, seed)
device, device_type, dtype, ctx = rt.device, rt.device_type, rt.dtype, rt.ctx
sync = torch.cuda.synchronize if device_type == 'cuda' else lambda: None # timings must wait for the GPU


def make_model(vocab_size):
    gptconf = GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                        n_embd=n_embd, dropout=dropout, bias=bias, activation=activation)
    return GPT(gptconf).to(device)


class WeightStreams(torch.nn.Module):
    """ Every weight matrix of a model (nn.Linear and its quantized swaps, shared, not copied) times one vector,
    in model order and in the dtype or quantization its decoding uses: the weights one decode step streams from
    memory, and nothing else. Compiled where the model is, so that its matmuls are the decode's kernels. """

    def __init__(self, model):
        super().__init__()
        self.layers = torch.nn.ModuleList(m for m in model.modules() if hasattr(m, 'in_features'))
        self.nbytes = sum(t.nbytes for m in self.layers for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)])
        self.dtypes = [torch.float32] * len(self.layers) # of each matrix's input: see record_input_dtypes

    def record_input_dtypes(self, decode):
        """ The dtype each matrix's input has while decode() runs, for the floor to feed it the same: under autocast
        some are bf16 and some fp32, and a kernel may take another path for each (nf4's does). """
        seen = {}
        hooks = [m.register_forward_pre_hook(lambda m, args: seen.setdefault(m, args[0].dtype) and None) for m in self.layers]
        try:
            decode()
        finally:
            for hook in hooks:
                hook.remove()
        self.dtypes = [seen[m] for m in self.layers]

    def forward(self, xs):
        return [m(x) for m, x in zip(self.layers, xs)]


def weight_streaming_floor(streams):
    """ ms of one pass of streams (WeightStreams): the time to stream all the weights from memory, that no decode
    step (which reads each weight once) can beat. One matrix timed alone in a loop would stay in the CPU's cache
    and give a lower figure than any decode can reach. """
    xs = [torch.randn(1, m.in_features, device=device, dtype=dt) for m, dt in zip(streams.layers, streams.dtypes)]
    passes = []
    with torch.no_grad(), ctx:
        while len(passes) < 5 or (sum(passes) < 1.0 and len(passes) < 200): # a second at least
            sync()
            t0 = time.time()
            streams(xs)
            sync()
            passes.append(time.time() - t0)
    passes = sorted(passes[2:]) # the first passes warm up; the median, as the VM's hiccups only ever add time
    return passes[len(passes) // 2] * 1000


if mode == 'generate':
    # same random weights and prompt for both paths; greedy (top_k=1) so their tokens must agree
    # (exactly in float32; in bf16/fp16, and int8 which computes in bf16, a near tie between two logits
    # can make them part ways: random weights, whose logits lie close together, make such ties common)
    model = make_model(vocab_size).eval()
    x = torch.randint(vocab_size, (1, prompt_len), device=device)
    print(f"generating {gen_tokens} tokens after a {prompt_len}-token prompt, {model.get_num_params()/1e6:.2f}M parameters, "
          f"block_size {block_size}, vocab_size {vocab_size}, {device} {dtype}")
    models = {dtype: model}
    if quantize:
        models[quantize] = quantize_model(copy.deepcopy(model), quantize)
    prefills, streams = {}, {}
    if compile: # dynamo keeps the graphs of GPT.forward per function, not per model: room for each model's
        torch._dynamo.config.recompile_limit *= len(models)
    for name, model in models.items():
        if quantize:
            print(f"{name}:")
        if not compile: # as sample.py runs it: on a CPU, the plain weights in oneDNN's layout (quantize.PackedLinear)
            runtime.pack_for_cpu(model, rt)
            packed = sum(isinstance(m, PackedLinear) for m in model.modules())
            if packed:
                print(f"{packed} Linear layers packed for oneDNN")
        streams[name] = WeightStreams(model)
        with ctx:
            streams[name].record_input_dtypes(lambda: model.generate(x, 2, top_k=1))
        if compile: # as sample.py does it, in place, so that generate's calls to self() run compiled; the floor alike
            runtime.compile_for_inference(model)
            runtime.compile_for_inference(streams[name])
            weight_streaming_floor(streams[name]) # compiles it, untimed
        results = {}
        with ctx:
            # the untimed warm-up meets every input length the timed run will, for none to be met there the first
            # time: oneDNN sets a kernel up for each new length (the packed weights), compiling makes a graph. Without
            # the cache each step feeds the whole context, prompt_len, prompt_len + 1, ... up to block_size, where the
            # window slides; with it the prompt, then one token a step until the window slides past block_size, and
            # from there block_size tokens each step. The first block_size - prompt_len + 2 tokens meet them all
            # (compiled: all gen_tokens, as the inputs are views of generate's output buffer, whose stride dynamo checks)
            warm_up_tokens = gen_tokens if compile else min(gen_tokens, block_size - prompt_len + 2)
            for use_kv_cache in (True, False):
                model.generate(x, warm_up_tokens, top_k=1, use_kv_cache=use_kv_cache)
                sync()
                t0 = time.time()
                times = [] # when each token is there
                y = model.generate(x, gen_tokens, top_k=1, use_kv_cache=use_kv_cache,
                                   callback=lambda _: (sync(), times.append(time.time())))
                sync()
                dt = time.time() - t0
                results[use_kv_cache] = (y, gen_tokens / dt, times[0] - t0)
                print(f"{'with' if use_kv_cache else 'without'} KV cache: {gen_tokens / dt:.1f} tokens/s ({dt*1000/gen_tokens:.2f}ms/token)")
        (y_kv, tps_kv, prefills[name]), (y_full, tps_full, _) = results[True], results[False]
        diff = (y_kv != y_full).nonzero()
        same = "identical" if len(diff) == 0 else f"DIFFERENT, first at new token {diff[0, 1].item() - prompt_len}"
        print(f"greedy tokens with and without the cache: {same}")
        print(f"KV cache speedup: {tps_kv / tps_full:.2f}x")
    # decode steps feed one token to the cache; once the window slides past block_size each step is a prefill
    steps = min(gen_tokens - 1, block_size - prompt_len)
    # the floor and the decode steps in alternating rounds, every model's in each, so that the machine's drift
    # falls on all alike, not on one model's rounds; medians (of passes, of steps, of rounds), as the VM's
    # hiccups only ever add time
    rounds = 5
    if quantize:
        print(f"floor and decode, {rounds} rounds alternating {' and '.join(models)}:")
    floors, decodes = {name: [] for name in models}, {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            floor_ms = weight_streaming_floor(streams[name])
            at = [] # when each token is there: the first after the prefill, then one per decode step
            with ctx:
                model.generate(x, steps + 1, top_k=1, callback=lambda _: (sync(), at.append(time.time())))
            floors[name].append(floor_ms)
            decodes[name].append(np.median(np.diff(at)) * 1000)
    decode_ms = {}
    for name, model in models.items():
        if quantize:
            print(f"{name}:")
        floor_ms, decode_ms[name], weight_bytes = float(np.median(floors[name])), float(np.median(decodes[name])), streams[name].nbytes
        print(f"prefill: {prompt_len} tokens in {prefills[name]*1000:.1f}ms")
        inputs = ', '.join(f"{n} {str(dt).removeprefix('torch.')}" for dt, n in Counter(streams[name].dtypes).items())
        print(f"weight-streaming floor: {floor_ms:.2f}ms per token ({weight_bytes/1e6:.2f} MB of weights, {weight_bytes/floor_ms/1e6:.1f} GB/s; "
              f"inputs as the decode's: {inputs})")
        # what attention reads on top of the weights, not in the floor: the keys and values of the positions so far
        with ctx:  # in autocast's dtype, as generate's: outside it a bf16 or fp16 cache would count as fp32
            cache = model.new_kv_cache(1)
        kv_bytes = 2 * sum(k[:, :, 0].nbytes for k in cache.k) * (prompt_len + (steps + 1) / 2) # per position, times the average length
        print(f"KV cache read per decode step: {kv_bytes/1e6:.2f} MB on average, {kv_bytes/weight_bytes*100:.1f}% of the weights' bytes")
        # a decode step must read both from memory: at the floor's GB/s no decode beats this share of the floor
        must_read_ms = floor_ms * (1 + kv_bytes / weight_bytes)
        print(f"weights + KV cache at the floor's speed: {must_read_ms:.2f}ms per token, "
              f"{floor_ms/must_read_ms*100:.0f}% of the weight-streaming floor at best")
        print(f"decode: {decode_ms[name]:.2f} ms/token, {floor_ms/decode_ms[name]*100:.0f}% of the weight-streaming floor "
              f"({floor_ms:.2f} ms)")
    if quantize:
        base = 'fp32' if dtype == 'float32' else dtype
        print(f"{quantize}/{base} decode speed: {decode_ms[dtype] / decode_ms[quantize]:.2f}x")
    sys.exit(0)

# data loading init
if real_data:
    data_dir = os.path.join('data', dataset)
    meta = read_meta(data_dir)
    vocab_size = meta.get('vocab_size', vocab_size)
    train_data = open_tokens(data_dir, 'train', meta, vocab_size, block_size) # note ignore split in benchmarking script
    def get_batch():
        ix = torch.randint(len(train_data) - block_size, (batch_size,))
        x = torch.stack([torch.from_numpy((train_data[i:i+block_size]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((train_data[i+1:i+1+block_size]).astype(np.int64)) for i in ix])
        if device_type == 'cuda':
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.to(device), y.to(device)
else:
    # alternatively, if fixed data is desired to not care about data loading
    x = torch.randint(vocab_size, (batch_size, block_size), device=device)
    y = torch.randint(vocab_size, (batch_size, block_size), device=device)
    get_batch = lambda: (x, y)


def make_train_step(model):
    """ A step function for model (plain or compiled) with an optimizer of its own. """
    raw = getattr(model, '_orig_mod', model)
    optimizer = raw.configure_optimizers(weight_decay=1e-2, learning_rate=1e-4, betas=(0.9, 0.95), device_type=device_type,
                                         verbose=False)
    scaler = runtime.grad_scaler(rt)

    def train_step(X, Y):
        """ One optimizer step on (X, Y); returns the next batch (fetched while the GPU works) and the loss. """
        with ctx:
            logits, loss = model(X, Y)
        X, Y = get_batch()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return X, Y, loss.item() # .item() waits for the step to finish
    return train_step


MEMORY_ROWS = {'full': (False, '', False), 'lora': (True, '', False), 'lora+gc': (True, '', True), # lora, quantize,
               'qlora': (True, 'nf4', False), 'qlora+gc': (True, 'nf4', True)}              # grad checkpointing


def meta_model(row):
    """ The model of a memory row on the meta device: shapes only, no memory (LoRA applied, not quantized). """
    with torch.device('meta'):
        model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                              n_embd=n_embd, dropout=dropout, bias=bias, activation=activation))
        return apply_lora(model, lora_rank, 2.0 * lora_rank, targets=LORA_TARGETS) if MEMORY_ROWS[row][0] else model


def memory_model(row):
    """ The random-weight model of a memory row, built without ever holding two copies: on the meta device first,
    then materialised and filled (uniform is fast; the values don't change memory or time). """
    use_lora, quant, checkpointing = MEMORY_ROWS[row]
    # quantized as train.py does it: in fp32 on the CPU, so only the 4-bit codes ever reach a GPU
    model = meta_model(row).to_empty(device='cpu' if quant else device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.uniform_(-0.03, 0.03) if p.dim() == 2 else p.fill_(1.0 if '.ln_' in name and name.endswith('weight') else 0.0)
    if quant:
        quantize_model(model, quant).to(device)
    model.gradient_checkpointing = checkpointing
    return model


def memory_needed(row):
    """ Bytes a memory row needs, estimated before trying: weights (4 bytes, NF4's 0.5625 for quantized Linears),
    gradient and two AdamW moments per trainable weight, activations, and 1 GiB of interpreter and libraries. """
    use_lora, quant, checkpointing = MEMORY_ROWS[row]
    L, C, B, T, V = n_layer, n_embd, batch_size, block_size, vocab_size
    linear = L * 12 * C * C
    total = V * C + block_size * C + linear + L * 13 * C
    adapters = L * lora_rank * (4 * C + 2 * C + 5 * C + 5 * C) if use_lora else 0
    weights = 4 * (total - linear) + (linear * (0.5 + 4 / 64) if quant else 4 * linear) + 4 * adapters
    trainable = adapters if use_lora else total
    activations = 4 * B * T * (C * L * (1 if checkpointing else 24) + 24 * C + 3 * V)
    return weights + 12 * trainable + activations + 2**30


def memory_available():
    if device_type == 'cuda':
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def peak_bytes():
    if device_type == 'cuda':
        return torch.cuda.max_memory_allocated(device)
    with open('/proc/self/status') as f: # VmHWM: the peak resident set size since the last reset
        return 1024 * int(re.search(r'VmHWM:\s+(\d+) kB', f.read())[1])


def reset_peak():
    if device_type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with open('/proc/self/clear_refs', 'w') as f: # '5' resets VmHWM to the current RSS (Linux)
            f.write('5')


if mode == 'memory' and memory_row: # one row, in this fresh process
    runtime.require(memory_row in MEMORY_ROWS, f"unknown memory_row '{memory_row}': use one of {', '.join(MEMORY_ROWS)}")
    model = memory_model(memory_row)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    train_step = make_train_step(model)
    reset_peak() # the step's peak: building the model (fp32 before quantizing) is not part of finetuning
    X, Y = get_batch()
    X, Y, _ = train_step(X, Y) # the first step also allocates the optimizer state
    sync()
    t0 = time.time()
    train_step(X, Y)
    sync()
    print(f"memory row {memory_row}: peak {peak_bytes() / 2**30:.2f} GiB, {(time.time() - t0) * 1000:.0f} ms/step, "
          f"{trainable:,} trainable parameters")
    sys.exit(0)
if mode == 'memory':
    print(f"peak memory of one finetuning step: n_layer={n_layer}, n_head={n_head}, n_embd={n_embd}, batch {batch_size} "
          f"x {block_size} tokens, LoRA rank {lora_rank} on {', '.join(LORA_TARGETS)}, {device} {dtype}, "
          f"{'max_memory_allocated' if device_type == 'cuda' else 'peak RSS'}, one fresh process per row")
    print(f"{'row':<10} {'peak GiB':>9} {'ms/step':>9} {'trainable params':>17}")
    peaks = {}
    for row in MEMORY_ROWS:
        need, have = memory_needed(row), memory_available()
        if need > have:
            trainable = sum(p.numel() for p in meta_model(row).parameters() if p.requires_grad)
            print(f"{row:<10} skipped: needs about {need / 2**30:.1f} GiB, this machine has {have / 2**30:.1f} GiB "
                  f"({trainable:,} trainable parameters)")
            continue
        p = subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:], f'--memory_row={row}'],
                           capture_output=True, text=True)
        m = re.search(r'memory row \S+: peak (\S+) GiB, (\d+) ms/step, (\S+) trainable', p.stdout)
        if p.returncode != 0 or not m:
            print(f"{row:<10} failed: {((p.stderr.strip() or p.stdout.strip()).splitlines() or ['no output'])[-1]}")
            continue
        peaks[row] = float(m[1])
        print(f"{row:<10} {m[1]:>9} {m[2]:>9} {m[3]:>17}")
    for lora_row, qlora_row in (('lora', 'qlora'), ('lora+gc', 'qlora+gc')):
        if lora_row in peaks and qlora_row in peaks:
            suffix = '' if lora_row == 'lora' else ' (both with gradient checkpointing)'
            print(f"qlora/lora peak memory: {peaks[qlora_row] / peaks[lora_row]:.2f}{suffix}")
    sys.exit(0)

# model init
raw_model = make_model(vocab_size)
peak = runtime.peak_flops(device, peak_flops, rt.dtype)
tokens_per_iter = batch_size * block_size
print(f"{raw_model.get_num_params()/1e6:.2f}M parameters, {tokens_per_iter:,} tokens per iteration, {dtype}, "
      f"MFU against {f'{peak/1e12:.2f} TFLOP/s' if peak else 'an unknown peak (pass --peak_flops)'} "
      f"({torch.cuda.get_device_name(device) if device_type == 'cuda' else device})")
mfu = lambda n_seqs, dt: runtime.format_mfu(raw_model.estimate_mfu(n_seqs, dt, peak))

if mode == 'compile':
    # two copies with the same weights; timing them in alternating blocks of 5 iterations puts the
    # machine's drift in speed on both alike
    steps = {'eager': make_train_step(copy.deepcopy(raw_model)), 'compiled': make_train_step(torch.compile(raw_model))}
    X, Y = get_batch()
    for name, train_step in steps.items():
        t0 = time.time()
        _, _, lossf = train_step(X, Y) # the same first batch for both: their losses must agree
        for _ in range(burnin_iters):
            train_step(*get_batch())
        print(f"{name}: first loss {lossf:.4f}, burn-in {time.time() - t0:.1f}s")
    totals = dict.fromkeys(steps, 0.0)
    for done in range(0, timed_iters, 5):
        for name, train_step in steps.items():
            X, Y = get_batch()
            t0 = time.time()
            for _ in range(min(5, timed_iters - done)):
                X, Y, _ = train_step(X, Y)
            totals[name] += time.time() - t0
    for name, dt in totals.items():
        print(f"{name}: {dt/timed_iters*1000:.2f}ms/iter, {tokens_per_iter*timed_iters/dt:,.0f} tokens/s, "
              f"MFU: {mfu(batch_size * timed_iters, dt)}")
    print(f"compile speedup: {totals['eager'] / totals['compiled']:.2f}x")
    sys.exit(0)

model = raw_model
if compile:
    print("Compiling model...")
    model = torch.compile(model) # pytorch 2.0
train_step = make_train_step(model)


if profile:
    # useful docs on pytorch profiler:
    # - tutorial https://pytorch.org/tutorials/intermediate/tensorboard_profiler_tutorial.html
    # - api https://pytorch.org/docs/stable/profiler.html#torch.profiler.profile
    wait, warmup, active = 5, 5, 5
    num_steps = wait + warmup + active
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device_type == 'cuda':
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(
        activities=activities,
        schedule=torch.profiler.schedule(wait=wait, warmup=warmup, active=active, repeat=1),
        on_trace_ready=torch.profiler.tensorboard_trace_handler(profile_dir),
        record_shapes=False,
        profile_memory=False,
        with_stack=False, # incurs an additional overhead, disable if not needed
        with_flops=True,
        with_modules=False, # only for torchscript models atm
    ) as prof:
        X, Y = get_batch()
        for k in range(num_steps):
            X, Y, lossf = train_step(X, Y)
            print(f"{k}/{num_steps} loss: {lossf:.4f}")
            prof.step() # notify the profiler at end of each step
    print(f"profiler trace written to {os.path.abspath(profile_dir)}: `tensorboard --logdir {profile_dir}` "
          f"or load the .pt.trace.json file in https://ui.perfetto.dev")
else:
    # simple benchmarking
    sync()
    for stage, num_steps in (('burn-in', burnin_iters), ('timed', timed_iters)):
        X, Y = get_batch()
        t_start = t0 = time.time()
        for k in range(num_steps):
            X, Y, lossf = train_step(X, Y)
            t1 = time.time()
            dt, t0 = t1 - t0, t1
            print(f"{stage} iter {k}: loss {lossf:.4f}, time {dt*1000:.2f}ms, mfu {mfu(batch_size, dt)}")
    dt = time.time() - t_start
    print(f"time per iteration: {dt/timed_iters*1000:.2f}ms, {tokens_per_iter*timed_iters/dt:,.0f} tokens/s, "
          f"MFU: {mfu(batch_size * timed_iters, dt)}")
