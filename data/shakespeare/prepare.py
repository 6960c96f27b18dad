"""
Tiny Shakespeare as GPT-2 BPE tokens (tiktoken): train.bin / val.bin (uint16) of the first 90% / last
10% of the characters. No meta.pkl: GPT-2's vocabulary is what train.py and sample.py assume without one.
input.txt is downloaded the first time; without network, put it next to this script by hand.
$ python data/shakespeare/prepare.py
"""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)
from data_io import check_split_sizes, download, gpt2_encoding, read_text, write_splits  # noqa: E402

# -----------------------------------------------------------------------------
url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt' # source of input.txt
# -----------------------------------------------------------------------------
exec(open(os.path.join(_ROOT, 'configurator.py')).read()) # overrides from command line or config file

data_dir = os.path.dirname(os.path.abspath(__file__))
input_path = os.path.join(data_dir, 'input.txt')
try:
    download(url, input_path)
    text = read_text(input_path)
    enc = gpt2_encoding()
    n = int(0.9 * len(text))
    splits = {'train': enc.encode_ordinary(text[:n]), 'val': enc.encode_ordinary(text[n:])}
    check_split_sizes({split: len(ids) for split, ids in splits.items()}, input_path)
    write_splits(data_dir, splits, enc.n_vocab)
except (OSError, ValueError) as e:
    sys.exit(f"error: {e}")
print(f"train has {len(splits['train']):,} tokens")
print(f"val has {len(splits['val']):,} tokens")
