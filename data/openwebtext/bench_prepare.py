"""
Speed of the OpenWebText preparation on a local dataset of documents, against tiktoken's own
encode_ordinary_batch with the same number of threads over the same documents, in the same run.
The documents are random slices of 1 to 9 KB of a source text, written as
jsonl. Three timings:
- end to end: `python data/openwebtext/prepare.py --dataset=json ...` in a subprocess on a copy of the
  script (so the repo's bins are untouched), with a cold datasets cache: imports, load_dataset, split,
  tokenize, write;
- pipeline: split + tokenize + write (data_io.write_documents) in this process, dataset already loaded;
- tiktoken: enc.encode_ordinary_batch(docs, num_threads) on the documents as a Python list.
$ python data/openwebtext/bench_prepare.py --size_mb=100
"""
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)
from data_io import atomic_open, download, gpt2_encoding, write_documents  # noqa: E402

# -----------------------------------------------------------------------------
size_mb = 100.0 # megabytes (1e6) of UTF-8 text to generate
source = '' # text file the documents are cut from; '' means tiny Shakespeare (data/shakespeare_char/input.txt)
num_threads = 2 # tokenizer threads of the pipeline and of the reference
val_size = 0.0005 # as prepare.py; under ~20 MB raise it, or val holds less than one block and prepare.py stops
repeats = 1 # the pipeline and tiktoken timings are the best of this many runs
seed = 0 # of the document slicing
# -----------------------------------------------------------------------------
exec(open(os.path.join(_ROOT, 'configurator.py')).read()) # overrides from command line or config file

from datasets import disable_caching, load_dataset  # noqa: E402

if not source:
    source = download('https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt',
                      os.path.join(_ROOT, 'data', 'shakespeare_char', 'input.txt'))
with open(source, encoding='utf-8') as f:
    src = f.read()
rng = random.Random(seed)
work = tempfile.mkdtemp(prefix='bench_prepare_')
docs_path = os.path.join(work, 'docs.jsonl')
n_bytes = 0
with open(docs_path, 'w') as f:
    while n_bytes < size_mb * 1e6:
        start, length = rng.randrange(len(src) - 9000), rng.randint(1000, 9000)
        doc = src[start:start + length]
        f.write(json.dumps({'text': doc}) + '\n')
        n_bytes += len(doc.encode('utf-8'))
mb = n_bytes / 1e6
print(f"{mb:.1f} MB of documents from {source} in {docs_path}")


def cpu_seconds(who=resource.RUSAGE_SELF):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def timed(fn, who=resource.RUSAGE_SELF):
    """ (wall seconds, CPU seconds of all threads, fn's result) """
    t0, c0 = time.perf_counter(), cpu_seconds(who)
    result = fn()
    return time.perf_counter() - t0, cpu_seconds(who) - c0, result


def report(name, seconds, cpu, n_tokens):
    print(f"{name:>10}: {seconds:6.2f} s, {mb / seconds:6.2f} MB/s, {n_tokens / seconds / 1e6:6.3f} M tokens/s, "
          f"{cpu / seconds:4.2f} cores busy")
    return mb / seconds


try:
    # end to end: prepare.py on a copy of the repo's files, so its outputs land in the temp folder
    os.makedirs(os.path.join(work, 'data', 'openwebtext'))
    for name in ('data_io.py', 'configurator.py', 'tokenizer.py', os.path.join('data', 'openwebtext', 'prepare.py')):
        shutil.copy(os.path.join(_ROOT, name), os.path.join(work, name))
    cmd = [sys.executable, os.path.join(work, 'data', 'openwebtext', 'prepare.py'), '--dataset=json', '--out_dataset=openwebtext',
           f"--data_files={docs_path}", f"--num_proc={num_threads}", f"--val_size={val_size}"]
    env = {**os.environ, 'HF_DATASETS_CACHE': os.path.join(work, 'hf_cache')}
    e2e_s, e2e_cpu, _ = timed(lambda: subprocess.run(cmd, env=env, check=True), resource.RUSAGE_CHILDREN)
    n_e2e = sum(os.path.getsize(os.path.join(work, 'data', 'openwebtext', f"{s}.bin")) // 2 for s in ('train', 'val'))

    ds = load_dataset('json', data_files=docs_path, split='train', cache_dir=os.path.join(work, 'hf_cache'))
    disable_caching()  # the split's indices are computed again each repeat, as in a first run
    docs = list(ds['text'])
    enc = gpt2_encoding()

    def pipeline():  # what prepare.py does once the dataset is loaded
        split = ds.train_test_split(test_size=val_size, seed=2357, shuffle=True)
        with atomic_open(os.path.join(work, 'val.bin')) as fv, atomic_open(os.path.join(work, 'train.bin')) as ft:
            return (write_documents(split['test'], fv, 'text', num_threads, desc='val')
                    + write_documents(split['train'], ft, 'text', num_threads, desc='train'))

    def tiktoken_alone():
        return sum(map(len, enc.encode_ordinary_batch(docs, num_threads=num_threads)))

    pipe_s, pipe_cpu, n_pipe = min(timed(pipeline) for _ in range(repeats))
    ref_s, ref_cpu, n_ref = min(timed(tiktoken_alone) for _ in range(repeats))
finally:
    shutil.rmtree(work)

assert n_pipe == n_e2e == n_ref + len(docs), "the pipeline and tiktoken must see the same documents"
print(f"{len(docs):,} documents, {n_pipe:,} tokens (with one end-of-text token each), {num_threads} threads")
e2e = report('end to end', e2e_s, e2e_cpu, n_pipe)
pipe = report('pipeline', pipe_s, pipe_cpu, n_pipe)
ref = report('tiktoken', ref_s, ref_cpu, n_ref)
print(f"pipeline / tiktoken: {pipe / ref:.0%} (target >= 80%), end to end / tiktoken: {e2e / ref:.0%}")
