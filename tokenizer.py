"""
One tokenizer interface for every script that encodes or decodes text, whatever a dataset was tokenized
with: load_tokenizer(data_dir) returns
- characters, when the dataset's meta.pkl has stoi/itos (read by data_io, which refuses pickled code);
- a byte-level BPE trained on the dataset's own text, when the folder has bpe.json (written by train_bpe's
  tokenizer: JSON, so loading it runs no code);
- else OpenAI's GPT-2 BPE (tiktoken): data_dir None, or a folder with neither (a GPT-2 BPE dataset); a
  folder that doesn't exist is an error, not GPT-2's.
Each has encode(text) (special tokens written in the text become their ids), encode_ordinary(text) (all of
it is text), decode(ids) (ids past the vocabulary, such as GPT-2's padding to 50304, show as <|pad:id|>),
vocab_size, special_tokens ({name: id}), token_bytes (UTF-8 bytes per id, for bits per byte) and to_hf()
(the same tokenizer for Hugging Face transformers).

Special tokens: a trained BPE reserves SPECIAL_TOKENS (the end of a document, and the turns of a chat for
instruction tuning) as its last ids. with_special_tokens(names) appends more to any tokenizer, after its
vocabulary: a dataset's meta.pkl listing names under 'special_tokens' gets them at load time; a model
trained before they were added needs its embedding grown to the new vocab_size.

train_bpe trains with rustbpe (nanochat's trainer), chosen by measurement over Hugging Face `tokenizers`
(data/shakespeare_bpe/readme.md), and encodes with tiktoken, which reads the merges rustbpe makes as they are.
"""

import base64
import json
import os
import re
from itertools import groupby

import numpy as np

from data_io import atomic_open, gpt2_encoding, read_meta

# GPT-4's pre-split regex (rustbpe's and nanochat's default): words with their leading space, numbers of up
# to 3 digits, punctuation runs, newlines apart; merges never cross these pieces
SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
# the end of a document, then the turns of a chat (system, user, assistant), each with a start and an end
SPECIAL_TOKENS = ('<|endoftext|>', '<|system_start|>', '<|system_end|>', '<|user_start|>', '<|user_end|>',
                  '<|assistant_start|>', '<|assistant_end|>')
BPE_FILE = 'bpe.json'
BPE_FORMAT = 'byte-level BPE, tiktoken ranks'
TOKENIZER_FILES = ('meta.pkl', BPE_FILE)  # what load_tokenizer reads in a folder, where there are


class Tokenizer:
    """ What every tokenizer shares: the special tokens (ids after the ordinary ones), decoding ids past the
    vocabulary as <|pad:id|>, and the model check. Subclasses encode and decode the ordinary ids. """
    kind = ''  # 'char', 'bpe' or 'gpt2'

    def __init__(self, n_ordinary, special_tokens, path):
        self.n_ordinary = n_ordinary  # ids 0..n_ordinary-1 are text; the special tokens follow
        self.special_tokens = dict(special_tokens)
        self.path = path  # the file it was loaded from (None: GPT-2 from tiktoken)
        ids = sorted(self.special_tokens.values())
        if ids != list(range(n_ordinary, n_ordinary + len(ids))):
            raise ValueError(f"the special tokens of {path} have ids {ids}, not the ones right after the "
                             f"{n_ordinary} ordinary tokens: rerun the dataset's prepare.py")
        self.special_names = {i: name for name, i in self.special_tokens.items()}
        names = sorted(self.special_tokens, key=len, reverse=True)  # the longest first, where one begins another
        self._special_re = re.compile('(' + '|'.join(map(re.escape, names)) + ')') if names else None

    @property
    def vocab_size(self):
        return self.n_ordinary + len(self.special_tokens)

    def special_id(self, name):
        """ The id of special token `name`, or a ValueError saying how to add it. """
        if name not in self.special_tokens:
            raise ValueError(f"the tokenizer ({self.describe()}) has no special token {name}: add it with "
                             f"with_special_tokens([{name!r}]) and grow the model's embedding to match")
        return self.special_tokens[name]

    def decode(self, ids):
        """ Text of ids: special tokens as their names, ids past the vocabulary as <|pad:id|>. """
        out = []
        for kind, run in groupby(ids, key=lambda i: 0 if i < self.n_ordinary else 1 if i in self.special_names else 2):
            run = list(run)
            out.append(self._decode(run) if kind == 0 else ''.join(
                self.special_names[i] if kind == 1 else f"<|pad:{i}|>" for i in run))
        return ''.join(out)

    def encode(self, text):
        """ Ids of text, where the special tokens' names written in it become their ids. """
        if self._special_re is None:
            return self.encode_ordinary(text)
        ids = []
        for i, part in enumerate(self._special_re.split(text)):
            ids += [self.special_tokens[part]] if i % 2 else self.encode_ordinary(part)
        return ids

    def unknown_characters(self, text):
        """ The characters of text (outside special tokens) that this tokenizer can't encode, sorted. """
        return []

    def token_bytes(self, n=None):
        """ Number of UTF-8 bytes each id 0..n-1 stands for (n: the model's vocab_size, at least this one's):
        special tokens and padding ids stand for no text, 0. """
        n = self.vocab_size if n is None else n
        counts = np.zeros(max(n, self.vocab_size), dtype=np.int64)
        counts[:self.n_ordinary] = self._ordinary_bytes()
        return counts[:n]

    def check_model(self, vocab_size):
        """ ValueError unless a model with this vocab_size reads and writes this tokenizer's ids: the same size
        (GPT-2: up to the next multiple of 64, nanoGPT's padding of 50257 to 50304). """
        top = -(-self.vocab_size // 64) * 64 if self.kind == 'gpt2' else self.vocab_size
        if not self.vocab_size <= vocab_size <= top:
            raise ValueError(f"the model's vocab_size is {vocab_size} but the dataset's tokenizer has "
                             f"{self.vocab_size} tokens ({self.describe()}): the model was trained on other data, or "
                             f"the dataset was prepared again since; use the dataset it was trained on, or retrain")

    def with_special_tokens(self, names):
        """ A copy with the special tokens of `names` it lacks appended after its vocabulary, in that order. """
        new = [name for name in dict.fromkeys(names) if name not in self.special_tokens]
        return self._with({**self.special_tokens, **{name: self.vocab_size + i for i, name in enumerate(new)}})

    def to_hf(self, model_max_length=None):
        """ This tokenizer as a transformers PreTrainedTokenizerFast (for export.py: save_pretrained). """
        from transformers import PreTrainedTokenizerFast
        from tokenizers import AddedToken
        tok = self._hf_tokenizer()
        tok.add_special_tokens([AddedToken(name, special=True, normalized=False)
                                for name, _ in sorted(self.special_tokens.items(), key=lambda kv: kv[1])])
        assert all(tok.token_to_id(name) == i for name, i in self.special_tokens.items())
        eot = '<|endoftext|>' if '<|endoftext|>' in self.special_tokens else None
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eot, bos_token=eot,
                                       **({'model_max_length': model_max_length} if model_max_length else {}))


class CharTokenizer(Tokenizer):
    """ Each character is a token (a dataset's meta.pkl: stoi/itos). """
    kind = 'char'

    def __init__(self, stoi, itos, special_tokens=(), path=None):
        self.stoi, self.itos = stoi, itos
        if sorted(itos) != list(range(len(itos))) or any(stoi.get(ch) != i for i, ch in itos.items()):
            raise ValueError(f"{path}'s stoi and itos are not one vocabulary numbered 0..{len(itos) - 1}: "
                             f"rerun the dataset's prepare.py")
        super().__init__(len(itos), dict(special_tokens), path)

    def describe(self):
        return f"characters, {self.path}"

    def unknown_characters(self, text):
        text = self._special_re.sub('', text) if self._special_re else text
        return sorted(set(text) - set(self.stoi))

    def encode_ordinary(self, text):
        unknown = set(text) - self.stoi.keys()
        if unknown:
            raise ValueError(f"the text has characters not in the vocabulary of {self.path}: "
                             f"{' '.join(map(repr, sorted(unknown)))}; remove them")
        return [self.stoi[c] for c in text]

    def _decode(self, ids):
        return ''.join(self.itos[i] for i in ids)

    def _ordinary_bytes(self):
        return [len(self.itos[i].encode('utf-8')) for i in range(self.n_ordinary)]

    def _with(self, special_tokens):
        return CharTokenizer(self.stoi, self.itos, special_tokens, self.path)

    def _hf_tokenizer(self):
        from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers
        tok = HFTokenizer(models.WordLevel(vocab={ch: i for i, ch in self.itos.items()}, unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r'[\s\S]'), behavior='isolated')  # every character a piece
        tok.decoder = decoders.Fuse()  # joined without spaces between
        return tok


class BPETokenizer(Tokenizer):
    """ Byte-level BPE on tiktoken: GPT-2's (kind 'gpt2') or one trained on the dataset (kind 'bpe'). """

    def __init__(self, enc, kind, path=None):
        self.enc, self.kind = enc, kind
        specials = enc._special_tokens  # tiktoken's documented way to extend an encoding reads these
        super().__init__(enc.n_vocab - len(specials), specials, path)

    def describe(self):
        return "GPT-2's BPE" if self.kind == 'gpt2' else f"a BPE trained on the dataset, {self.path}"

    def encode(self, text):
        return self.enc.encode(text, allowed_special='all')

    def encode_ordinary(self, text):
        return self.enc.encode_ordinary(text)

    def _decode(self, ids):
        return self.enc.decode(ids)

    def _ordinary_bytes(self):
        return [len(self.enc.decode_single_token_bytes(i)) for i in range(self.n_ordinary)]

    def _with(self, special_tokens):
        enc = bpe_encoding(self.enc._mergeable_ranks, special_tokens, self.enc._pat_str, self.enc.name)
        return BPETokenizer(enc, self.kind, self.path)

    def _hf_tokenizer(self):
        # transformers' own tiktoken converter: every split of a token into two tokens becomes a merge at that
        # token's rank, which makes Hugging Face's BPE merge exactly as tiktoken does
        from transformers.convert_slow_tokenizer import TikTokenConverter

        class FromRanks(TikTokenConverter):
            def load_tiktoken_bpe(_, url):
                return self.enc._mergeable_ranks
        return FromRanks(pattern=self.enc._pat_str).converted()

    def to_json(self):
        """ The tokenizer as JSON bytes: the split regex, each token's bytes (base64, in rank order) and the
        special tokens. """
        ranks = sorted(self.enc._mergeable_ranks.items(), key=lambda kv: kv[1])
        data = {'format': BPE_FORMAT, 'pattern': self.enc._pat_str,
                'ranks': [base64.b64encode(token).decode('ascii') for token, _ in ranks],
                'special_tokens': self.special_tokens}
        return json.dumps(data, indent=1).encode('ascii')

    def save(self, path):
        """ Write to_json() to path, atomically. """
        with atomic_open(path) as f:
            f.write(self.to_json())
        self.path = path


class TextStream:
    """ Text shown as its tokens come: add() returns what the decode of all the ids so far adds, less a trailing
    character that a later token may still complete (a BPE token can end inside a multi-byte character), so
    that the pieces add up to the final decode exactly. """

    def __init__(self, tok, ids=()):
        self.tok, self.ids, self.shown = tok, list(ids), ''

    def add(self, *ids, final=False):
        self.ids += ids
        text = self.tok.decode(self.ids)
        text = text if final else text.rstrip('\ufffd')  # U+FFFD: what an incomplete character decodes to
        piece, self.shown = text[len(self.shown):], text
        return piece


def bpe_encoding(ranks, special_tokens, pattern=SPLIT_PATTERN, name='bpe'):
    import tiktoken
    return tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_tokens)


def load_bpe(path):
    """ The trained BPE saved at path, or a ValueError naming what is wrong with the file. """
    try:
        with open(path, 'rb') as f:
            data = json.loads(f.read())
        ranks = {base64.b64decode(token, validate=True): rank for rank, token in enumerate(data['ranks'])}
        for bad, why in [(data['format'] != BPE_FORMAT, f"its format is {data['format']!r}"),
                         (len(ranks) != len(data['ranks']), "a token appears twice"),
                         (any(ranks.get(bytes([b])) != b for b in range(256)), "ranks 0..255 are not the 256 bytes")]:
            if bad:
                raise ValueError(why)
        specials = {str(name): int(i) for name, i in data['special_tokens'].items()}
        enc = bpe_encoding(ranks, specials, str(data['pattern']))
    except FileNotFoundError:
        raise ValueError(f"the tokenizer file {path} is missing: restore it or rerun the dataset's prepare.py") \
            from None
    except Exception as e:  # not JSON, missing keys, bad base64, a regex tiktoken rejects...
        raise ValueError(f"{path} is not a tokenizer file this code wrote ({type(e).__name__}: {str(e)[:200]!r}); "
                         f"restore it or rerun the dataset's prepare.py") from None
    return BPETokenizer(enc, 'bpe', path)


def check_vocab_size(vocab_size):
    """ ValueError unless a byte-level BPE of vocab_size tokens has room for the 256 bytes and SPECIAL_TOKENS. """
    least = 256 + len(SPECIAL_TOKENS)
    if vocab_size < least:
        raise ValueError(f"vocab_size={vocab_size} is too small: a byte-level BPE holds the 256 bytes and its "
                         f"{len(SPECIAL_TOKENS)} special tokens, so use at least {least}")


def train_bpe(texts, vocab_size):
    """ A byte-level BPE of vocab_size tokens trained on the strings of the iterable texts: the 256 bytes,
    vocab_size - 256 - len(SPECIAL_TOKENS) merges, then the special tokens. A text with fewer distinct pairs
    to merge gives a smaller vocabulary (say so to the user: vocab_size tells). """
    check_vocab_size(vocab_size)
    try:
        import rustbpe
    except ImportError:
        raise OSError("training a BPE needs the rustbpe package: pip install rustbpe (requirements.txt)") from None
    n_chars = 0

    def counted(texts):
        nonlocal n_chars
        for text in texts:
            n_chars += len(text)
            yield text
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(counted(texts), vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    if n_chars == 0:
        raise ValueError("there is no text to train the BPE on (the corpus is empty): give it some text")
    ranks = {bytes(token): rank for token, rank in trainer.get_mergeable_ranks()}
    return BPETokenizer(bpe_encoding(ranks, {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}), 'bpe')


def gpt2_tokenizer():
    return BPETokenizer(gpt2_encoding(), 'gpt2')


def load_tokenizer(data_dir=None):
    """ The tokenizer of the dataset folder data_dir (characters, a trained BPE, else GPT-2's BPE), with
    the extra special tokens its meta.pkl lists; data_dir None (a model without a dataset): GPT-2's. A data_dir
    that doesn't exist is a FileNotFoundError: a mistyped name would otherwise read ids as GPT-2's. """
    if data_dir and not os.path.isdir(data_dir):
        raise FileNotFoundError(f"dataset folder {data_dir} not found: check its name, or prepare that dataset first")
    meta = read_meta(data_dir) if data_dir else {}
    bpe_path = os.path.join(data_dir, BPE_FILE) if data_dir else None
    if 'stoi' in meta and 'itos' in meta:
        tok = CharTokenizer(meta['stoi'], meta['itos'], path=os.path.join(data_dir, 'meta.pkl'))
    elif bpe_path and (os.path.exists(bpe_path) or meta.get('tokenizer') == 'bpe'):
        if not os.path.exists(bpe_path):
            raise ValueError(f"{data_dir}/meta.pkl says the dataset was tokenized with a trained BPE, but "
                             f"{bpe_path} is missing: restore it or rerun the dataset's prepare.py")
        tok = load_bpe(bpe_path)
    else:
        tok = gpt2_tokenizer()
    return tok.with_special_tokens(meta['special_tokens']) if meta.get('special_tokens') else tok
