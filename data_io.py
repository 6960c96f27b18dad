"""
Token files shared by data/*/prepare.py (writers) and train.py, bench.py, sample.py (readers).

A dataset folder data/<name>/ holds train.bin and val.bin: flat arrays of token ids read back with
np.memmap, uint16 when the vocabulary fits (GPT-2's 50257 does) and uint32 otherwise. meta.pkl,
when present, holds plain containers only: vocab_size, and for character-level sets stoi/itos,
plus 'dtype' when it is not uint16. Files from the original nanoGPT (uint16, no dtype key) read as is.
"""

import io
import os
import pickle

import numpy as np


def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 2 ** 16 else np.uint32


class _PlainUnpickler(pickle.Unpickler):
    """ Builds dicts, lists, strings and numbers only: a meta.pkl can't run code on load. """

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_meta(path):
    """ The dict in a meta.pkl, or a one-line ValueError when the file holds anything else. """
    with open(path, 'rb') as f:
        data = f.read()
    try:
        meta = _PlainUnpickler(io.BytesIO(data)).load()
    except Exception as e:
        raise ValueError(f"{path} is not a plain meta.pkl ({e}); delete it and rerun the dataset's prepare.py") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} holds a {type(meta).__name__}, not a dict; rerun the dataset's prepare.py")
    return meta


def save_meta(path, meta):
    with atomic_open(path) as f:
        pickle.dump(meta, f)


class atomic_open:
    """ `with atomic_open(path) as f:` writes path.tmp, then renames it over path only if the
    block finished: an interrupted write never leaves a half-written file under the real name. """

    def __init__(self, path, mode='wb'):
        self.path, self.tmp, self.mode = path, f"{path}.tmp", mode

    def __enter__(self):
        self.f = open(self.tmp, self.mode)
        return self.f

    def __exit__(self, exc_type, exc, tb):
        self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            os.remove(self.tmp)
        return False


def write_tokens(path, ids, dtype):
    """ Write token ids as a flat array of dtype, atomically. """
    ids = np.asarray(ids)
    if ids.size and ids.max() >= np.iinfo(dtype).max + 1:
        raise ValueError(f"token id {ids.max()} does not fit {np.dtype(dtype).name}")
    with atomic_open(path) as f:
        ids.astype(dtype).tofile(f)


def read_meta(data_dir):
    """ meta.pkl of a dataset folder as a dict, {} when it has none (GPT-2 BPE datasets). """
    path = os.path.join(data_dir, 'meta.pkl')
    return load_meta(path) if os.path.exists(path) else {}


def open_tokens(data_dir, split, meta=None, vocab_size=None):
    """ np.memmap of data_dir/<split>.bin with the dtype the dataset recorded (uint16 by default).
    Checks what can be checked cheaply, so wrong files fail here and not as garbage tokens. """
    path = os.path.join(data_dir, f"{split}.bin")
    if not os.path.exists(path):
        name = os.path.basename(os.path.normpath(data_dir))
        raise FileNotFoundError(f"{path} not found: run `python data/{name}/prepare.py` first")
    meta = read_meta(data_dir) if meta is None else meta
    dtype = np.dtype(meta.get('dtype', 'uint16'))
    size = os.path.getsize(path)
    if size == 0 or size % dtype.itemsize:
        raise ValueError(f"{path} has {size} bytes, not a whole number of {dtype.name} tokens; rerun its prepare.py")
    data = np.memmap(path, dtype=dtype, mode='r')
    vocab_size = vocab_size or meta.get('vocab_size')
    if vocab_size is not None:
        top = int(data[:1 << 20].max())  # a sample: a whole pass over OpenWebText would take minutes
        if top >= vocab_size:
            raise ValueError(f"{path} holds token id {top} but the vocabulary has {vocab_size}: the file's dtype "
                             f"({dtype.name}) or meta.pkl does not match it; rerun its prepare.py")
    return data
