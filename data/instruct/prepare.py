"""
Instructions and chats as an instruction-tuning dataset (chat_template.py): each record becomes a conversation
rendered to token ids plus a mask that is 1 on the assistant's replies, written side by side as train.bin /
train_mask.bin and val.bin / val_mask.bin (uint8), with meta.pkl (and bpe.json for a trained BPE) holding the
tokenizer: the base one and the chat's special tokens after it. Records of either common shape:
  Alpaca: {"instruction": ..., "input": ... (optional), "output": ...}
  chat:   {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}
from local JSON (a list of records) or JSONL (one record a line) files, or from the Hugging Face hub.
Then finetune a base model on it: python train.py --dataset=instruct --init_from=<its out_dir or gpt2>
$ python data/instruct/prepare.py --data_files=my.jsonl                       # GPT-2's BPE
$ python data/instruct/prepare.py --data_files=my.jsonl --tokenizer=data/shakespeare_char --block_size=128
$ python data/instruct/prepare.py --dataset=yahma/alpaca-cleaned              # needs network
$ python data/instruct/prepare.py --dataset=HuggingFaceTB/smol-smoltalk       # needs network
"""
import glob
import os
import sys

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)
from chat_template import from_record, is_instruction_data, naming_record, read_records, write_dataset  # noqa: E402
from data_io import hub_reachable, out_dataset_dir  # noqa: E402
from tokenizer import BPE_FILE, load_tokenizer  # noqa: E402

# -----------------------------------------------------------------------------
data_files = '' # local .json/.jsonl files, comma-separated (globs allowed)
dataset = '' # or a Hugging Face hub dataset of Alpaca or chat records (needs network)
split = 'train' # the hub dataset's split to read
tokenizer = 'gpt2' # the base model's tokenizer: 'gpt2', or the folder of a char/BPE dataset ('data/shakespeare_char')
block_size = 1024 # the finetune's context: longer conversations are skipped (and counted)
val_fraction = 0.05 # share of the conversations held out for val
seed = 2357 # seed of the train/val shuffle
out_dataset = 'instruct' # writes data/<out_dataset>/ (train with --dataset=<out_dataset>)
# -----------------------------------------------------------------------------
exec(open(os.path.join(_ROOT, 'configurator.py')).read()) # overrides from command line or config file


def hub_records(name):
    """ The records of a hub dataset, or a one-line error offline that names the local-file alternative. """
    if not hub_reachable():
        raise OSError(f"cannot reach the Hugging Face hub for dataset {name!r} (offline?): save its records as "
                      f"JSONL elsewhere and run python data/instruct/prepare.py --data_files=<file.jsonl>")
    from datasets import load_dataset
    return load_dataset(name, split=split)


def conversations(records, where):
    """ The conversations of records; a record of neither shape, or with an empty reply, stops with where it is. """
    for n, record in enumerate(records, 1):
        with naming_record(n, where):
            conversation = from_record(record)
        yield conversation


try:
    if bool(data_files) == bool(dataset):
        raise ValueError("give the records with --data_files=<file.jsonl> (local JSON/JSONL) or --dataset=<hub name>, "
                         "one of the two")
    data_dir = out_dataset_dir(out_dataset)
    if os.path.isfile(os.path.join(data_dir, 'train.bin')) and not is_instruction_data(data_dir):
        raise ValueError(f"data/{out_dataset} holds a dataset that is not instruction data (another prepare.py's), "
                         f"which this would overwrite: pick another --out_dataset")
    if block_size < 8:
        raise ValueError(f"block_size must be at least 8, got {block_size}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if seed < 0:  # numpy's generator would stop with "expected non-negative integer", naming no setting
        raise ValueError(f"seed must be >= 0, got {seed}")
    if tokenizer != 'gpt2' and not os.path.exists(os.path.join(tokenizer, 'meta.pkl')) and \
            not os.path.exists(os.path.join(tokenizer, BPE_FILE)):
        raise ValueError(f"tokenizer={tokenizer!r} is neither 'gpt2' nor a dataset folder with meta.pkl or bpe.json: "
                         f"prepare that dataset first, or use --tokenizer=gpt2")
    convs = []
    if dataset:
        convs += conversations(hub_records(dataset), f"dataset {dataset}")
    for pattern in filter(None, (p.strip() for p in data_files.split(','))):
        paths = sorted(glob.glob(pattern)) or [pattern]
        for path in paths:
            if not os.path.isfile(path):
                raise ValueError(f"no file matches data_files={pattern!r}: give the path of a .json or .jsonl file")
            convs += conversations(read_records(path), path)
    base = load_tokenizer(None if tokenizer == 'gpt2' else tokenizer)
    if len(convs) < 2:
        raise ValueError(f"{len(convs)} conversation(s) found: train and val need at least one each, give more records")
    order = np.random.default_rng(seed).permutation(len(convs))
    n_val = max(1, int(len(convs) * val_fraction))
    stats = write_dataset(data_dir, base, {'train': [convs[i] for i in order[n_val:]],
                                           'val': [convs[i] for i in order[:n_val]]}, block_size)
except (OSError, ValueError) as e:
    sys.exit(f"error: {e}")
for name, (kept, n_tokens, too_long, unknown) in stats.items():
    print(f"{name}: {kept:,} conversations, {n_tokens:,} tokens; skipped {too_long:,} longer than "
          f"block_size={block_size}" + (f", {unknown:,} with characters outside the base vocabulary" if unknown else ""))
print(f"wrote {data_dir} ({base.describe()} + the chat's special tokens): "
      f"train with --dataset={out_dataset} --block_size={block_size}")
