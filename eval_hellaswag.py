"""
Zero-shot HellaSwag: the validation split's 10,042 items scored by a model (see hellaswag.py for the
definition of acc and acc_norm, the tie rule and the crop rule). The split downloads once into data_dir.
$ python eval_hellaswag.py --init_from=gpt2
$ python eval_hellaswag.py --init_from=resume --out_dir=out --max_items=1000
"""
import os
import time

import data_io
import hellaswag
import runtime
from tokenizer import load_tokenizer

# -----------------------------------------------------------------------------
init_from = 'gpt2' # 'resume' (out_dir/ckpt.pt), the folder of a train.py run, a gpt2 variant (e.g. 'gpt2-xl') or a local Hugging Face GPT-2 directory
out_dir = 'out' # the checkpoint's folder when init_from='resume'
data_file = '' # a local HellaSwag JSONL file (ctx, endings, label per line); '' = the validation split, downloaded into data_dir
data_dir = 'data/hellaswag' # where the validation split is downloaded to, once
max_items = 0 # score only the first max_items items; 0 = all
device = 'cuda' # 'cpu', 'cuda', 'cuda:1', 'mps'; without a CUDA GPU, 'cuda' runs on the CPU
dtype = 'auto' # 'float32', 'bfloat16' or 'float16' autocast; 'auto': bf16 (else fp16) on cuda, bf16 on CPUs with native bf16, else fp32
compile = False # torch.compile the model: faster on a GPU once compiled (rows vary in length, so it compiles dynamic shapes)
seed = 1337 # the scores use no randomness; the seed only fixes torch's generator for the set-up
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read()) # overrides from command line or config file
# -----------------------------------------------------------------------------
runtime.errors_as_one_line()

runtime.require(max_items >= 0, f"max_items must be >= 0 (0 scores all items), got {max_items}")
runtime.require(not data_file or os.path.isfile(data_file),
                f"data_file '{data_file}' not found: pass a HellaSwag JSONL file, or leave it empty to download the split")

rt = runtime.setup(device, dtype, seed)

# the data first: a bad line fails before a big model loads
items = hellaswag.load_items(data_file or hellaswag.download_val(data_dir))
items = hellaswag.tokenize_items(items[:max_items or None], data_io.gpt2_encoding())

model, checkpoint = runtime.load_model(init_from, out_dir, rt.device)
data_dir = runtime.dataset_dir(checkpoint, init_from) # a train.py run's dataset: its tokenizer must be GPT-2's
hellaswag.check_model(model, load_tokenizer(data_dir) if data_dir else None)
model.to(rt.device).eval()
# compiled in place (score_items calls the module itself), its first call made now; eager on a CPU: the weights
# in oneDNN's layout, a faster kernel (README)
if not (compile and runtime.compile_in_place(model, lambda: hellaswag.score_items(model, items[:1], rt.ctx, rt.device))):
    runtime.pack_for_cpu(model, rt)
cropped = hellaswag.n_cropped(items, model.config.block_size)
if cropped:
    print(f"note: {cropped} items are longer than block_size={model.config.block_size}: their context is cropped from the left")

t0 = time.time()
n_correct, n_correct_norm, n = hellaswag.score_items(model, items, rt.ctx, rt.device, progress=True)
dt = time.time() - t0 # score_items reads every item's result back, so the GPU is done here
print(f"hellaswag: {n} items, acc {n_correct / n:.4f}, acc_norm {n_correct_norm / n:.4f}, {n / dt:.1f} items/s")
