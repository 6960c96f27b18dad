"""
Sample from a trained model: a train.py checkpoint (ours or the original nanoGPT's), OpenAI's GPT-2
or a local Hugging Face GPT-2 directory. Text goes through the tokenizer of the dataset the model was
trained on (tokenizer.py: characters, a trained BPE, else GPT-2's).
$ python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=3
"""
import os

import torch

import runtime
from data_io import read_text
from quantize import check_quantize
from tokenizer import TextStream, load_tokenizer

# -----------------------------------------------------------------------------
init_from = 'resume' # 'resume' (out_dir's ckpt.pt, or an FSDP run's ckpt.dcp), the out_dir of a run, a gpt2 variant (e.g. 'gpt2-xl') or a local Hugging Face GPT-2 directory
out_dir = 'out' # ignored if init_from is not 'resume'
start = "\n" # or "<|endoftext|>" or etc. Can also specify a file, use as: "FILE:prompt.txt"
num_samples = 10 # number of samples to draw
max_new_tokens = 500 # number of tokens generated in each sample
temperature = 0.8 # 1.0 = no change, < 1.0 = less random, > 1.0 = more random, in predictions
top_k = 200 # retain only the top_k most likely tokens, clamp others to have 0 probability; 0 keeps all
seed = 1337
device = 'cuda' # 'cpu', 'cuda', 'cuda:1', 'mps'; without a CUDA GPU, 'cuda' runs on the CPU
dtype = 'auto' # 'float32', 'bfloat16' or 'float16' autocast; 'auto': bf16 (else fp16) on cuda, bf16 on CPUs with native bf16, else fp32
compile = False # use PyTorch 2.0 to compile the model to be faster (the first sample waits for the compile)
use_kv_cache = True # False recomputes the whole context for every new token: the slow reference path
quantize = '' # '' as saved; 'int8': int8 weights, faster decoding on CPU; 'nf4': 4-bit NF4 weights (a QLoRA checkpoint is NF4 already)
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read()) # overrides from command line or config file
# -----------------------------------------------------------------------------

runtime.errors_as_one_line()
runtime.require(max_new_tokens > 0, f"max_new_tokens must be > 0, got {max_new_tokens}")
runtime.require(num_samples > 0, f"num_samples must be > 0, got {num_samples}")
runtime.require(top_k >= 0, f"top_k must be >= 0 (0 keeps all tokens), got {top_k}")
runtime.require(temperature > 0, f"temperature must be > 0, got {temperature}; use --top_k=1 for greedy samples")
check_quantize(quantize)
if start.startswith('FILE:'):
    start = read_text(start[5:])

rt = runtime.setup(device, dtype)
model, checkpoint = runtime.load_model(init_from, out_dir, rt.device, dropout=0.0)
model.eval()
model.to(rt.device)
runtime.quantize_loaded(model, checkpoint, quantize)

# the tokenizer of the dataset the model was trained on (characters or a trained BPE), else GPT-2's
data_dir = runtime.dataset_dir(checkpoint, init_from)
tok = load_tokenizer(data_dir)
meta_path = os.path.join(data_dir, 'meta.pkl') if data_dir else None
if tok.kind == 'gpt2' and meta_path and os.path.exists(meta_path):  # GPT-2's BPE with the special tokens it lists
    print(f"Loading meta from {meta_path}: GPT-2 encodings with special tokens {' '.join(tok.special_tokens)}...")
else:
    print({'char': f"Loading meta from {tok.path}...", 'bpe': f"Loading the trained BPE from {tok.path}...",
           'gpt2': "No meta.pkl found, assuming GPT-2 encodings..."}[tok.kind])
tok.check_model(model.config.vocab_size)
unknown = tok.unknown_characters(start)
runtime.require(not unknown, f"the prompt has characters not in the vocabulary of {data_dir}: "
                             f"{' '.join(map(repr, unknown))}; remove them or pick another --start")
# special tokens written in the prompt (<|endoftext|>) become their ids; ids past the vocabulary (GPT-2's
# padding from 50257 to 50304: never in the data, but an undertrained model can pick them) show as <|pad:id|>
encode, decode = tok.encode, tok.decode

# encode the beginning of the prompt
start_ids = encode(start)
runtime.require(start_ids, "the prompt is empty: pass some text with --start (the default is a newline)")
block_size = model.config.block_size
if len(start_ids) > block_size:
    print(f"note: the prompt has {len(start_ids)} tokens, more than block_size={block_size}: keeping the last {block_size}")
    start_ids = start_ids[-block_size:]
x = (torch.tensor(start_ids, dtype=torch.long, device=rt.device)[None, ...])

# compiled in place, so that generate's calls to self() run compiled (torch.compile(model) wouldn't), its first
# calls made now (a prefill and a decode step); eager on a CPU: the weights in oneDNN's layout, a faster kernel (README)
def warm_up():
    with torch.no_grad(), rt.ctx:
        model.generate(x, 2, use_kv_cache=use_kv_cache)
if not (compile and runtime.compile_in_place(model, warm_up)):
    runtime.pack_for_cpu(model, rt)

# run generation, seeded here: building the model draws random numbers (its init) that must not change the samples
torch.manual_seed(seed)
with torch.no_grad(), rt.ctx:
    for k in range(num_samples):
        stream = TextStream(tok, start_ids) # the prompt shows first, then each token as it comes
        print(stream.add(), end='', flush=True)
        model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k or None, use_kv_cache=use_kv_cache,
                       callback=lambda idx_next: print(stream.add(idx_next[0, 0].item()), end='', flush=True))
        print(stream.add(final=True), flush=True)
        print('---------------')
