"""
Sample from a trained model: a train.py checkpoint (ours or the original nanoGPT's), OpenAI's GPT-2
or a local Hugging Face GPT-2 directory.
$ python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=3
"""
import os
import sys
from contextlib import nullcontext
from itertools import groupby

import tiktoken
import torch

from data_io import read_meta
from model import GPT, GPT2_SIZES

# -----------------------------------------------------------------------------
init_from = 'resume' # 'resume' (out_dir/ckpt.pt), a gpt2 variant (e.g. 'gpt2-xl') or a local Hugging Face GPT-2 directory
out_dir = 'out' # ignored if init_from is not 'resume'
start = "\n" # or "<|endoftext|>" or etc. Can also specify a file, use as: "FILE:prompt.txt"
num_samples = 10 # number of samples to draw
max_new_tokens = 500 # number of tokens generated in each sample
temperature = 0.8 # 1.0 = no change, < 1.0 = less random, > 1.0 = more random, in predictions
top_k = 200 # retain only the top_k most likely tokens, clamp others to have 0 probability; 0 keeps all
seed = 1337
device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu' # or 'cuda:1' etc.
dtype = ('bfloat16' if torch.cuda.is_bf16_supported() else 'float16') if torch.cuda.is_available() else 'float32' # autocast dtype; bfloat16 also on CPUs with native bf16
compile = False # use PyTorch 2.0 to compile the model to be faster (the first sample waits for the compile)
use_kv_cache = True # False recomputes the whole context for every new token: the slow reference path
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read()) # overrides from command line or config file
# -----------------------------------------------------------------------------

# bad settings fail here, before any slow loading
if max_new_tokens <= 0:
    sys.exit(f"error: max_new_tokens must be > 0, got {max_new_tokens}")
if num_samples <= 0:
    sys.exit(f"error: num_samples must be > 0, got {num_samples}")
if temperature <= 0:
    sys.exit(f"error: temperature must be > 0, got {temperature}; use --top_k=1 for greedy decoding")
if top_k < 0:
    sys.exit(f"error: top_k must be >= 0 (0 keeps all tokens), got {top_k}")
if dtype not in ('float32', 'bfloat16', 'float16'):
    sys.exit(f"error: unknown dtype '{dtype}': use float32, bfloat16 or float16")
if init_from != 'resume' and init_from not in GPT2_SIZES and not os.path.isdir(init_from):
    sys.exit(f"error: unknown init_from '{init_from}': use 'resume', one of {', '.join(GPT2_SIZES)} "
             f"or an existing local Hugging Face GPT-2 directory")
if start.startswith('FILE:'):
    prompt_path = start[5:]
    try:
        with open(prompt_path, 'r', encoding='utf-8') as f:
            start = f.read()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else 'it is not UTF-8 text'
        sys.exit(f"error: cannot read the prompt file '{prompt_path}' given as --start=FILE:{prompt_path}: {why}")

torch.backends.cuda.matmul.allow_tf32 = True # allow tf32 on matmul
torch.backends.cudnn.allow_tf32 = True # allow tf32 on cudnn
device_type = 'cuda' if 'cuda' in device else 'cpu' # for later use in torch.autocast
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
ctx = nullcontext() if ptdtype == torch.float32 else torch.amp.autocast(device_type=device_type, dtype=ptdtype)

# model
checkpoint = None
if init_from == 'resume':
    # init from a model saved in a specific directory
    ckpt_path = os.path.join(out_dir, 'ckpt.pt')
    if not os.path.isdir(out_dir):
        sys.exit(f"error: out_dir '{out_dir}' does not exist: train a model with train.py first or pass --out_dir")
    if not os.path.isfile(ckpt_path):
        sys.exit(f"error: no checkpoint {ckpt_path}: train a model with train.py first or pass --out_dir")
    try:
        checkpoint = torch.load(ckpt_path, map_location=device, weights_only=True)
        model = GPT.from_checkpoint(checkpoint)
    except Exception as e:  # a truncated file, a foreign pickle, keys that don't fit: one line, not a traceback
        sys.exit(f"error: cannot load {ckpt_path}: {(str(e).strip().splitlines() or [type(e).__name__])[0]}")
else:
    # init from a given GPT-2 model
    try:
        model = GPT.from_pretrained(init_from, dict(dropout=0.0))
    except (ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")

model.eval()
model.to(device)
if compile:
    model.compile() # in place, so that generate's calls to self() run compiled (torch.compile(model) wouldn't)

# look for the meta pickle in case it is available in the dataset folder
meta, data_dir = {}, None
if checkpoint is not None and 'dataset' in checkpoint.get('config', {}): # older checkpoints might not have these...
    data_dir = os.path.join('data', checkpoint['config']['dataset'])
    try:
        meta = read_meta(data_dir)
    except ValueError as e:
        sys.exit(f"error: {e}")
if 'stoi' in meta and 'itos' in meta:
    print(f"Loading meta from {os.path.join(data_dir, 'meta.pkl')}...")
    stoi, itos = meta['stoi'], meta['itos']
    if len(itos) != model.config.vocab_size:
        sys.exit(f"error: {data_dir}/meta.pkl has {len(itos)} characters but the model's vocab_size is "
                 f"{model.config.vocab_size}: the dataset was prepared again since training; re-prepare or retrain")
    unknown = sorted(set(start) - set(stoi))
    if unknown:
        sys.exit(f"error: the prompt has characters not in the vocabulary of {data_dir}: "
                 f"{' '.join(map(repr, unknown))}; remove them or pick another --start")
    encode = lambda s: [stoi[c] for c in s]
    decode = lambda l: ''.join([itos[i] for i in l])
else:
    # ok let's assume gpt-2 encodings by default
    print("No meta.pkl found, assuming GPT-2 encodings...")
    try:
        enc = tiktoken.get_encoding("gpt2")
    except Exception as e:  # its files are downloaded once, then read from the cache
        sys.exit(f"error: cannot load tiktoken's GPT-2 encoding ({type(e).__name__}; no network?): "
                 f"point TIKTOKEN_CACHE_DIR at a cache that has it")
    encode = lambda s: enc.encode(s, allowed_special={"<|endoftext|>"})
    # ids from n_vocab (50257) up are vocab_size padding (50304): never in the data, but an
    # undertrained model can still pick them and tiktoken can't decode them, so they show as <|pad:id|>
    decode = lambda l: ''.join(enc.decode(list(ids)) if ok else ''.join(f"<|pad:{i}|>" for i in ids)
                               for ok, ids in groupby(l, key=lambda i: i < enc.n_vocab))

# encode the beginning of the prompt
start_ids = encode(start)
if not start_ids:
    sys.exit("error: the prompt is empty: pass some text with --start (the default is a newline)")
block_size = model.config.block_size
if len(start_ids) > block_size:
    print(f"note: the prompt has {len(start_ids)} tokens, more than block_size={block_size}: keeping the last {block_size}")
    start_ids = start_ids[-block_size:]
x = (torch.tensor(start_ids, dtype=torch.long, device=device)[None, ...])

# run generation, seeded here: building the model draws random numbers (its init) that must not change the samples
torch.manual_seed(seed)
with torch.no_grad():
    with ctx:
        for k in range(num_samples):
            y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k or None,
                               use_kv_cache=use_kv_cache)
            print(decode(y[0].tolist()))
            print('---------------')
