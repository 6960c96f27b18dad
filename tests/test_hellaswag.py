"""hellaswag.py and eval_hellaswag.py guard: each item's acc and acc_norm choices equal an independent
computation of the same definition with Hugging Face's GPT2LMHeadModel on the same weights (one
unpadded row at a time), also for contexts and endings longer than the model's block_size (cropped
from the left); ties go to the lowest index; rank-sharded counts add up to the whole; the script's
printed line matches the reference; endings are scored with their leading space; a special token's name in an item is text; --max_items scores the first
items; the note counts exactly the items cropped; bad data and unusable models (another tokenizer's) fail with one
clear line."""

import json
import os
import re
import subprocess
import sys
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import hellaswag
from conftest import ROOT, error_line, make_char_dataset, run_script, save_checkpoint, tiny_gpt, tiny_text, write_jsonl
from data_io import write_tokens
from model import GPT, GPTConfig
from tokenizer import CharTokenizer

V = 50257


@pytest.fixture(scope='module')
def models(hf_gpt2_dir):
    """ (our GPT, HF's GPT2LMHeadModel) with the same random weights, block_size 64. """
    from transformers import GPT2LMHeadModel
    hf = GPT2LMHeadModel.from_pretrained(hf_gpt2_dir).eval()
    return GPT.from_pretrained(str(hf_gpt2_dir)).eval(), hf


@torch.no_grad()
def reference_choice(hf, item):
    """ (argmin of summed loss, argmin of mean loss) over the ending tokens, HF's model, row by row. """
    ctx, endings, _ = item
    n_pos = hf.config.n_positions
    sums, means = [], []
    for ending in endings:
        row = (ctx + ending)[-(n_pos + 1):]  # the model reads row[:-1]: at most n_positions tokens
        logits = hf(torch.tensor([row[:-1]])).logits[0]
        losses = F.cross_entropy(logits, torch.tensor(row[1:]), reduction='none')
        scored = losses[-min(len(ending), len(row) - 1):]  # the ending's tokens (all that fit)
        sums.append(scored.sum().item())
        means.append(scored.mean().item())
    return min(range(4), key=sums.__getitem__), min(range(4), key=means.__getitem__)


def choices(model, item):
    """ The endings score_items picks for acc and acc_norm, found by trying each label. """
    picks = [hellaswag.score_items(model, [(item[0], item[1], label)], nullcontext(), 'cpu')[:2]
             for label in range(4)]
    return tuple(next(i for i in range(4) if picks[i][m]) for m in (0, 1))


def random_items(n, seed, ctx_len=(3, 30), end_len=(1, 12)):
    g = torch.Generator().manual_seed(seed)
    rand = lambda lo, hi: torch.randint(lo, hi + 1, (), generator=g).item()
    tokens = lambda k: torch.randint(V, (k,), generator=g).tolist()
    return [(tokens(rand(*ctx_len)), [tokens(rand(*end_len)) for _ in range(4)], rand(0, 3)) for _ in range(n)]


def test_choices_match_hf(models):
    model, hf = models
    items = random_items(12, seed=0)
    got = [choices(model, item) for item in items]
    assert got == [reference_choice(hf, item) for item in items]
    assert len(set(got)) > 2  # the endings picked vary: a constant answer would not be a test
    n_correct, n_correct_norm, n = hellaswag.score_items(model, items, nullcontext(), 'cpu')
    assert (n_correct, n_correct_norm, n) == (sum(g[0] == it[2] for g, it in zip(got, items)),
                                              sum(g[1] == it[2] for g, it in zip(got, items)), 12)


def test_long_contexts_and_endings_are_cropped_from_the_left(models):
    model, hf = models  # block_size 64
    items = random_items(4, seed=1, ctx_len=(60, 150), end_len=(2, 10))  # context + ending > 65 tokens
    items += random_items(2, seed=2, ctx_len=(5, 10), end_len=(66, 80))  # an ending alone > block_size
    assert hellaswag.n_cropped(items, 64) == 6
    assert [choices(model, item) for item in items] == [reference_choice(hf, item) for item in items]


def test_rank_shards_add_up(models):
    model, _ = models
    items = random_items(7, seed=3)
    whole = hellaswag.score_items(model, items, nullcontext(), 'cpu')
    shards = [hellaswag.score_items(model, items, nullcontext(), 'cpu', rank=r, world_size=3) for r in range(3)]
    assert [s[2] for s in shards] == [3, 2, 2]
    assert tuple(map(sum, zip(*shards))) == whole


def test_ties_go_to_the_lowest_index():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=1, n_head=1, n_embd=8)).eval()
    torch.nn.init.zeros_(model.lm_head.weight)  # every logit 0: each token's loss is ln V, exactly
    same_len = ([1, 2, 3], [[4, 5], [6, 7], [8, 9], [10, 11]])
    assert choices(model, same_len + (0,)) == (0, 0)  # all four tie in both metrics
    shortest_twice = ([1, 2, 3], [[4, 5, 6], [7, 8], [9, 10], [11, 12]])
    assert choices(model, shortest_twice + (0,))[0] == 1  # summed loss: 1, 2 and 3 tie, 1 wins
    assert model.training is False


def test_score_items_restores_training_mode(models):
    model, _ = models
    model.train()
    hellaswag.score_items(model, random_items(1, seed=4), nullcontext(), 'cpu')
    assert model.training
    model.eval()


ITEM = dict(ind=0, activity_label='Cooking', ctx_a='A man pours flour into a bowl.', ctx_b='he',
            ctx='A man pours flour into a bowl. he', split='val', split_type='indomain', source_id='x',
            endings=['adds two eggs and stirs.', 'jumps into the pool.', 'plays the violin loudly.',
                     'paints the bowl blue and red.'], label=0)


NO_LABEL = {k: v for k, v in ITEM.items() if k != 'label'}


@pytest.mark.parametrize('line, phrase', [
    ('{"ctx": "a man", "endings": [', 'is not valid JSON'),
    (json.dumps(NO_LABEL), 'has no label'),
    (json.dumps(dict(ITEM, endings=['a', '', 'b', 'c'])), 'ending 1 is empty'),
    (json.dumps(dict(ITEM, endings=['a', 'b', 'c'])), 'endings must be a list of 4 strings'),
    (json.dumps(dict(ITEM, label=4)), 'label must be an int 0-3'),
    (json.dumps(dict(ITEM, ctx=' ')), 'has no ctx'),
])
def test_bad_lines_are_named(tmp_path, line, phrase):
    path = tmp_path / 'bad.jsonl'
    path.write_text(json.dumps(ITEM) + '\n\n' + line + '\n' + json.dumps(ITEM) + '\n')  # blank line 2
    with pytest.raises(ValueError, match=f"line 3 of {re.escape(str(path))}.*{re.escape(phrase)}"):
        hellaswag.load_items(path)


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / 'latin1.jsonl'
    path.write_bytes(json.dumps(dict(ITEM, ctx='a caf\u00e9'), ensure_ascii=False).encode('latin-1') + b'\n')
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} is not UTF-8 text"):
        hellaswag.load_items(path)


def test_an_ending_is_scored_with_its_leading_space():
    """ The context ends without a space and each ending is tokenized as ' ' + ending, as in GPT-2's evaluation. """
    class Ords:  # one token per character: its code point
        def encode_ordinary(self, text):
            return [ord(c) for c in text]
    (ctx, endings, label), = hellaswag.tokenize_items([dict(ctx='A man', endings=['sits.', 'b', 'c d', 'e'],
                                                            label=2)], Ords())
    assert ctx == [65, 32, 109, 97, 110] and label == 2
    assert endings == [[32, 115, 105, 116, 115, 46], [32, 98], [32, 99, 32, 100], [32, 101]]


def test_ending_empty_after_tokenization():
    class DropsSpaces:  # an encoder that yields no tokens for whitespace
        def encode_ordinary(self, text):
            return [ord(c) for c in text if not c.isspace()]
    items = [dict(ITEM, endings=['a', 'b', ' ', 'c'])]
    with pytest.raises(ValueError, match='item 1 has an empty context or an ending that is empty after tokenization'):
        hellaswag.tokenize_items(items, DropsSpaces())


def test_a_special_tokens_name_in_the_text_is_text(gpt2):
    items = [dict(ITEM, ctx='The end.<|endoftext|> Then')]
    (ctx, endings, _), = hellaswag.tokenize_items(items, gpt2)
    assert ctx == gpt2.encode_ordinary('The end.<|endoftext|> Then') and 50256 not in ctx


def test_models_of_other_tokenizers_are_refused():
    model = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match="vocab_size is 65, HellaSwag is scored in GPT-2's"):
        hellaswag.score_items(model, random_items(1, seed=5), nullcontext(), 'cpu')
    # as large a vocabulary as GPT-2's, but the dataset's tokenizer is another: its name is the reason
    big = GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=1, n_head=1, n_embd=8))
    chars = CharTokenizer({'a': 0}, {0: 'a'}, path='data/x/meta.pkl')
    with pytest.raises(ValueError, match="the model reads characters, data/x/meta.pkl tokens"):
        hellaswag.check_model(big, chars)
    hellaswag.check_model(big, None)  # no dataset known: the vocabulary is all there is to check


def test_script_bad_line_is_one_error_line(tmp_path, hf_gpt2_dir):
    path = tmp_path / 'bad.jsonl'
    path.write_text(json.dumps(ITEM) + '\n' + 'not json\n')
    p = run_script('eval_hellaswag.py', f'--init_from={hf_gpt2_dir}', f'--data_file={path}', '--device=cpu',
                   cwd=tmp_path, check=False)
    assert p.returncode == 1
    assert p.stderr.strip().startswith('error: line 2 of') and len(p.stderr.strip().splitlines()) == 1


def made_up_items():
    """ 7 items in HellaSwag's JSONL shape; the last one's context is longer than 64 tokens. """
    words = 'the cat sat on a mat and then it ran to the door before the dog could bark at it'.split()
    raw = [dict(ITEM, ind=i, label=i % 4, ctx=' '.join(words[i:] + words[:i]).capitalize() + '.',
                endings=[' '.join(words[j:j + 2 + (i + j) % 5]) + '.' for j in range(4)]) for i in range(6)]
    return raw + [dict(ITEM, ind=6, label=2, ctx=' '.join(words * 4))]


def test_script_matches_hf(tmp_path, hf_gpt2_dir, models, gpt2):
    enc = gpt2
    _, hf = models
    raw = made_up_items()
    items = hellaswag.tokenize_items(raw, enc)
    ref = [reference_choice(hf, item) for item in items]
    acc = sum(r[0] == it[2] for r, it in zip(ref, items)) / len(items)
    acc_norm = sum(r[1] == it[2] for r, it in zip(ref, items)) / len(items)
    path = write_jsonl(tmp_path / 'val.jsonl', raw)
    p = run_script('eval_hellaswag.py', f'--init_from={hf_gpt2_dir}', f'--data_file={path}', '--device=cpu',
                   '--dtype=float32', cwd=tmp_path)
    m = re.search(r'hellaswag: (\d+) items, acc ([\d.]+), acc_norm ([\d.]+), ([\d.]+) items/s', p.stdout)
    assert m, p.stdout
    assert (int(m[1]), m[2], m[3]) == (7, f"{acc:.4f}", f"{acc_norm:.4f}")
    assert 'note: 1 items are longer than block_size=64' in p.stdout


@pytest.mark.slow
def test_a_compiler_that_fails_falls_back_to_eager(tmp_path, hf_gpt2_dir, gpt2):
    """ --compile=True where the compiler fails (no working C++ compiler): a warning, then the eager scores. """
    path = write_jsonl(tmp_path / 'val.jsonl', made_up_items())
    args = [f'--init_from={hf_gpt2_dir}', f'--data_file={path}', '--device=cpu', '--dtype=float32']
    eager = run_script('eval_hellaswag.py', *args, cwd=tmp_path)
    fallen = run_script('eval_hellaswag.py', *args, '--compile=True', cwd=tmp_path, env={'CXX': '/bin/false'})
    assert 'warning: torch.compile failed, running without it' in fallen.stdout
    assert scores(fallen.stdout) == scores(eager.stdout) and len(scores(eager.stdout)) == 1


def scores(out):
    return re.findall(r'^hellaswag: (\d+) items, acc ([\d.]+), acc_norm ([\d.]+)', out, re.M)


@pytest.mark.slow
def test_train_py_scores_like_the_script(tmp_path, hf_gpt2_dir, gpt2):
    """ train.py's periodic score equals eval_hellaswag.py's on the checkpoint it saved, in one process and
    under torchrun, where each of 2 ranks scores its share and the counts are summed. """
    ids = np.array(gpt2.encode_ordinary(tiny_text()[:20000]), dtype=np.uint16)
    (tmp_path / 'data' / 'bpe').mkdir(parents=True)
    write_tokens(tmp_path / 'data' / 'bpe' / 'train.bin', ids[:4000], np.uint16)
    write_tokens(tmp_path / 'data' / 'bpe' / 'val.bin', ids[4000:], np.uint16)
    path = write_jsonl(tmp_path / 'val.jsonl', made_up_items())
    args = ['--dataset=bpe', f'--init_from={hf_gpt2_dir}', '--device=cpu', '--dtype=float32', '--compile=False',
            '--block_size=32', '--batch_size=2', '--gradient_accumulation_steps=2', '--max_iters=2',
            '--eval_interval=2', '--eval_iters=1', '--hellaswag_interval=2', f'--hellaswag_file={path}']
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
    for name, launch in [('single', [sys.executable]),
                         ('ddp', [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2'])]:
        p = subprocess.run([*launch, str(ROOT / 'train.py'), *args, f'--out_dir={name}'], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        during = scores(p.stdout)
        assert len(during) == 2 and during[0][0] == '7'  # at step 0 and step 2, on rank 0 only
        q = run_script('eval_hellaswag.py', '--init_from=resume', f'--out_dir={name}', f'--data_file={path}',
                       '--device=cpu', '--dtype=float32', cwd=tmp_path)
        assert scores(q.stdout) == during[1:], name


def test_script_scores_the_first_max_items(tmp_path, hf_gpt2_dir, models, gpt2):
    """ --max_items=3: the first 3 items only, scored as the reference scores them (the long 7th is not read). """
    _, hf = models
    raw = made_up_items()
    items = hellaswag.tokenize_items(raw[:3], gpt2)
    ref = [reference_choice(hf, item) for item in items]
    acc = sum(r[0] == it[2] for r, it in zip(ref, items)) / 3
    acc_norm = sum(r[1] == it[2] for r, it in zip(ref, items)) / 3
    path = write_jsonl(tmp_path / 'val.jsonl', raw)
    p = run_script('eval_hellaswag.py', f'--init_from={hf_gpt2_dir}', f'--data_file={path}', '--device=cpu',
                   '--dtype=float32', '--max_items=3', cwd=tmp_path)
    assert scores(p.stdout) == [('3', f"{acc:.4f}", f"{acc_norm:.4f}")]
    assert 'longer than block_size' not in p.stdout


def test_script_refuses_a_checkpoint_of_another_tokenizer_with_gpt2s_vocab_size(tmp_path, gpt2):
    """ A train.py checkpoint whose dataset is character-level but whose vocab_size is as large as GPT-2's: the
    script reads the run's dataset's tokenizer and refuses it, naming it, rather than scoring GPT-2 ids through it. """
    make_char_dataset(tmp_path / 'data' / 'tiny_char')
    save_checkpoint(tmp_path / 'out', tiny_gpt(vocab_size=V, block_size=64, n_layer=1, n_head=1, n_embd=8), 'tiny_char')
    path = write_jsonl(tmp_path / 'val.jsonl', made_up_items()[:2])
    p = run_script('eval_hellaswag.py', '--init_from=resume', '--out_dir=out', f'--data_file={path}', '--device=cpu',
                   '--dtype=float32', cwd=tmp_path, check=False)
    error_line(p, "the model reads characters, data/tiny_char/meta.pkl tokens; HellaSwag is scored in GPT-2's BPE")


def test_script_notes_exactly_the_items_it_crops(tmp_path, hf_gpt2_dir, gpt2):
    """ A row (context + ending) of block_size + 1 tokens fits whole (the model reads all but its last token); one
    token more and its context is cropped: the note counts that item only. """
    def item_of(n_tokens):  # ITEM's endings after a context of 'The the the ...', n_tokens in its longest row
        for k in range(100):
            raw = dict(ITEM, ctx='The' + ' the' * k)
            (ctx, endings, _), = hellaswag.tokenize_items([raw], gpt2)
            if len(ctx) + max(map(len, endings)) == n_tokens:
                return raw
        raise AssertionError(n_tokens)
    path = write_jsonl(tmp_path / 'val.jsonl', [item_of(65), item_of(66)])  # hf_gpt2_dir's block_size is 64
    p = run_script('eval_hellaswag.py', f'--init_from={hf_gpt2_dir}', f'--data_file={path}', '--device=cpu',
                   '--dtype=float32', cwd=tmp_path)
    assert 'note: 1 items are longer than block_size=64' in p.stdout and len(scores(p.stdout)) == 1
