"""
An instruction set this project makes itself, offline, for the quick-start model (characters of tiny
Shakespeare): five tasks on words of the base dataset's own text, asked and answered in its characters --
  spell wicked          -> w-i-c-k-e-d
  reverse wicked        -> dekciw
  uppercase wicked      -> WICKED
  first letter of wicked -> w
  last letter of wicked  -> d
Every task over every train word makes train.bin (+ train_mask.bin); held-out words, never seen in training,
make val.bin (+ val_mask.bin) and heldout.jsonl, the exact-match evaluation of chat.py --eval_file.
$ python data/shakespeare_char/prepare.py && python train.py config/train_shakespeare_char_cpu.py   # the base
$ python data/instruct_demo/prepare.py
$ python train.py config/finetune_instruct_demo.py
$ python chat.py --out_dir=out-instruct-demo --eval_file=data/instruct_demo/heldout.jsonl --device=cpu
"""
import json
import os
import re
import sys

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)
from chat_template import write_dataset  # noqa: E402
from data_io import atomic_open, open_tokens  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402

# -----------------------------------------------------------------------------
base_dataset = 'shakespeare_char' # the base model's dataset: its characters and its words
min_len = 3 # shortest word used
max_len = 8 # longest word used
heldout_words = 60 # words kept out of training, for val and the exact-match evaluation
block_size = 128 # the finetune's context (the quick-start model's)
seed = 1337 # which words are held out
# -----------------------------------------------------------------------------
exec(open(os.path.join(_ROOT, 'configurator.py')).read()) # overrides from command line or config file

TASKS = {  # task: (question, answer) of a word
    'spell': lambda w: (f"spell {w}", '-'.join(w)),
    'reverse': lambda w: (f"reverse {w}", w[::-1]),
    'uppercase': lambda w: (f"uppercase {w}", w.upper()),
    'first': lambda w: (f"first letter of {w}", w[0]),
    'last': lambda w: (f"last letter of {w}", w[-1]),
}


def chat(task, word):
    question, answer = TASKS[task](word)
    return [{'role': 'user', 'content': question}, {'role': 'assistant', 'content': answer}]


data_dir = os.path.dirname(os.path.abspath(__file__))
base_dir = os.path.join(os.path.dirname(data_dir), base_dataset)
try:
    if heldout_words < 1 or not 1 <= min_len <= max_len:
        raise ValueError(f"heldout_words={heldout_words}, min_len={min_len}, max_len={max_len}: the demo needs at "
                         f"least 1 held-out word and 1 <= min_len <= max_len")
    if block_size < 8:
        raise ValueError(f"block_size must be at least 8, got {block_size}")
    if seed < 0:  # numpy's generator would stop with "expected non-negative integer", naming no setting
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not os.path.isfile(os.path.join(base_dir, 'meta.pkl')):  # else GPT-2's BPE, or load_tokenizer's bare 'not found'
        raise ValueError(f"data/{base_dataset} has no meta.pkl: run python data/{base_dataset}/prepare.py first, "
                         f"or name a prepared character dataset with --base_dataset")
    base = load_tokenizer(base_dir)
    if base.kind != 'char':
        raise ValueError(f"data/{base_dataset} is not a character dataset: the demo's tasks are about letters, "
                         f"use a character dataset such as shakespeare_char")
    missing = base.unknown_characters('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ- ')
    if missing:
        raise ValueError(f"data/{base_dataset} lacks the characters {missing} the tasks need: use shakespeare_char")
    text = ''.join(base.decode(open_tokens(base_dir, split).tolist()) for split in ('train', 'val'))
    words = sorted({w.lower() for w in re.findall(r'[A-Za-z]+', text) if min_len <= len(w) <= max_len})
    if len(words) < 2 * heldout_words:
        raise ValueError(f"data/{base_dataset} has only {len(words)} words of {min_len}-{max_len} letters: "
                         f"lower --heldout_words or widen --min_len/--max_len")
    order = np.random.default_rng(seed).permutation(len(words))
    held = sorted(words[i] for i in order[:heldout_words])
    train = [words[i] for i in order[heldout_words:]]
    stats = write_dataset(data_dir, base, {
        'train': [chat(task, w) for w in train for task in TASKS],
        'val': [chat(task, w) for w in held for task in TASKS]}, block_size)
    with atomic_open(os.path.join(data_dir, 'heldout.jsonl'), 'w') as f:
        for w in held:
            for task in TASKS:
                f.write(json.dumps({'task': task, 'messages': chat(task, w)}) + '\n')
except (OSError, ValueError) as e:
    sys.exit(f"error: {e}")
print(f"{len(words):,} words of {min_len}-{max_len} letters in data/{base_dataset}: {len(train):,} for training, "
      f"{len(held)} held out ({', '.join(held[:5])}, ...)")
for name, (kept, n_tokens, too_long, _) in stats.items():
    print(f"{name}: {kept:,} conversations, {n_tokens:,} tokens; skipped {too_long} longer than block_size={block_size}")
print(f"wrote {data_dir}: train.bin, val.bin, their masks, meta.pkl and heldout.jsonl ({len(held) * len(TASKS)} "
      f"questions)")
