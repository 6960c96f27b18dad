"""tokenizer.py and what it feeds: decode(encode(text)) == text for characters, a trained BPE and GPT-2's BPE on
text with newlines, unicode and special tokens; load_tokenizer picks each from a dataset folder (and adds the
special tokens meta.pkl lists); the trained BPE is the same bytes for the same text, its file runs no code and
a missing or corrupt one is a one-line error; train.py's val bpb equals a hand computation (the loss of a
single eval window over the UTF-8 bytes of its targets) and is '-' with a note when GPT-2's files can't be had;
sample.py samples through a trained BPE and refuses a checkpoint of another vocabulary; export.py writes a
tokenizer that AutoTokenizer encodes with exactly as ours, and that pipeline('text-generation') generates with, and
sample.py --init_from=<the export> samples what it samples from the checkpoint; a trained-BPE base model, whose BPE
reserves the chat's tokens, gets no chat template, and chat.py refuses it."""

import json
import math
import os
import pickle

import numpy as np
import pytest
import torch

from conftest import (closed_port_url, error_line, load, make_char_dataset, run_script, save_checkpoint, step_bpb,
                      step_losses, tiny_gpt, tiny_text)
from data_io import save_meta, write_splits, write_tokens
from runtime import model_from_checkpoint
from tokenizer import (BPE_FILE, SPECIAL_TOKENS, CharTokenizer, load_bpe, load_tokenizer, train_bpe)

# newlines (several, \r\n, trailing spaces), accents, CJK, an emoji, digits, and special tokens among the text
TRICKY = ("ROMEO:\nBut soft!  what light\r\n\n\n  through yonder   \n\tcafé naïve 日本語 😀 12345, 'tis\n"
          "<|endoftext|>JULIET:<|user_start|> hi<|user_end|><|assistant_start|>yes<|assistant_end|>  \n")


def make_bpe_dataset(data_dir, text=None, vocab_size=400):
    """ A trained-BPE dataset as shakespeare_bpe writes it: bpe.json, meta.pkl, 90/10 bins. Returns the tokenizer. """
    text = text or tiny_text()
    n = int(0.9 * len(text))
    tok = train_bpe([text[:n]], vocab_size)
    os.makedirs(data_dir, exist_ok=True)
    tok.save(os.path.join(data_dir, BPE_FILE))
    write_splits(data_dir, {'train': tok.encode_ordinary(text[:n]), 'val': tok.encode_ordinary(text[n:])},
                 tok.vocab_size, {'vocab_size': tok.vocab_size, 'tokenizer': 'bpe'})
    return load_tokenizer(data_dir)


@pytest.fixture(scope='module')
def bpe(tmp_path_factory):
    """ A BPE trained on tiny text with the tricky characters in it, loaded back from its folder. """
    return make_bpe_dataset(tmp_path_factory.mktemp('bpe') / 'data' / 'tiny_bpe', tiny_text() + TRICKY * 20)


def char_tokenizer(text):
    chars = sorted(set(text))
    return CharTokenizer({ch: i for i, ch in enumerate(chars)}, {i: ch for i, ch in enumerate(chars)}, path='meta.pkl')


# -----------------------------------------------------------------------------
# the interface

def check_round_trip(tok, text=TRICKY):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    for name in ('<|endoftext|>', '<|user_start|>', '<|assistant_end|>'):
        if name in tok.special_tokens:
            assert ids.count(tok.special_id(name)) == text.count(name)  # a special token is its one id
    assert all(0 <= i < tok.vocab_size for i in ids)
    return ids


def test_round_trip_characters():
    plain = char_tokenizer(TRICKY.replace('<|', '').replace('|>', '') + '<|>')
    tok = plain.with_special_tokens(SPECIAL_TOKENS)
    assert tok.vocab_size == plain.vocab_size + 7 and tok.special_id('<|endoftext|>') == plain.vocab_size
    ids = check_round_trip(tok)
    assert ids[:6] == [plain.stoi[c] for c in 'ROMEO:']
    assert plain.decode(plain.encode(TRICKY)) == TRICKY  # without specials, their names are characters
    assert len(plain.encode(TRICKY)) == len(TRICKY)


def test_round_trip_trained_bpe(bpe):
    ids = check_round_trip(bpe)
    assert bpe.kind == 'bpe' and list(bpe.special_tokens) == list(SPECIAL_TOKENS)
    assert bpe.decode(bpe.encode_ordinary(TRICKY)) == TRICKY
    assert bpe.special_id('<|endoftext|>') not in bpe.encode_ordinary(TRICKY)  # ordinary: names are text
    assert len(ids) < len(TRICKY.encode('utf-8')) / 2  # the merges learned the text


def test_round_trip_gpt2(gpt2):
    tok = load_tokenizer(None)
    ids = check_round_trip(tok)
    assert tok.kind == 'gpt2' and tok.vocab_size == 50257 and tok.special_tokens == {'<|endoftext|>': 50256}
    assert ids == gpt2.encode(TRICKY, allowed_special='all')
    chat = tok.with_special_tokens(SPECIAL_TOKENS)  # what instruction tuning adds: into GPT-2's padding rows
    assert chat.vocab_size == 50263 and chat.special_id('<|assistant_end|>') == 50262
    check_round_trip(chat)
    chat.check_model(50304)
    assert chat.decode([50303, 50262]) == '<|pad:50303|><|assistant_end|>'


def test_token_bytes_add_up(bpe, gpt2):
    for tok in (bpe, load_tokenizer(None), char_tokenizer(TRICKY).with_special_tokens(['<|endoftext|>'])):
        ids = tok.encode_ordinary(TRICKY.replace('<|endoftext|>', ''))
        counts = tok.token_bytes(tok.vocab_size + 10)
        assert len(counts) == tok.vocab_size + 10 and counts[tok.vocab_size:].sum() == 0  # padding: no bytes
        assert counts[ids].sum() == len(TRICKY.replace('<|endoftext|>', '').encode('utf-8'))
        assert counts[tok.special_id('<|endoftext|>')] == 0


def test_load_tokenizer_picks_the_datasets(tmp_path, bpe):
    char_dir = make_char_dataset(tmp_path / 'char', tiny_text())
    assert load_tokenizer(char_dir).kind == 'char'
    assert load_tokenizer(bpe.path.rsplit(os.sep, 1)[0]).kind == 'bpe'
    meta = pickle.loads((char_dir / 'meta.pkl').read_bytes())
    save_meta(char_dir / 'meta.pkl', {**meta, 'special_tokens': ['<|endoftext|>', '<|user_start|>']})
    tok = load_tokenizer(char_dir)
    assert tok.special_tokens == {'<|endoftext|>': meta['vocab_size'], '<|user_start|>': meta['vocab_size'] + 1}
    with pytest.raises(ValueError, match=r"has no special token <\|assistant_end\|>: add it with with_special_tokens"):
        tok.special_id('<|assistant_end|>')


def test_load_tokenizer_of_a_missing_folder_names_it(tmp_path):
    """ A dataset folder that isn't there (a mistyped name) is an error naming it, not GPT-2's BPE in its place. """
    with pytest.raises(FileNotFoundError, match=r"dataset folder \S*typo not found: check its name, or prepare"):
        load_tokenizer(tmp_path / 'typo')


def test_gpt2_for_no_dataset_and_for_a_gpt2_dataset(tmp_path, gpt2):
    os.makedirs(tmp_path / 'gpt2ids')  # a GPT-2 BPE dataset: .bin files, no meta.pkl nor bpe.json
    assert load_tokenizer(None).kind == load_tokenizer(tmp_path / 'gpt2ids').kind == 'gpt2'


def test_training_is_deterministic():
    text = tiny_text() + TRICKY * 5
    a, b = train_bpe([text], 500), train_bpe([text[:20000], text[20000:]], 500)
    assert a.enc._mergeable_ranks == train_bpe([text], 500).enc._mergeable_ranks
    assert b.enc._mergeable_ranks == train_bpe([text[:20000], text[20000:]], 500).enc._mergeable_ranks
    assert a.vocab_size == b.vocab_size == 500


def test_saved_bpe_is_plain_json(tmp_path, bpe):
    import json
    data = json.loads(open(bpe.path, encoding='ascii').read())
    assert sorted(data) == ['format', 'pattern', 'ranks', 'special_tokens']
    assert len(data['ranks']) + len(data['special_tokens']) == bpe.vocab_size
    again = load_bpe(bpe.path)
    assert again.encode(TRICKY) == bpe.encode(TRICKY)
    bpe.save(tmp_path / 'copy.json')
    assert (tmp_path / 'copy.json').read_bytes() == open(bpe.path, 'rb').read()


@pytest.mark.parametrize('damage, phrase', [
    (lambda b: b[:len(b) // 2], "is not a tokenizer file this code wrote (JSONDecodeError"),
    (lambda b: b.replace(b'"ranks"', b'"rank"'), "is not a tokenizer file this code wrote (KeyError"),
    (lambda b: b.replace(b'"AA=="', b'"A#=="', 1), "is not a tokenizer file this code wrote"),
    (lambda b: b.replace(b'"AA=="', b'"AQ=="', 1), "is not a tokenizer file this code wrote"),  # byte 1 twice
    (lambda b: None, "meta.pkl says the dataset was tokenized with a trained BPE, but"),
])
def test_missing_or_corrupt_bpe_file(tmp_path, bpe, damage, phrase):
    data_dir = tmp_path / 'data' / 'damaged'
    make_bpe_dataset(data_dir)
    damaged = damage((data_dir / BPE_FILE).read_bytes())
    (data_dir / BPE_FILE).unlink() if damaged is None else (data_dir / BPE_FILE).write_bytes(damaged)
    with pytest.raises(ValueError, match=r'rerun the dataset\'s prepare.py') as e:
        load_tokenizer(data_dir)
    assert phrase in str(e.value) and len(str(e.value).splitlines()) == 1
    # a script says so in one line: sample.py on a checkpoint of that dataset
    save_checkpoint(tmp_path / 'out', tiny_gpt(vocab_size=bpe.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=16),
                    'damaged')
    p = run_script('sample.py', '--out_dir=out', '--device=cpu', '--max_new_tokens=3', cwd=tmp_path, check=False)
    error_line(p, phrase)


def test_vocab_size_below_bytes_and_specials():
    with pytest.raises(ValueError, match=r'vocab_size=262 is too small: .* so use at least 263'):
        train_bpe(['some text'], 262)
    assert train_bpe(['some text'], 263).vocab_size == 263  # the bytes and the specials, no merge
    with pytest.raises(ValueError, match='there is no text to train the BPE on'):
        train_bpe(['', ''], 300)


# -----------------------------------------------------------------------------
# train.py: bits per byte

TRAIN = ['--device=cpu', '--dtype=float32', '--compile=False', '--n_layer=1', '--n_head=2', '--n_embd=16',
         '--block_size=16', '--batch_size=2', '--eval_iters=2', '--gradient_accumulation_steps=1',
         '--max_iters=2', '--eval_interval=2', '--warmup_iters=0', '--learning_rate=1e-2']


def single_window_val(data_dir, ids):
    """ val.bin of block_size + 1 tokens: every eval window is this one window. """
    write_tokens(os.path.join(data_dir, 'val.bin'), np.asarray(ids[:17]), np.uint16)
    return ids[:17]


def hand_bpb(out_dir, val, n_bytes):
    """ Bits per byte of the checkpoint's model on the one window: summed nats of its 16 targets, in bits, over
    the bytes of the text those targets stand for. """
    model = model_from_checkpoint(load(os.path.join(out_dir, 'ckpt.pt'))).eval()
    x, y = torch.tensor([val[:-1]]), torch.tensor([val[1:]])
    with torch.no_grad():
        logits, _ = model(x, y)
        nats = torch.nn.functional.cross_entropy(logits[0], y[0], reduction='sum').item()
    return nats / math.log(2) / n_bytes


@pytest.mark.parametrize('kind', ['char', 'bpe', pytest.param('gpt2', marks=pytest.mark.offline_files)])
def test_val_bpb_is_the_hand_computation(tmp_path, kind, request):
    text = tiny_text().replace('the', 'thé').replace('king', 'kïng€')  # 2- and 3-byte characters
    window = text[text.rindex(' kïng€') - 4:][:200]  # the val text: multi-byte characters in its first 17 tokens
    data_dir = tmp_path / 'data' / kind
    if kind == 'char':
        make_char_dataset(data_dir, text)
        tok = load_tokenizer(data_dir)
        val = single_window_val(data_dir, tok.encode(window))
    elif kind == 'bpe':
        tok = make_bpe_dataset(data_dir, text, vocab_size=400)
        val = single_window_val(data_dir, tok.encode(window))
    else:
        enc = request.getfixturevalue('gpt2')
        os.makedirs(data_dir)
        write_tokens(data_dir / 'train.bin', enc.encode_ordinary(text[:20000]), np.uint16)
        tok = load_tokenizer(data_dir)
        val = single_window_val(data_dir, tok.encode('the end<|endoftext|>' + window))
        assert tok.special_id('<|endoftext|>') in val[1:]  # a special token: part of the loss, no bytes
    targets = [i for i in val[1:] if i not in tok.special_names]
    text_of_targets = tok.decode(targets)
    assert '\ufffd' not in text_of_targets  # no character cut in two: the decoded text has the targets' bytes
    n_bytes = len(text_of_targets.encode('utf-8'))
    assert n_bytes > 16  # multi-byte characters and merges: not one byte per token
    p = run_script('train.py', f'--dataset={kind}', *TRAIN, cwd=tmp_path)
    reference = hand_bpb(tmp_path / 'out', val, n_bytes)
    bpb, losses = step_bpb(p.stdout), step_losses(p.stdout)
    assert sorted(bpb) == [0, 2] and abs(bpb[2] - reference) < 1.5e-4, (bpb, reference)
    assert abs(bpb[2] - losses[2][1] * 16 / n_bytes / math.log(2)) < 1.5e-4  # the val loss, per byte


def test_val_bpb_not_measured_without_gpt2_files(tmp_path):
    """ A GPT-2 dataset (no meta.pkl) where tiktoken can't get its files: training goes on, bpb shows '-'. """
    data_dir = tmp_path / 'data' / 'gpt2ids'
    os.makedirs(data_dir)
    ids = np.random.default_rng(0).integers(50257, size=3000)
    write_tokens(data_dir / 'train.bin', ids, np.uint16)
    write_tokens(data_dir / 'val.bin', ids[:500], np.uint16)
    env = {'TIKTOKEN_CACHE_DIR': str(tmp_path / 'empty_cache'), 'HTTPS_PROXY': closed_port_url(),
           'HTTP_PROXY': closed_port_url(), 'https_proxy': closed_port_url()}
    p = run_script('train.py', '--dataset=gpt2ids', *TRAIN, cwd=tmp_path, env=env)
    assert "note: val bpb is not measured, the dataset's tokenizer can't be loaded" in p.stdout
    assert step_bpb(p.stdout) == {0: None, 2: None} and sorted(step_losses(p.stdout)) == [0, 2]


def test_train_refuses_a_model_of_another_vocabulary(tmp_path, bpe):
    """ The weights of a character-level run, finetuned on a trained-BPE dataset: one line, before any step. """
    make_char_dataset(tmp_path / 'data' / 'tiny_char')
    run_script('train.py', '--dataset=tiny_char', *TRAIN, '--out_dir=char_run', cwd=tmp_path)
    make_bpe_dataset(tmp_path / 'data' / 'tiny_bpe')
    p = run_script('train.py', '--dataset=tiny_bpe', *TRAIN, '--init_from=char_run', '--out_dir=out2', cwd=tmp_path,
                   check=False)
    error_line(p, "the model's vocab_size is")
    assert 'iter 0' not in p.stdout


# -----------------------------------------------------------------------------
# sample.py

def test_sample_through_a_trained_bpe(tmp_path):
    make_bpe_dataset(tmp_path / 'data' / 'tiny_bpe', tiny_text() + TRICKY * 20)
    tok = load_tokenizer(tmp_path / 'data' / 'tiny_bpe')
    model = tiny_gpt(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=64)
    save_checkpoint(tmp_path / 'out', model, 'tiny_bpe')
    prompt = 'JULIET: café<|endoftext|>'
    p = run_script('sample.py', '--out_dir=out', '--device=cpu', '--dtype=float32', '--num_samples=2',
                   '--max_new_tokens=12', '--seed=4', f'--start={prompt}', cwd=tmp_path)
    assert f"Loading the trained BPE from data/tiny_bpe/{BPE_FILE}..." in p.stdout
    torch.manual_seed(4)
    x = torch.tensor([tok.encode(prompt)])
    expected = ''.join(tok.decode(model.generate(x, 12, temperature=0.8, top_k=200)[0].tolist()) + '\n---------------\n'
                       for _ in range(2))
    assert x[0, -1].item() == tok.special_id('<|endoftext|>') and p.stdout.endswith(expected)


def test_sample_refuses_a_checkpoint_of_another_vocabulary(tmp_path):
    make_char_dataset(tmp_path / 'data' / 'tiny_char')
    save_checkpoint(tmp_path / 'out', tiny_gpt(vocab_size=70, n_layer=1, n_head=2, n_embd=16, block_size=16))
    p = run_script('sample.py', '--out_dir=out', '--device=cpu', '--max_new_tokens=3', cwd=tmp_path, check=False)
    error_line(p, "the model's vocab_size is 70 but the dataset's tokenizer has")


def test_sample_with_gpt2_when_the_dataset_folder_is_elsewhere(tmp_path, gpt2):
    """ A checkpoint of a GPT-2 BPE dataset whose folder is not here (another machine) still samples, with GPT-2's
    BPE, as runtime.dataset_dir notes. """
    save_checkpoint(tmp_path / 'out', tiny_gpt(vocab_size=50304, n_layer=1, n_head=2, n_embd=16, block_size=16),
                    'owt_elsewhere')
    p = run_script('sample.py', '--out_dir=out', '--device=cpu', '--dtype=float32', '--num_samples=1',
                   '--max_new_tokens=3', '--start=Hello', cwd=tmp_path)
    assert 'note: the model was trained on data/owt_elsewhere, which is not in the current directory' in p.stdout
    assert 'No meta.pkl found, assuming GPT-2 encodings' in p.stdout and p.stdout.rstrip().endswith('---------------')


# -----------------------------------------------------------------------------
# export.py: the tokenizer beside the model

def export_and_load(tmp_path, model, dataset):
    from transformers import AutoTokenizer
    save_checkpoint(tmp_path / 'out', model, dataset)
    p = run_script('export.py', '--out_dir=out', '--to=hf', cwd=tmp_path)
    assert 'wrote its tokenizer beside it' in p.stdout
    return AutoTokenizer.from_pretrained(tmp_path / 'hf')


def check_hf_tokenizer_and_pipeline(tmp_path, tok, model, text):
    from transformers import pipeline
    dataset = tok.path.split(os.sep)[-2] if tok.path else 'gpt2_ids'  # GPT-2's: a dataset folder without meta.pkl
    os.makedirs(tmp_path / 'data' / dataset, exist_ok=True)
    hf_tok = export_and_load(tmp_path, model, dataset)
    ids = tok.encode(text)
    assert hf_tok.encode(text) == ids and hf_tok.decode(ids) == text
    assert hf_tok.model_max_length == model.config.block_size  # longer inputs are flagged, as in training
    prompt = text[:12]
    generated = pipeline('text-generation', model=str(tmp_path / 'hf'), device='cpu')(
        prompt, max_new_tokens=8, do_sample=False, return_tensors=True)[0]['generated_token_ids']
    ours = model.generate(torch.tensor([tok.encode(prompt)]), 8, top_k=1)[0].tolist()  # greedy
    assert generated == ours[:len(generated)] and len(generated) > len(tok.encode(prompt))
    assert len(generated) == len(ours) or generated[-1] == tok.special_tokens.get('<|endoftext|>')
    # sample.py reads the export with the dataset's own tokenizer, and samples what it samples from the checkpoint
    args = ['--device=cpu', '--dtype=float32', '--num_samples=1', '--max_new_tokens=8', '--top_k=1', f'--start={prompt}']
    samples = [run_script('sample.py', *args, source, cwd=tmp_path).stdout for source in ('--out_dir=out', '--init_from=hf')]
    assert samples[0].split('...\n', 1)[1] == samples[1].split('...\n', 1)[1]
    assert samples[0].split('...\n', 1)[1].startswith(prompt) and samples[0].endswith('---------------\n')


def test_export_trained_bpe(tmp_path):
    tok = make_bpe_dataset(tmp_path / 'data' / 'tiny_bpe', tiny_text() + TRICKY * 20)
    check_hf_tokenizer_and_pipeline(tmp_path, tok, tiny_gpt(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16,
                                                            block_size=64), TRICKY)
    # its BPE reserves the chat's tokens, but the model is a base model: no chat template, and chat.py refuses it
    from transformers import AutoTokenizer
    assert AutoTokenizer.from_pretrained(tmp_path / 'hf').chat_template is None
    assert json.loads((tmp_path / 'hf' / 'generation_config.json').read_text())['eos_token_id'] == tok.special_id(
        '<|endoftext|>')
    p = run_script('chat.py', '--out_dir=out', '--prompt=hi', '--device=cpu', cwd=tmp_path, check=False)
    error_line(p, "the model of out has no chat template (data/tiny_bpe holds no conversations, though its BPE has the "
                  "chat's tokens): finetune it on instructions first")


def test_export_characters(tmp_path):
    text = tiny_text() + 'é€\t'
    make_char_dataset(tmp_path / 'data' / 'tiny_char', text)
    tok = load_tokenizer(tmp_path / 'data' / 'tiny_char')
    check_hf_tokenizer_and_pipeline(tmp_path, tok, tiny_gpt(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16,
                                                            block_size=64), text[:300] + 'é€\t\n')


def test_export_gpt2(tmp_path, gpt2):
    tok = load_tokenizer(None)
    check_hf_tokenizer_and_pipeline(tmp_path, tok, tiny_gpt(vocab_size=50257, n_layer=1, n_head=2, n_embd=16,
                                                            block_size=64), TRICKY)


def test_export_without_the_dataset_notes_it(tmp_path):
    save_checkpoint(tmp_path / 'out', tiny_gpt(vocab_size=65, n_layer=1, n_head=2, n_embd=16, block_size=16))
    p = run_script('export.py', '--out_dir=out', '--to=hf', cwd=tmp_path,
                   env={'TIKTOKEN_CACHE_DIR': str(tmp_path / 'empty_cache'), 'HTTPS_PROXY': closed_port_url(),
                        'https_proxy': closed_port_url()})
    assert 'note: no tokenizer written beside the model' in p.stdout
    assert sorted(os.listdir(tmp_path / 'hf')) == ['config.json', 'generation_config.json', 'model.safetensors']
    # a dataset folder that is not here: not GPT-2's BPE in its place, though the vocabulary would fit it
    save_checkpoint(tmp_path / 'out2', tiny_gpt(vocab_size=50304, n_layer=1, n_head=2, n_embd=16, block_size=16),
                    'elsewhere')
    p = run_script('export.py', '--out_dir=out2', '--to=hf2', cwd=tmp_path)
    assert ("note: no tokenizer written beside the model (the model was trained on data/elsewhere, which is not in "
            f"the current directory ({tmp_path}): run from the folder that holds it)") in p.stdout
    assert sorted(os.listdir(tmp_path / 'hf2')) == ['config.json', 'generation_config.json', 'model.safetensors']


def test_with_special_tokens_takes_a_repeated_name_once():
    tok = train_bpe([tiny_text()], 300)
    grown = tok.with_special_tokens(['<|tool|>', '<|tool|>', '<|endoftext|>'])
    assert grown.special_tokens == {**tok.special_tokens, '<|tool|>': tok.vocab_size}
    assert grown.vocab_size == tok.vocab_size + 1


def test_bpe_file_whose_first_ranks_are_not_the_bytes_in_order_is_refused(tmp_path):
    tok = train_bpe([tiny_text()], 300)
    tok.save(tmp_path / BPE_FILE)
    data = (tmp_path / BPE_FILE).read_bytes()
    # swap bytes 0 and 1 (base64 "AA==" and "AQ=="): still 256 distinct single bytes, in the wrong ranks
    (tmp_path / BPE_FILE).write_bytes(data.replace(b'"AA=="', b'"X"', 1).replace(b'"AQ=="', b'"AA=="', 1)
                                      .replace(b'"X"', b'"AQ=="', 1))
    with pytest.raises(ValueError, match=r"ranks 0\.\.255 are not the 256 bytes"):
        load_tokenizer(tmp_path)


def test_unknown_characters_skips_special_tokens():
    tok = CharTokenizer({'a': 0, 'b': 1}, {0: 'a', 1: 'b'}).with_special_tokens(['<|endoftext|>'])
    assert tok.unknown_characters('ab<|endoftext|>ba') == []  # sample.py's prompt check: a special token is no text
    assert tok.unknown_characters('ab<|x|>') == ['<', '>', 'x', '|']
    assert tok.decode(tok.encode('ab<|endoftext|>ba')) == 'ab<|endoftext|>ba'
