"""
Token files shared by data/*/prepare.py (writers) and train.py, bench.py, sample.py (readers).

A dataset folder data/<name>/ holds train.bin and val.bin: flat arrays of token ids read back with
np.memmap, uint16 when the vocabulary fits (GPT-2's 50257 does) and uint32 otherwise. meta.pkl,
when present, holds plain containers only: vocab_size, and for character-level sets stoi/itos,
plus 'dtype' when it is not uint16. Files from the original nanoGPT (uint16, no dtype key) read as is.

The writers at the end are what the four prepare scripts share: download with a clear error, the
character-level 90/10 writer, and the threaded GPT-2 tokenizer for datasets of documents.
"""

import contextlib
import http.client
import io
import os
import pickle
import socket
import time
import urllib.request
from urllib.parse import urlparse

import numpy as np

# every split must hold at least one training example of GPT-2's context: train.py draws block_size+1
# tokens (inputs and shifted targets) from a split, so with block_size 1024 a split needs 1025 tokens
MIN_SPLIT_TOKENS = 1024 + 1


def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 2 ** 16 else np.uint32


def with_dtype(meta, vocab_size):
    """ meta plus the 'dtype' of the token files when it is not uint16, the one open_tokens assumes without it. """
    dtype = token_dtype(vocab_size)
    return meta if dtype == np.uint16 else {**meta, 'dtype': np.dtype(dtype).name}


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
    """ `with atomic_open(path) as f:` writes path.<pid>.tmp, then renames it over path only if the block
    finished and the bytes reached the disk (fsync): neither an interrupted write nor a power cut
    leaves a half-written file under the real name. """

    def __init__(self, path, mode='wb'):
        # the process id keeps two processes writing the same file (DDP ranks) off each other's temporary
        self.path, self.tmp, self.mode = path, f"{path}.{os.getpid()}.tmp", mode

    def __enter__(self):
        self.f = open(self.tmp, self.mode)
        return self.f

    def __exit__(self, exc_type, exc, tb):
        done = False
        try:
            if exc_type is None:  # the bytes reach the disk before the file takes the real name
                self.f.flush()
                os.fsync(self.f.fileno())
            self.f.close()
            done = exc_type is None
        finally:
            if not done:  # a failed write (a full disk shows here at the latest) leaves nothing behind
                with contextlib.suppress(OSError):
                    self.f.close()
                os.remove(self.tmp)
        if done:
            os.replace(self.tmp, self.path)
            fsync_path(os.path.dirname(os.path.abspath(self.path)))  # the rename is durable once its folder is synced
        return False


def fsync_path(path):
    """ A file's bytes, or a folder's entries (the names created or renamed in it), pushed to the disk. """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path):
    """ fsync_path on every file and folder under path, path last: a folder written whole, on the disk
    before it is renamed into place. """
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            fsync_path(os.path.join(root, name))
        fsync_path(root)


def as_tokens(ids, dtype):
    """ ids as an array of dtype, or a ValueError where one does not fit (astype would wrap it around). """
    ids = np.asarray(ids)
    if ids.size and (ids.max() > np.iinfo(dtype).max or ids.min() < 0):
        bad = ids.max() if ids.max() > np.iinfo(dtype).max else ids.min()
        raise ValueError(f"token id {bad} does not fit {np.dtype(dtype).name}")
    return ids.astype(dtype)


def write_tokens(path, ids, dtype):
    """ Write token ids as a flat array of dtype, atomically. """
    tokens = as_tokens(ids, dtype)
    with atomic_open(path) as f:
        tokens.tofile(f)


def read_meta(data_dir):
    """ meta.pkl of a dataset folder as a dict, {} when it has none (GPT-2 BPE datasets). """
    path = os.path.join(data_dir, 'meta.pkl')
    return load_meta(path) if os.path.exists(path) else {}


def open_tokens(data_dir, split, meta=None, vocab_size=None, block_size=None):
    """ np.memmap of data_dir/<split>.bin with the dtype the dataset recorded (uint16 by default).
    Checks what can be checked cheaply, so wrong files fail here and not as garbage tokens; with
    block_size, that the split holds a window of block_size inputs and their next-token targets. """
    path = os.path.join(data_dir, f"{split}.bin")
    if not os.path.exists(path):
        prepare = os.path.join(data_dir, 'prepare.py')
        if os.path.exists(prepare):
            raise FileNotFoundError(f"{path} not found: run `python {prepare}` first")
        parent = os.path.dirname(os.path.normpath(data_dir)) or '.'
        known = sorted(d for d in (os.listdir(parent) if os.path.isdir(parent) else [])
                       if any(os.path.exists(os.path.join(parent, d, f)) for f in ('prepare.py', 'train.bin')))
        raise FileNotFoundError(f"{path} not found, and there is no {prepare} to make it: --dataset names a "
                                f"dataset folder of {parent}/ ({', '.join(known) or 'none there'})")
    meta = read_meta(data_dir) if meta is None else meta
    dtype = np.dtype(meta.get('dtype', 'uint16'))
    size = os.path.getsize(path)
    if size == 0 or size % dtype.itemsize:
        what = "is empty" if size == 0 else f"has {size} bytes, not a whole number of {dtype.name} tokens"
        raise ValueError(f"{path} {what}; rerun its prepare.py")
    needed = np.dtype(token_dtype(meta.get('vocab_size', 0)))
    if needed.itemsize > dtype.itemsize:  # a uint32 file read as uint16 could pass every other check
        raise ValueError(f"{path} is read as {dtype.name} but its vocabulary of {meta['vocab_size']} needs "
                         f"{needed.name}: meta.pkl lacks the right 'dtype'; rerun its prepare.py")
    data = np.memmap(path, dtype=dtype, mode='r')
    vocab_size = vocab_size or meta.get('vocab_size')
    if vocab_size is not None:
        top = int(data[:1 << 20].max())  # a sample: a whole pass over OpenWebText would take minutes
        if top >= vocab_size:
            raise ValueError(f"{path} holds token id {top} but the vocabulary has {vocab_size}: the file's dtype "
                             f"({dtype.name}) or meta.pkl does not match it; rerun its prepare.py")
    if block_size is not None and len(data) <= block_size:
        raise ValueError(f"{path} has {len(data):,} tokens, too few for block_size={block_size}: "
                         f"use a block_size below {len(data)} or more data")
    return data


# -----------------------------------------------------------------------------
# writers used by data/*/prepare.py

def download(url, path):
    """ Fetch url to path unless path exists. The bytes land under a temp name and are renamed when
    complete; a failed download raises OSError naming the url and where to put the file by hand. """
    if os.path.exists(path):
        return path
    print(f"downloading {url} to {path}")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, atomic_open(path) as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
            # a server that closes early ends the reads as if the file were complete: check it was
            expected = r.headers.get('Content-Length')
            if expected and expected.isdigit() and f.tell() != int(expected):
                raise OSError(f"the connection closed after {f.tell():,} of {int(expected):,} bytes")
    except (OSError, ValueError, http.client.HTTPException) as e:  # URLError, timeouts, bad urls, broken responses
        raise OSError(f"could not download {url} ({e}); without network, put the file at {path} by hand "
                      "and rerun") from None
    return path


def hub_reachable(timeout=3.0):
    """ Whether the Hugging Face hub answers at all: offline, the hub client would retry for half a minute. """
    if os.environ.get('HF_HUB_OFFLINE', '').upper() in ('1', 'ON', 'YES', 'TRUE'):  # huggingface_hub's reading
        return False
    url = urlparse(os.environ.get('HF_ENDPOINT', 'https://huggingface.co'))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == 'https' else 80)), timeout).close()
        return True
    except OSError:
        return False


def read_text(path):
    """ The text of a UTF-8 file (a byte-order mark, as Notepad writes, dropped); a ValueError when it is empty or
    not UTF-8; an OSError naming path when it is missing or a folder (not errno's bare sentence). """
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: give the path of an existing file") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path} is a folder: give the path of a file") from None
    try:
        text = data.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start:,}): convert it "
                         f"to UTF-8 first, e.g. with iconv") from None
    if not text:
        raise ValueError(f"{path} is empty: put the text in it first")
    return text


def gpt2_encoding():
    """ tiktoken's GPT-2 BPE; its files download once into tiktoken's cache, so say how to do without. """
    import tiktoken
    try:
        return tiktoken.get_encoding('gpt2')
    except OSError as e:  # requests' ConnectionError is an OSError
        raise OSError(f"could not load tiktoken's gpt2 encoding ({type(e).__name__}): its BPE files download once "
                      "from openaipublic.blob.core.windows.net; without network, set TIKTOKEN_CACHE_DIR to a "
                      "folder holding tiktoken's cached files") from None


def best_of(fn, repeats):
    """ (the best wall seconds of `repeats` runs of fn(), the last run's result): the machine's hiccups only
    ever add time, so the fastest run is the one to compare. """
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def out_dataset_dir(name):
    """ data/<name>/, the folder a prepare.py writes; a ValueError when name is a path, not a folder name. """
    if os.sep in name or name in ('', '.', '..'):
        raise ValueError(f"out_dataset={name!r} must be a folder name (it goes under data/), not a path")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', name)


def check_split_sizes(sizes, source):
    """ sizes: {split: number of tokens}. ValueError unless each split holds one block (MIN_SPLIT_TOKENS). """
    for split, n in sizes.items():
        if n < MIN_SPLIT_TOKENS:
            raise ValueError(f"{source} is too small: its {split} split would hold {n:,} tokens, at least "
                             f"{MIN_SPLIT_TOKENS:,} are needed (one block of 1024 + 1)")


def write_splits(data_dir, splits, vocab_size, meta=None, files=None):
    """ Write {split: ids} as data_dir/<split>.bin in the dtype the vocabulary needs, meta.pkl when given (with
    'dtype' added unless uint16, so open_tokens reads the files back right) and files, {name: bytes} (a BPE's
    bpe.json). Each is renamed into place only once all are written: a run that fails (a full disk) leaves the
    dataset's previous files as they were, never new tokens beside an old vocabulary. """
    with contextlib.ExitStack() as stack:
        def open_new(name):
            return stack.enter_context(atomic_open(os.path.join(data_dir, name)))
        for split, ids in splits.items():
            as_tokens(ids, token_dtype(vocab_size)).tofile(open_new(f"{split}.bin"))
        if meta is not None:
            pickle.dump(with_dtype(meta, vocab_size), open_new('meta.pkl'))
        for name, data in (files or {}).items():
            open_new(name).write(data)


def write_char_dataset(data_dir, text, source):
    """ Character-level dataset of text: vocabulary = its distinct characters in sorted order, first
    90% train, last 10% val, meta.pkl with vocab_size/stoi/itos. Returns (vocab_size, n_train, n_val). """
    n = int(0.9 * len(text))
    check_split_sizes({'train': n, 'val': len(text) - n}, source)
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    # a lookup table indexed by code point encodes millions of characters in a blink
    codes = np.frombuffer(text.encode('utf-32-le'), dtype=np.uint32)
    lut = np.zeros(ord(chars[-1]) + 1, dtype=np.uint32)
    lut[[ord(ch) for ch in chars]] = np.arange(len(chars), dtype=np.uint32)
    ids = lut[codes]
    meta = {'vocab_size': len(chars), 'itos': {i: ch for i, ch in enumerate(chars)}, 'stoi': stoi}
    write_splits(data_dir, {'train': ids[:n], 'val': ids[n:]}, len(chars), meta)
    return len(chars), n, len(text) - n


def check_document(text, text_column):
    """ text, or a ValueError when a dataset's document is not a string (a null in its column). """
    if not isinstance(text, str):
        raise ValueError(f"a document's {text_column!r} is {text!r}, not text: drop those records (or fill them) "
                         f"first, or pick the column with --text_column")
    return text


def write_documents(docs, f, text_column='text', num_threads=None, batch_docs=256, desc=None, enc=None):
    """ GPT-2 BPE (or the tiktoken encoding enc) of each document of a datasets.Dataset (encode_ordinary, then
    the end-of-text token), written to the open binary file f as uint16 (uint32 for a vocabulary past 65536),
    in document order; returns the number of tokens.
    num_threads tokenizer threads run at once (tiktoken releases the GIL), each on batch_docs
    documents, while this thread reads the next documents and writes finished ids. """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor
    from tqdm import tqdm
    enc = enc or gpt2_encoding()
    dtype = token_dtype(enc.n_vocab)
    num_threads = num_threads or os.cpu_count()

    def encode(texts):
        ids = []
        for text in texts:
            ids += enc.encode_ordinary(check_document(text, text_column))
            ids.append(enc.eot_token)
        return np.array(ids, dtype=dtype), len(texts)

    def write(future):
        ids, n_docs = future.result()
        f.write(ids)
        bar.update(n_docs)
        return len(ids)

    n_tokens = 0
    pending = deque()  # futures in document order, a few per thread: a 40 GB dataset never sits in memory
    with ThreadPoolExecutor(num_threads) as pool, tqdm(total=len(docs), desc=desc, unit='doc') as bar:
        for batch in docs.select_columns([text_column]).iter(batch_size=batch_docs):
            pending.append(pool.submit(encode, batch[text_column]))
            if len(pending) > 2 * num_threads:
                n_tokens += write(pending.popleft())
        while pending:
            n_tokens += write(pending.popleft())
    return n_tokens
