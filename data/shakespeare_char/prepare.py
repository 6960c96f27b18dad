"""
Tiny Shakespeare as characters: train.bin / val.bin (first 90% / last 10%) and meta.pkl (65 symbols).
input.txt is downloaded the first time; without network, put it next to this script by hand.
$ python data/shakespeare_char/prepare.py
"""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)
from data_io import download, read_text, write_char_dataset  # noqa: E402

# -----------------------------------------------------------------------------
url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt' # source of input.txt
# -----------------------------------------------------------------------------
exec(open(os.path.join(_ROOT, 'configurator.py')).read()) # overrides from command line or config file

data_dir = os.path.dirname(os.path.abspath(__file__))
input_path = os.path.join(data_dir, 'input.txt')
try:
    download(url, input_path)
    text = read_text(input_path)
    vocab_size, n_train, n_val = write_char_dataset(data_dir, text, input_path)
except (OSError, ValueError) as e:
    sys.exit(f"error: {e}")
print(f"length of dataset in characters: {len(text):,}")
print(f"vocab size: {vocab_size:,}")
print(f"train has {n_train:,} tokens")
print(f"val has {n_val:,} tokens")
