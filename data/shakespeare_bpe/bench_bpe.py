"""
Speed of byte-level BPE training and encoding, measured in one run on the same text with the same split
regex (tokenizer.SPLIT_PATTERN, GPT-4's): Hugging Face `tokenizers` (BpeTrainer) against `rustbpe`
(nanochat's trainer, whose merges load into tiktoken), then the encoding speed per byte of tiktoken's GPT-2,
of tiktoken with the trained merges (what prepare.py encodes with) and of the `tokenizers` model, all on
every core, one document per call. Each trainer runs in its own process, which reports its peak memory.
The text is the .py files of this interpreter's standard library (sorted paths, one document per file) up to
size_mb megabytes, so it runs offline; --source=file.txt measures a text file instead (one document).
$ python data/shakespeare_bpe/bench_bpe.py --size_mb=20 --vocab_size=32768
"""
import multiprocessing
import os
import resource
import sys
import sysconfig

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)
from tokenizer import SPLIT_PATTERN  # noqa: E402

# -----------------------------------------------------------------------------
size_mb = 20.0 # megabytes (1e6) of UTF-8 text to train on
vocab_size = 32768 # merges + 256 bytes
source = '' # a text file to measure instead of the standard library's .py files
repeats = 1 # each timing is the best of this many runs
# -----------------------------------------------------------------------------
exec(open(os.path.join(_ROOT, 'configurator.py')).read()) # overrides from command line or config file

import rustbpe  # noqa: E402
import tiktoken  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from data_io import best_of, gpt2_encoding  # noqa: E402

if source:
    with open(source, encoding='utf-8') as f:
        docs = [f.read()]
else:
    stdlib = sysconfig.get_paths()['stdlib']
    paths = sorted(os.path.join(d, n) for d, _, names in os.walk(stdlib) for n in names if n.endswith('.py'))
    docs, n_bytes = [], 0
    for path in paths:
        try:
            with open(path, encoding='utf-8') as f:
                doc = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        docs.append(doc)
        n_bytes += len(doc.encode('utf-8'))
        if n_bytes >= size_mb * 1e6:
            break
mb = sum(len(d.encode('utf-8')) for d in docs) / 1e6
print(f"{mb:.1f} MB of text in {len(docs):,} documents ({source or 'the standard library'}), vocab_size {vocab_size}, "
      f"{os.cpu_count()} cores")


def train_hf():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior='isolated'),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=0, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer)
    return tok.to_str()


def train_rustbpe():
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter(docs), vocab_size, pattern=SPLIT_PATTERN)
    return [(bytes(b), r) for b, r in tok.get_mergeable_ranks()]


def in_child(train, queue):
    seconds, result = best_of(train, repeats)
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, result))


def measure(train):
    """ (best seconds, peak RSS MB of the process, trained result): each trainer in its own forked process, so
    that the peak memory is its own (over the same ~baseline of this process and the text) """
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    child = ctx.Process(target=in_child, args=(train, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


try:  # before the trainers run: without its BPE files there is nothing to compare the encoding with
    gpt2 = gpt2_encoding()
except OSError as e:
    sys.exit(f"error: {e}")
hf_s, hf_mb, hf_json = measure(train_hf)
rb_s, rb_mb, rb_ranks = measure(train_rustbpe)
hf_tok = Tokenizer.from_str(hf_json)
print(f"train  tokenizers (HF): {hf_s:6.2f} s, peak RSS {hf_mb:6.0f} MB, vocab {hf_tok.get_vocab_size():,}")
print(f"train  rustbpe        : {rb_s:6.2f} s, peak RSS {rb_mb:6.0f} MB, vocab {len(rb_ranks):,}")
print(f"training time rustbpe / tokenizers: {rb_s / hf_s:.2f}")

trained = tiktoken.Encoding('trained', pat_str=SPLIT_PATTERN, special_tokens={},
                            mergeable_ranks=dict(rb_ranks))
rates = {}
for name, encode in [('tiktoken GPT-2', lambda: gpt2.encode_ordinary_batch(docs, num_threads=os.cpu_count())),
                     ('tiktoken, rustbpe merges', lambda: trained.encode_ordinary_batch(docs, num_threads=os.cpu_count())),
                     ('tokenizers (HF), its merges', lambda: [e.ids for e in hf_tok.encode_batch(docs)])]:
    seconds, ids = best_of(encode, repeats)
    rates[name] = mb / seconds
    n_tokens = sum(map(len, ids))
    print(f"encode {name:28}: {seconds:6.2f} s, {mb / seconds:6.2f} MB/s, {n_tokens / (mb * 1e6):.3f} tokens/byte")
print(f"encoding per byte, trained (tiktoken) / GPT-2 (tiktoken): "
      f"{rates['tiktoken, rustbpe merges'] / rates['tiktoken GPT-2']:.2f}")
