"""
OpenWebText, or any dataset of documents that Hugging Face `datasets` loads, as tokens: train.bin / val.bin,
each document's encode_ordinary ids followed by the end-of-text token, in the shuffled order of nanoGPT's
split (0.05% of the documents go to val, seed 2357). --tokenizer=gpt2 (the default) uses GPT-2's BPE (tiktoken);
--tokenizer=bpe trains a byte-level BPE of --vocab_size tokens on the train split first (tokenizer.train_bpe)
and writes it beside the bins as bpe.json, with meta.pkl. The files go to data/<out_dataset>/: data/openwebtext
for the hub's OpenWebText in GPT-2's BPE, and a folder you name for anything else, so your own corpus never
overwrites OpenWebText's files.
$ python data/openwebtext/prepare.py                                               # the hub's openwebtext
$ python data/openwebtext/prepare.py --dataset=json --data_files='/data/*.jsonl' --out_dataset=mine   # local, offline
$ python data/openwebtext/prepare.py --dataset=text --data_files='/data/*.txt' --out_dataset=mine --tokenizer=bpe
"""
import contextlib
import glob
import os
import pickle
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)
from data_io import (atomic_open, check_document, check_split_sizes, hub_reachable, out_dataset_dir,  # noqa: E402
                     with_dtype, write_documents)
from tokenizer import BPE_FILE, check_vocab_size, train_bpe  # noqa: E402

# -----------------------------------------------------------------------------
dataset = 'openwebtext' # hub name, or a builder of local files: 'json', 'text', 'parquet' (with data_files)
data_files = '' # path or glob of the local files for that builder
sample_by = 'document' # 'text' builder only: one document per file, 'paragraph' or 'line'
text_column = 'text' # column holding each document
val_size = 0.0005 # fraction of documents held out for val
seed = 2357 # seed of the train/val shuffle
num_proc = os.cpu_count() # tokenizer threads (and load_dataset processes)
tokenizer = 'gpt2' # 'gpt2': GPT-2's BPE (tiktoken); 'bpe': a byte-level BPE trained on the train split
vocab_size = 32768 # tokenizer='bpe': its tokens, the 256 bytes and the special tokens included
out_dataset = '' # writes data/<out_dataset>/ (train with --dataset=<out_dataset>); '' is openwebtext, for the hub's openwebtext in GPT-2's BPE only
# -----------------------------------------------------------------------------
exec(open(os.path.join(_ROOT, 'configurator.py')).read()) # overrides from command line or config file
BUILDERS = ('json', 'text', 'parquet', 'csv')  # datasets' builders of local files

if dataset not in BUILDERS and not hub_reachable():
    os.environ['HF_HUB_OFFLINE'] = '1'  # fail at once: offline, the hub client would retry for half a minute
from datasets import load_dataset  # noqa: E402  (after the settings: it takes seconds to import)

if dataset in BUILDERS and not data_files:
    sys.exit(f"error: dataset={dataset!r} reads local files: name them with --data_files='/path/*' (a path or glob)")
if data_files and '://' not in data_files and not glob.glob(data_files, recursive=True):
    sys.exit(f"error: no file matches data_files={data_files!r}")
if not out_dataset and (dataset, tokenizer) != ('openwebtext', 'gpt2'):
    sys.exit(f"error: name the folder for dataset {dataset!r} with --out_dataset=<name> (it writes data/<name>/, "
             f"then train with --dataset=<name>): data/openwebtext is kept for the hub's OpenWebText in GPT-2's BPE")
if not 0 < val_size < 1:
    sys.exit(f"error: val_size={val_size} is the fraction of the documents held out for val: pick one between 0 and 1")
if tokenizer not in ('gpt2', 'bpe'):
    sys.exit(f"error: unknown tokenizer {tokenizer!r}: use gpt2 or bpe")
try:
    data_dir = out_dataset_dir(out_dataset or 'openwebtext')
    check_vocab_size(vocab_size)
except ValueError as e:
    sys.exit(f"error: {e}")
try:
    ds = load_dataset(dataset, data_files=data_files or None, split='train', num_proc=num_proc,
                      **({'sample_by': sample_by} if dataset == 'text' else {}))
except Exception as e:  # the hub and the builders fail in many types; all but a file's encoding deserve the same advice
    cause = e
    while cause is not None and not isinstance(cause, UnicodeDecodeError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        sys.exit(f"error: data_files={data_files!r} holds a file that is not UTF-8 text ({cause}): convert it to "
                 f"UTF-8 first, e.g. with iconv")
    sys.exit(f"error: could not load dataset {dataset!r} ({type(e).__name__}: {e}). Without network, use a local "
             f"copy: python data/openwebtext/prepare.py --dataset=json --data_files='/path/*.jsonl' "
             f"(or text/parquet), one document per record in column '{text_column}'")
if len(ds) < 2:
    sys.exit(f"error: dataset {dataset!r} has {len(ds)} document{'s' * (len(ds) != 1)}, too few to split into train and "
             f"val: point --data_files at more" + (", or cut a file into paragraphs or lines with --sample_by"
                                                  if dataset == 'text' else ""))
if text_column not in ds.column_names:
    sys.exit(f"error: dataset {dataset!r} has no column {text_column!r} (it has {ds.column_names}); set --text_column")

bpe_path, meta_path = os.path.join(data_dir, BPE_FILE), os.path.join(data_dir, 'meta.pkl')
try:
    split = ds.train_test_split(test_size=val_size, seed=seed, shuffle=True)
    enc = None  # GPT-2's
    if tokenizer == 'bpe':
        batches = split['train'].select_columns([text_column]).iter(batch_size=1024)
        tok = train_bpe((check_document(text, text_column) for batch in batches for text in batch[text_column]),
                        vocab_size)
        print(f"trained a BPE of {tok.vocab_size:,} tokens ({tok.n_ordinary - 256:,} merges, "
              f"{len(tok.special_tokens)} special tokens) on the {len(split['train']):,} train documents")
        enc = tok.enc
    os.makedirs(data_dir, exist_ok=True)
    # the files appear together or not at all: renamed only once all are complete and the splits big enough
    with atomic_open(os.path.join(data_dir, 'val.bin')) as fv, atomic_open(os.path.join(data_dir, 'train.bin')) as ft, \
            contextlib.ExitStack() as vocab:
        n_val = write_documents(split['test'], fv, text_column, num_proc, desc='val', enc=enc)
        n_train = write_documents(split['train'], ft, text_column, num_proc, desc='train', enc=enc)
        check_split_sizes({'train': n_train, 'val': n_val}, f"dataset {dataset!r}")
        if tokenizer == 'bpe':
            vocab.enter_context(atomic_open(bpe_path)).write(tok.to_json())
            meta = with_dtype({'vocab_size': tok.vocab_size, 'tokenizer': 'bpe'}, tok.vocab_size)
            pickle.dump(meta, vocab.enter_context(atomic_open(meta_path)))
    if tokenizer != 'bpe':  # a BPE prepared here before would claim these GPT-2 tokens as its own
        for path in (bpe_path, meta_path):
            if os.path.exists(path):
                os.remove(path)
                print(f"removed {path}, left by an earlier --tokenizer=bpe run")
except (OSError, ValueError) as e:
    sys.exit(f"error: {e}")
print(f"train has {n_train:,} tokens ({len(split['train']):,} documents)")
print(f"val has {n_val:,} tokens ({len(split['test']):,} documents)")
