"""
Guards data/*/prepare.py and the token files of data_io.py: each prepare script, run as a user runs it
on data the test makes, writes bins that decode back to its input with the documented split sizes,
gives byte-identical files when rerun, fails with a clear message and no files on a failed download,
an unreachable hub or too little text; the uint16/uint32 switch at 65536 symbols reads back exactly;
load_meta never runs code from a pickle; a dataset's files are replaced all together or not at all. The trained-BPE datasets (shakespeare_bpe, openwebtext's
--tokenizer=bpe into a folder of one's own) decode back through their bpe.json, rerun byte for byte, print
the encoding speed line, and refuse a too small vocab_size, an empty or non-UTF-8 corpus in one line.
"""

import functools
import http.server
import json
import math
import os
import pickle
import shutil
import sys
import threading

import numpy as np
import pytest

from conftest import closed_port_url, copy_prepare, error_line, run_script, tiny_text
from data_io import (MIN_SPLIT_TOKENS, load_meta, open_tokens, read_meta, write_char_dataset, write_documents,
                     write_splits, write_tokens)


def prepare(data_dir, *args, check=True, env=None):
    return run_script(data_dir / 'prepare.py', *args, cwd=data_dir.parent.parent, check=check, env=env)


def outputs(data_dir):
    """ {file name: bytes} of everything a prepare run left in data_dir, besides the script and its input. """
    return {p.name: p.read_bytes() for p in sorted(data_dir.iterdir()) if p.name not in ('prepare.py', 'input.txt')}


def decode_chars(data_dir):
    meta = read_meta(data_dir)
    return [''.join(meta['itos'][int(i)] for i in open_tokens(data_dir, split, meta)) for split in ('train', 'val')]


# -----------------------------------------------------------------------------
# character-level: shakespeare_char and python_char

def test_shakespeare_char_round_trip_and_rerun(tmp_path):
    text = tiny_text()
    data_dir = copy_prepare(tmp_path, 'shakespeare_char')
    (data_dir / 'input.txt').write_text(text)
    out = prepare(data_dir).stdout
    n = int(0.9 * len(text))
    assert f"train has {n:,} tokens" in out and f"val has {len(text) - n:,} tokens" in out
    assert decode_chars(data_dir) == [text[:n], text[n:]]
    chars = sorted(set(text))
    meta = load_meta(data_dir / 'meta.pkl')
    assert meta == {'vocab_size': len(chars), 'itos': dict(enumerate(chars)), 'stoi': {c: i for i, c in enumerate(chars)}}
    assert os.path.getsize(data_dir / 'train.bin') == 2 * n  # uint16
    first = outputs(data_dir)
    assert sorted(first) == ['meta.pkl', 'train.bin', 'val.bin']
    prepare(data_dir)
    assert outputs(data_dir) == first


@pytest.mark.offline_files
@pytest.mark.skipif(not os.environ.get('TINY_SHAKESPEARE'), reason='TINY_SHAKESPEARE names no copy of tiny Shakespeare')
def test_shakespeare_char_full_corpus(tmp_path):
    data_dir = copy_prepare(tmp_path, 'shakespeare_char')
    shutil.copy(os.environ['TINY_SHAKESPEARE'], data_dir / 'input.txt')
    prepare(data_dir)
    meta = read_meta(data_dir)
    assert meta['vocab_size'] == 65
    assert len(open_tokens(data_dir, 'train', meta)) == 1_003_854
    assert len(open_tokens(data_dir, 'val', meta)) == 111_540
    assert ''.join(decode_chars(data_dir)) == (data_dir / 'input.txt').read_text()


def test_shakespeare_char_downloads(tmp_path):
    served = tmp_path / 'www'
    served.mkdir()
    (served / 'input.txt').write_text(tiny_text())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    with http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        data_dir = copy_prepare(tmp_path / 'repo', 'shakespeare_char')
        prepare(data_dir, f"--url=http://127.0.0.1:{server.server_address[1]}/input.txt")
        server.shutdown()
    assert (data_dir / 'input.txt').read_bytes() == (served / 'input.txt').read_bytes()
    assert ''.join(decode_chars(data_dir)) == tiny_text()


@pytest.mark.parametrize('name', ['shakespeare_char', 'shakespeare'])
def test_download_failure_is_clear_and_leaves_nothing(tmp_path, name):
    data_dir = copy_prepare(tmp_path, name)
    url = closed_port_url() + '/input.txt'
    p = prepare(data_dir, f"--url={url}", check=False)
    assert p.returncode != 0
    assert p.stderr.startswith('error: could not download') and url in p.stderr
    assert str(data_dir / 'input.txt') in p.stderr  # where to put the file by hand
    assert [f.name for f in data_dir.iterdir()] == ['prepare.py']


class BrokenHandler(http.server.BaseHTTPRequestHandler):
    """ A server that closes the connection halfway through its file: a Content-Length it does not honour,
    or a chunked body cut off inside a chunk. """

    def do_GET(self):
        self.send_response(200)
        if self.path.endswith('chunked'):
            self.send_header('Transfer-Encoding', 'chunked')
            self.end_headers()
            self.wfile.write(b'1f4\r\n' + b'x' * 100)
        else:
            self.send_header('Content-Length', '1000')
            self.end_headers()
            self.wfile.write(b'x' * 500)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.mark.parametrize('path, phrase', [('input.txt', 'closed after 500 of 1,000 bytes'),
                                          ('chunked', 'IncompleteRead')])
def test_download_cut_off_is_clear_and_leaves_nothing(tmp_path, path, phrase):
    with http.server.ThreadingHTTPServer(('127.0.0.1', 0), BrokenHandler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        data_dir = copy_prepare(tmp_path, 'shakespeare_char')
        url = f"http://127.0.0.1:{server.server_address[1]}/{path}"
        p = prepare(data_dir, f"--url={url}", check=False)
        server.shutdown()
    last = error_line(p, f"could not download {url}")
    assert phrase in last and f"put the file at {data_dir / 'input.txt'} by hand" in last
    assert [f.name for f in data_dir.iterdir()] == ['prepare.py']  # no truncated input.txt, no temporary file


@pytest.mark.parametrize('name', ['shakespeare_char', 'shakespeare'])
@pytest.mark.parametrize('content, message', [(b'', 'input.txt is empty'),
                                              (b'To be, or not to be\n', f"at least {MIN_SPLIT_TOKENS:,} are needed"),
                                              (b'caf\xe9 ' * 4000, 'input.txt is not UTF-8 text (byte 0xe9 at offset 3)')])
def test_bad_input_is_an_error(tmp_path, request, name, content, message):
    if name == 'shakespeare' and b'To be' in content:
        request.getfixturevalue('gpt2')  # the size is counted in GPT-2 tokens
    data_dir = copy_prepare(tmp_path, name)
    (data_dir / 'input.txt').write_bytes(content)
    error_line(prepare(data_dir, check=False), message)
    assert outputs(data_dir) == {}


def test_min_split_size_boundary(tmp_path):
    """ 90/10 of 10,240 characters leaves 1,024 for val: one short of a block of 1024 + 1. """
    assert MIN_SPLIT_TOKENS == 1025
    with pytest.raises(ValueError, match='val split would hold 1,024 tokens'):
        write_char_dataset(tmp_path, 'ab' * 5120, 'text')
    assert write_char_dataset(tmp_path, 'ab' * 5125, 'text') == (2, 9225, 1025)


def make_source_tree(root):
    """ .py files the python_char filter keeps, and one of each kind it drops. Returns the kept text. """
    words = tiny_text().split()
    kept = {}
    for i, rel in enumerate(['b/c.py', 'a.py', 'b/a_b.py', 'zz/deep/mod.py']):
        kept[rel] = f"# module {i}\n" + ' '.join(words[i * 700:(i + 1) * 700]) + '\n\tdef f():\n\t    return 1\n'
    dropped = {
        'b/test/test_c.py': 'x = 1\n' * 500,       # test folders
        'tests/t.py': 'x = 1\n' * 500,
        'site-packages/pkg.py': 'x = 1\n' * 500,   # installed packages
        'b/__pycache__/c.py': 'x = 1\n' * 500,
        'big.py': 'x = 1\n' * 5000,                # over max_file_bytes
        'unicode.py': 'name = "caf\u00e9"\n' * 100,  # not ASCII
        'crlf.py': 'x = 1\r\n' * 100,              # control characters besides newline and tab
        'b/notes.txt': 'not python\n' * 500,
    }
    for rel, text in {**kept, **dropped}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(text.encode('utf-8'))
    (root / 'b' / 'gone.py').symlink_to(root / 'b' / 'removed.py')  # a broken symlink: unreadable
    return ''.join(kept[rel] for rel in sorted(kept))


def test_python_char_filter_order_and_split(tmp_path):
    expected = make_source_tree(tmp_path / 'src')
    data_dir = copy_prepare(tmp_path / 'repo', 'python_char')
    out = prepare(data_dir, f"--src_dir={tmp_path / 'src'}", '--max_file_bytes=20000').stdout
    assert 'kept 4 of 8 .py files (1 over 20,000 bytes, 2 not plain ASCII, 1 unreadable)' in out
    n = int(0.9 * len(expected))
    assert decode_chars(data_dir) == [expected[:n], expected[n:]]
    assert read_meta(data_dir)['vocab_size'] == len(set(expected))


def test_python_char_stdlib_is_reproducible(tmp_path):
    data_dir = copy_prepare(tmp_path, 'python_char')
    prepare(data_dir)
    first = outputs(data_dir)
    meta = load_meta(data_dir / 'meta.pkl')
    n_chars = (len(first['train.bin']) + len(first['val.bin'])) // 2
    assert 2_000_000 < n_chars < 20_000_000 and meta['vocab_size'] < 100
    prepare(data_dir)
    assert outputs(data_dir) == first


# -----------------------------------------------------------------------------
# GPT-2 BPE: shakespeare and openwebtext

def test_shakespeare_bpe_round_trip(tmp_path, gpt2):
    enc = gpt2
    text = tiny_text()
    data_dir = copy_prepare(tmp_path, 'shakespeare')
    (data_dir / 'input.txt').write_text(text)
    out = prepare(data_dir).stdout
    n = int(0.9 * len(text))
    train, val = (open_tokens(data_dir, split, vocab_size=enc.n_vocab) for split in ('train', 'val'))
    assert train.dtype == np.uint16 and not (data_dir / 'meta.pkl').exists()
    assert enc.decode(train.tolist()) == text[:n] and enc.decode(val.tolist()) == text[n:]
    assert f"train has {len(train):,} tokens" in out and f"val has {len(val):,} tokens" in out


def split_documents(ids, eot):
    """ The documents of a token stream whose every document ends with eot. """
    assert len(ids) and ids[-1] == eot
    ends = np.flatnonzero(ids == eot)
    return [ids[start + 1:end] for start, end in zip(np.r_[-1, ends[:-1]], ends)]


def test_openwebtext_local_text_files(tmp_path, gpt2):
    enc = gpt2
    words = tiny_text().split()
    rng = np.random.default_rng(0)
    docs = [' '.join(rng.choice(words, rng.integers(200, 600))) + '\n' for _ in range(120)]
    (tmp_path / 'docs').mkdir()
    for i, doc in enumerate(docs):
        (tmp_path / 'docs' / f"{i:03d}.txt").write_text(doc)
    data_dir = copy_prepare(tmp_path / 'repo', 'openwebtext')
    args = ['--dataset=text', f"--data_files={tmp_path / 'docs' / '*.txt'}", '--val_size=0.05', '--num_proc=2',
            '--out_dataset=openwebtext']
    env = {'HF_DATASETS_CACHE': str(tmp_path / 'hf_cache')}
    out = prepare(data_dir, *args, env=env).stdout
    got = {split: [enc.decode(d.tolist()) for d in split_documents(open_tokens(data_dir, split), enc.eot_token)]
           for split in ('train', 'val')}
    assert len(got['val']) == math.ceil(0.05 * len(docs)) and len(got['train']) == len(docs) - len(got['val'])
    assert sorted(got['train'] + got['val']) == sorted(docs)
    n_train = os.path.getsize(data_dir / 'train.bin') // 2
    assert f"train has {n_train:,} tokens ({len(got['train'])} documents)" in out
    first = outputs(data_dir)
    assert sorted(first) == ['train.bin', 'val.bin']
    prepare(data_dir, *args, env={'HF_DATASETS_CACHE': str(tmp_path / 'hf_cache2')})  # from scratch again
    assert outputs(data_dir) == first


def test_openwebtext_offline_hub_fails_at_once(tmp_path):
    """ Without network (the hub's address: a closed local port) and without HF_HUB_OFFLINE: one line, no retries. """
    data_dir = copy_prepare(tmp_path, 'openwebtext')
    env = {'HF_HUB_OFFLINE': '', 'HF_ENDPOINT': closed_port_url(), 'HF_HOME': str(tmp_path / 'hf'),
           'HF_DATASETS_CACHE': str(tmp_path / 'hf_cache')}
    p = prepare(data_dir, check=False, env=env)
    assert p.returncode != 0 and 'Retrying' not in p.stdout + p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: could not load dataset 'openwebtext'")
    assert outputs(data_dir) == {}


@pytest.mark.parametrize('args, message', [
    ((), "error: could not load dataset 'openwebtext' (ConnectionError"),
    (('--dataset=json', '--data_files=/nonexistent/*.jsonl'), "error: no file matches data_files='/nonexistent/*.jsonl'"),
    (('--dataset=json', '--out_dataset=mine'), "error: dataset='json' reads local files: name them with --data_files"),
    (('--val_size=899',), "error: val_size=899.0 is the fraction of the documents held out for val: pick one between 0"),
])
def test_openwebtext_load_errors_are_clear(tmp_path, args, message):
    data_dir = copy_prepare(tmp_path, 'openwebtext')
    env = {'HF_HUB_OFFLINE': '1', 'HF_DATASETS_CACHE': str(tmp_path / 'hf_cache')}
    p = prepare(data_dir, *args, check=False, env=env)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(message)
    if not args:  # the way out without network
        assert "--dataset=json --data_files='/path/*.jsonl'" in last
    assert outputs(data_dir) == {}


def test_openwebtext_one_document_is_too_few(tmp_path):
    """ One text file read whole is one document: no val split to hold out, which the error says, with the way out. """
    data_dir = copy_prepare(tmp_path, 'openwebtext')
    (tmp_path / 'one.txt').write_text(tiny_text())
    p = prepare(data_dir, '--dataset=text', f"--data_files={tmp_path / 'one.txt'}", '--out_dataset=mine', check=False,
                env={'HF_DATASETS_CACHE': str(tmp_path / 'hf_cache')})
    error_line(p, "dataset 'text' has 1 document, too few to split into train and val: point --data_files at more, or "
                  "cut a file into paragraphs or lines with --sample_by")


# -----------------------------------------------------------------------------
# a BPE trained on the corpus: shakespeare_bpe, and openwebtext's --tokenizer=bpe on one's own documents

def test_shakespeare_bpe_round_trip_and_rerun(tmp_path):
    from tokenizer import load_tokenizer, train_bpe
    text = tiny_text() + ' café €5 😀\n' * 50  # multi-byte characters too
    data_dir = copy_prepare(tmp_path, 'shakespeare_bpe')
    (data_dir / 'input.txt').write_text(text, encoding='utf-8')
    out = prepare(data_dir, '--vocab_size=400').stdout
    first = outputs(data_dir)
    assert sorted(first) == ['bpe.json', 'meta.pkl', 'train.bin', 'val.bin']
    tok = load_tokenizer(data_dir)
    meta = load_meta(data_dir / 'meta.pkl')
    assert tok.kind == 'bpe' and meta == {'vocab_size': tok.vocab_size, 'tokenizer': 'bpe'} and tok.vocab_size <= 400
    assert sorted(tok.special_tokens.values()) == list(range(tok.vocab_size - 7, tok.vocab_size))
    n = int(0.9 * len(text))
    train, val = (open_tokens(data_dir, split, vocab_size=tok.vocab_size).tolist() for split in ('train', 'val'))
    assert tok.decode(train) == text[:n] and tok.decode(val) == text[n:]
    assert train == tok.encode_ordinary(text[:n])
    # the BPE learns from the train split alone: the val text (with the multi-byte characters) leaks nothing
    assert (data_dir / 'bpe.json').read_bytes() == train_bpe([text[:n]], 400).to_json()
    assert f"train has {len(train):,} tokens" in out and f"val has {len(val):,} tokens" in out
    assert 'encode speed: this BPE' in out and ' MB/s' in out
    prepare(data_dir, '--vocab_size=400')
    assert outputs(data_dir) == first  # same input, same settings: the same bytes


@pytest.mark.parametrize('content, args, message', [
    ('text', ['--vocab_size=262'], "vocab_size=262 is too small: a byte-level BPE holds the 256 bytes and its 7 special tokens"),
    ('', [], "input.txt is empty"),
    (b'caf\xe9 au lait\n' * 1000, [], "input.txt is not UTF-8 text (byte 0xe9 at offset 3)"),
])
def test_shakespeare_bpe_bad_input(tmp_path, content, args, message):
    data_dir = copy_prepare(tmp_path, 'shakespeare_bpe')
    path = data_dir / 'input.txt'
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(tiny_text() if content else '')
    p = prepare(data_dir, *args, check=False)
    assert p.returncode == 1 and 'Traceback' not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and message in last, last
    assert outputs(data_dir) == {}


def test_openwebtext_bpe_on_own_documents(tmp_path):
    from tokenizer import load_tokenizer
    words = tiny_text().split() + ['naïve', 'café', '😀']
    rng = np.random.default_rng(1)
    docs = [' '.join(rng.choice(words, rng.integers(200, 600))) + '\n' for _ in range(60)]
    (tmp_path / 'docs').mkdir()
    for i, doc in enumerate(docs):
        (tmp_path / 'docs' / f"{i:03d}.txt").write_text(doc, encoding='utf-8')
    owt_dir = copy_prepare(tmp_path / 'repo', 'openwebtext')
    args = ['--dataset=text', f"--data_files={tmp_path / 'docs' / '*.txt'}", '--val_size=0.1', '--num_proc=2',
            '--tokenizer=bpe', '--vocab_size=500']
    env = {'HF_DATASETS_CACHE': str(tmp_path / 'hf_cache')}
    p = prepare(owt_dir, *args, env=env, check=False)  # no folder named: OpenWebText's must stay OpenWebText's
    assert p.returncode != 0 and 'name the folder for dataset' in p.stderr.strip().splitlines()[-1]
    out = prepare(owt_dir, *args, '--out_dataset=mine', env=env).stdout
    assert outputs(owt_dir) == {}  # nothing written beside OpenWebText's script
    mine = tmp_path / 'repo' / 'data' / 'mine'
    first = outputs(mine)
    assert sorted(first) == ['bpe.json', 'meta.pkl', 'train.bin', 'val.bin']
    tok = load_tokenizer(mine)
    eot = tok.special_tokens['<|endoftext|>']
    got = [tok.decode(d.tolist()) for split in ('train', 'val') for d in split_documents(open_tokens(mine, split), eot)]
    assert sorted(got) == sorted(docs)
    assert f"trained a BPE of {tok.vocab_size:,} tokens" in out
    prepare(owt_dir, *args, '--out_dataset=mine', env={'HF_DATASETS_CACHE': str(tmp_path / 'hf_cache2')})
    assert outputs(mine) == first


def test_openwebtext_gpt2_over_a_bpe_removes_its_files(tmp_path, gpt2):
    """ GPT-2's tokens into a folder a BPE was prepared in: the BPE's files go, or they would read the new bins. """
    (tmp_path / 'docs').mkdir()
    for i in range(20):
        (tmp_path / 'docs' / f"{i:03d}.txt").write_text(tiny_text(3000 + 100 * i)[100 * i:], encoding='utf-8')
    owt_dir = copy_prepare(tmp_path / 'repo', 'openwebtext')
    args = ['--dataset=text', f"--data_files={tmp_path / 'docs' / '*.txt'}", '--val_size=0.2', '--out_dataset=mine']
    env = {'HF_DATASETS_CACHE': str(tmp_path / 'hf_cache')}
    prepare(owt_dir, *args, '--tokenizer=bpe', '--vocab_size=300', env=env)
    mine = tmp_path / 'repo' / 'data' / 'mine'
    assert sorted(outputs(mine)) == ['bpe.json', 'meta.pkl', 'train.bin', 'val.bin']
    out = prepare(owt_dir, *args, env=env).stdout
    assert sorted(outputs(mine)) == ['train.bin', 'val.bin'] and 'removed' in out
    assert gpt2.decode(open_tokens(mine, 'val').tolist()).count('<|endoftext|>') == 4


@pytest.mark.parametrize('files, args, message', [
    ({'a.txt': b'caf\xe9\n'}, [], "holds a file that is not UTF-8 text"),
    ({'a.txt': b'some text\n'}, ['--vocab_size=100'], "vocab_size=100 is too small"),
    ({'a.txt': b'some text\n'}, ['--tokenizer=sentencepiece'], "unknown tokenizer 'sentencepiece'"),
    ({'a.txt': b'some text\n'}, ['--out_dataset=../elsewhere'], "must be a folder name"),
])
def test_openwebtext_bpe_bad_input(tmp_path, files, args, message):
    (tmp_path / 'docs').mkdir()
    for name, content in files.items():
        (tmp_path / 'docs' / name).write_bytes(content)
    owt_dir = copy_prepare(tmp_path / 'repo', 'openwebtext')
    p = prepare(owt_dir, '--dataset=text', f"--data_files={tmp_path / 'docs' / '*.txt'}", '--tokenizer=bpe',
                '--out_dataset=mine', *args, check=False, env={'HF_DATASETS_CACHE': str(tmp_path / 'hf_cache')})
    assert p.returncode == 1 and 'Traceback' not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and message in last, last
    assert not (tmp_path / 'repo' / 'data' / 'mine').exists()


@pytest.mark.parametrize('tokenizer', ['bpe', 'gpt2'])
def test_openwebtext_null_document_is_one_line(tmp_path, request, tokenizer):
    if tokenizer == 'gpt2':
        request.getfixturevalue('gpt2')  # skips without GPT-2's BPE files
    (tmp_path / 'docs').mkdir()
    records = [{'text': tiny_text(3000)}] * 9 + [{'text': None}]
    (tmp_path / 'docs' / 'a.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
    owt_dir = copy_prepare(tmp_path / 'repo', 'openwebtext')
    p = prepare(owt_dir, '--dataset=json', f"--data_files={tmp_path / 'docs' / 'a.jsonl'}", f'--tokenizer={tokenizer}',
                '--vocab_size=300', '--val_size=0.1', '--out_dataset=mine', check=False,
                env={'HF_DATASETS_CACHE': str(tmp_path / 'hf_cache')})
    error_line(p, "a document's 'text' is None, not text: drop those records")
    mine = tmp_path / 'repo' / 'data' / 'mine'
    assert not mine.exists() or outputs(mine) == {}


def test_write_documents_null_is_a_value_error(tmp_path):
    """ The GPT-2 path's writer on a null document: the ValueError prepare.py prints, checked without GPT-2's
    files through a byte-level tiktoken encoding (write_documents takes any). """
    import tiktoken
    from datasets import Dataset
    enc = tiktoken.Encoding('bytes', pat_str=r'.+', mergeable_ranks={bytes([i]): i for i in range(256)},
                            special_tokens={'<|endoftext|>': 256})
    docs = Dataset.from_dict({'body': ['some text'] * 3 + [None]})
    with open(tmp_path / 'x.bin', 'wb') as f, pytest.raises(ValueError, match="a document's 'body' is None, not text"):
        write_documents(docs, f, 'body', num_threads=1, enc=enc)


# -----------------------------------------------------------------------------
# token storage and meta.pkl

@pytest.mark.parametrize('vocab_size, dtype', [(65536, np.uint16), (65537, np.uint32)])
def test_token_dtype_switch(tmp_path, vocab_size, dtype):
    symbols = [chr(c) for c in range(0x20, 0xD800)] + [chr(c) for c in range(0xE000, 0x110000)]
    symbols = symbols[:vocab_size]
    rng = np.random.default_rng(0)
    text = ''.join(symbols) + ''.join(rng.choice(symbols, 20000))
    write_char_dataset(tmp_path, text, 'synthetic text')
    meta = load_meta(tmp_path / 'meta.pkl')
    assert meta['vocab_size'] == vocab_size and meta.get('dtype', 'uint16') == np.dtype(dtype).name
    train = open_tokens(tmp_path, 'train', meta)
    assert train.dtype == dtype and int(train.max()) == vocab_size - 1
    assert decode_chars(tmp_path) == [text[:len(train)], text[len(train):]]
    if dtype == np.uint32:  # a reader that ignored the recorded dtype would see garbage: it must be an error
        with pytest.raises(ValueError, match='uint16'):
            open_tokens(tmp_path, 'train', {k: v for k, v in meta.items() if k != 'dtype'})


def test_token_files_out_of_range_or_empty(tmp_path):
    # a negative id or one past the dtype would wrap around silently in astype: refused before anything is written
    for ids, bad in [([1, -1, 2], -1), ([0, 65536], 65536)]:
        with pytest.raises(ValueError, match=f"token id {bad} does not fit uint16"):
            write_tokens(tmp_path / 'x.bin', np.array(ids), np.uint16)
        assert not (tmp_path / 'x.bin').exists()
    write_tokens(tmp_path / 'train.bin', np.array([], dtype=np.int64), np.uint16)
    with pytest.raises(ValueError, match=r"train.bin is empty; rerun its prepare.py"):
        open_tokens(tmp_path, 'train', {})
    # an id equal to the vocabulary's size is already outside it
    write_tokens(tmp_path / 'train.bin', np.array([0, 1, 5]), np.uint16)
    with pytest.raises(ValueError, match='holds token id 5 but the vocabulary has 5'):
        open_tokens(tmp_path, 'train', {'vocab_size': 5})
    assert open_tokens(tmp_path, 'train', {'vocab_size': 6}).tolist() == [0, 1, 5]


def test_a_dataset_is_written_all_or_nothing(tmp_path):
    """ write_splits renames its files into place only once all are written: one that fails (a val id past the
    dtype here; a full disk alike) leaves the previous files as they were, no new train.bin beside the old
    vocabulary, and no temporary file. """
    write_splits(tmp_path, {'train': [1, 2, 3], 'val': [4, 5]}, 100, {'vocab_size': 100}, files={'bpe.json': b'old'})
    before = outputs(tmp_path)
    with pytest.raises(ValueError, match="token id 70000 does not fit uint16"):
        write_splits(tmp_path, {'train': [7, 8, 9], 'val': [70000]}, 100, {'vocab_size': 99}, files={'bpe.json': b'new'})
    assert outputs(tmp_path) == before and set(before) == {'train.bin', 'val.bin', 'meta.pkl', 'bpe.json'}
    write_splits(tmp_path, {'train': [7, 8, 9], 'val': [6]}, 100, {'vocab_size': 99}, files={'bpe.json': b'new'})
    assert np.fromfile(tmp_path / 'train.bin', np.uint16).tolist() == [7, 8, 9] and read_meta(tmp_path) == {
        'vocab_size': 99} and (tmp_path / 'bpe.json').read_bytes() == b'new' and len(outputs(tmp_path)) == 4


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_load_meta_refuses_code(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'meta.pkl'
    path.write_bytes(pickle.dumps({'vocab_size': 3, 'itos': {0: 'a'}, 'evil': RunsCode(marker)}))
    with pytest.raises(ValueError, match='not a plain meta.pkl.*posix.system|not a plain meta.pkl.*os.system'):
        load_meta(path)
    assert not marker.exists()
    # the same payload does run when unpickled the ordinary way: the test would notice a loader that ran it
    if sys.platform != 'win32':
        pickle.loads(path.read_bytes())
        assert marker.exists()
