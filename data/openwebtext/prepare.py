"""
OpenWebText, or any dataset of documents that Hugging Face `datasets` loads, as GPT-2 BPE tokens:
train.bin / val.bin (uint16), each document's encode_ordinary ids followed by the end-of-text token,
in the shuffled order of nanoGPT's split (0.05% of the documents go to val, seed 2357).
$ python data/openwebtext/prepare.py                                               # the hub's openwebtext
$ python data/openwebtext/prepare.py --dataset=json --data_files='/data/*.jsonl'   # local files, offline
$ python data/openwebtext/prepare.py --dataset=text --data_files='/data/*.txt'     # one document per file
"""
import glob
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)
from data_io import atomic_open, check_split_sizes, hub_reachable, write_documents  # noqa: E402

# -----------------------------------------------------------------------------
dataset = 'openwebtext' # hub name, or a builder of local files: 'json', 'text', 'parquet' (with data_files)
data_files = '' # path or glob of the local files for that builder
sample_by = 'document' # 'text' builder only: one document per file, 'paragraph' or 'line'
text_column = 'text' # column holding each document
val_size = 0.0005 # fraction of documents held out for val
seed = 2357 # seed of the train/val shuffle
num_proc = os.cpu_count() # tokenizer threads (and load_dataset processes)
# -----------------------------------------------------------------------------
exec(open(os.path.join(_ROOT, 'configurator.py')).read()) # overrides from command line or config file

if dataset not in ('json', 'text', 'parquet', 'csv') and not hub_reachable():
    os.environ['HF_HUB_OFFLINE'] = '1'  # fail at once: offline, the hub client would retry for half a minute
from datasets import load_dataset  # noqa: E402  (after the settings: it takes seconds to import)

if data_files and '://' not in data_files and not glob.glob(data_files, recursive=True):
    sys.exit(f"error: no file matches data_files={data_files!r}")
try:
    ds = load_dataset(dataset, data_files=data_files or None, split='train', num_proc=num_proc,
                      **({'sample_by': sample_by} if dataset == 'text' else {}))
except Exception as e:  # the hub and the builders fail in many types; all deserve the same advice
    sys.exit(f"error: could not load dataset {dataset!r} ({type(e).__name__}: {e}). Without network, use a local "
             f"copy: python data/openwebtext/prepare.py --dataset=json --data_files='/path/*.jsonl' "
             f"(or text/parquet), one document per record in column '{text_column}'")
if text_column not in ds.column_names:
    sys.exit(f"error: dataset {dataset!r} has no column {text_column!r} (it has {ds.column_names}); set --text_column")

data_dir = os.path.dirname(os.path.abspath(__file__))
try:
    split = ds.train_test_split(test_size=val_size, seed=seed, shuffle=True)
    # both files appear together or not at all: renamed only once both are complete and big enough
    with atomic_open(os.path.join(data_dir, 'val.bin')) as fv, atomic_open(os.path.join(data_dir, 'train.bin')) as ft:
        n_val = write_documents(split['test'], fv, text_column, num_proc, desc='val')
        n_train = write_documents(split['train'], ft, text_column, num_proc, desc='train')
        check_split_sizes({'train': n_train, 'val': n_val}, f"dataset {dataset!r}")
except (OSError, ValueError) as e:
    sys.exit(f"error: {e}")
print(f"train has {n_train:,} tokens ({len(split['train']):,} documents)")
print(f"val has {n_val:,} tokens ({len(split['test']):,} documents)")
