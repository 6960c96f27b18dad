"""
Tiny Shakespeare as a byte-level BPE trained on its own train split (tokenizer.train_bpe: rustbpe, GPT-4's
split regex, <|endoftext|> and the chat tokens of tokenizer.SPECIAL_TOKENS reserved as the last ids).
Writes bpe.json (the tokenizer, as JSON: loading it runs no code), train.bin / val.bin (the first 90% / last
10% of the characters, each encoded on its own) and meta.pkl (vocab_size). The same input and settings give
byte-identical files. input.txt is downloaded the first time; without network, put it next to this script.
$ python data/shakespeare_bpe/prepare.py --vocab_size=2048
"""
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)
from data_io import best_of, check_split_sizes, download, gpt2_encoding, read_text, write_splits  # noqa: E402
from tokenizer import BPE_FILE, train_bpe  # noqa: E402

# -----------------------------------------------------------------------------
url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt' # source of input.txt
vocab_size = 1024 # tokens of the BPE: the 256 bytes, the merges and the special tokens
# -----------------------------------------------------------------------------
exec(open(os.path.join(_ROOT, 'configurator.py')).read()) # overrides from command line or config file


def encode_speed(encode, text, repeats=3):
    """ MB/s of encode(text), the best of repeats runs. """
    return len(text.encode('utf-8')) / 1e6 / best_of(lambda: encode(text), repeats)[0]


data_dir = os.path.dirname(os.path.abspath(__file__))
input_path = os.path.join(data_dir, 'input.txt')
try:
    download(url, input_path)
    text = read_text(input_path)
    n = int(0.9 * len(text))
    t0 = time.perf_counter()
    tok = train_bpe([text[:n]], vocab_size)
    train_seconds = time.perf_counter() - t0
    splits = {'train': tok.encode_ordinary(text[:n]), 'val': tok.encode_ordinary(text[n:])}
    check_split_sizes({split: len(ids) for split, ids in splits.items()}, input_path)
    write_splits(data_dir, splits, tok.vocab_size, {'vocab_size': tok.vocab_size, 'tokenizer': 'bpe'},
                 files={BPE_FILE: tok.to_json()})
except (OSError, ValueError) as e:
    sys.exit(f"error: {e}")
print(f"trained a BPE of {tok.vocab_size:,} tokens ({tok.n_ordinary - 256:,} merges, {len(tok.special_tokens)} special "
      f"tokens) on {n:,} characters in {train_seconds:.2f} s")
if tok.vocab_size < vocab_size:
    print(f"note: the text has no more pairs to merge: vocab_size is {tok.vocab_size:,}, not the {vocab_size:,} asked for")
n_bytes = len(text.encode('utf-8'))
print(f"train has {len(splits['train']):,} tokens")
print(f"val has {len(splits['val']):,} tokens")
print(f"{n_bytes / (len(splits['train']) + len(splits['val'])):.3f} bytes per token")
# the encoding speed beside tiktoken's GPT-2 on the same text (the speed target: at least as fast per byte)
ours = encode_speed(tok.encode_ordinary, text)
try:
    gpt2 = encode_speed(gpt2_encoding().encode_ordinary, text)
    print(f"encode speed: this BPE {ours:.2f} MB/s, GPT-2's BPE (tiktoken) {gpt2:.2f} MB/s on the same text: "
          f"{ours / gpt2:.2f}x")
except OSError as e:
    print(f"encode speed: this BPE {ours:.2f} MB/s (GPT-2's BPE not measured: {e})")
