"""export.py: a train.py checkpoint (plain, bias=False, LoRA, relu, or the original nanoGPT's) becomes a
Hugging Face GPT-2 directory whose logits, in transformers and back through GPT.from_pretrained, match the
checkpoint's model; the dataset's tokenizer is written beside it when it fits the model, with a note when not;
bad input fails with a clear error and never overwrites a model by accident."""

import json
import os
import resource

import pytest
import torch
from conftest import (all_logits, error_line, make_char_dataset, perturb_adapters, run_in_process, run_script,
                      save_checkpoint)
from transformers import GPT2LMHeadModel

from data_io import read_meta
from model import GPT, GPTConfig, LORA_TARGETS, Bigram, apply_lora

TOL = 1e-4


def tiny_config(**kw):
    return GPTConfig(**{**dict(block_size=32, vocab_size=65, n_layer=2, n_head=2, n_embd=16), **kw})


def random_gpt(**kw):
    """ A tiny GPT with N(0, 1) weights: at GPT-2's init scale (0.02) the activations stay so small that
    the logits of the tanh and erf GELUs agree to 1e-6, and the comparison could not tell them apart. """
    torch.manual_seed(0)
    model = GPT(tiny_config(**kw))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def export_and_compare(tmp_path, model):
    """ Export tmp_path/out, then check transformers' and GPT.from_pretrained's logits against model's. """
    run_script('export.py', '--out_dir=out', '--to=hf', cwd=tmp_path)
    assert sorted(os.listdir(tmp_path)) == ['hf', 'out']  # no temporary directory left behind
    idx = torch.randint(model.config.vocab_size, (2, model.config.block_size), generator=torch.Generator().manual_seed(1))
    ours = all_logits(model.eval(), idx)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / 'hf').eval()
    with torch.no_grad():
        theirs = hf(idx).logits
    assert (theirs - ours).abs().max().item() <= TOL
    back = GPT.from_pretrained(str(tmp_path / 'hf'))
    assert (all_logits(back.eval(), idx) - ours).abs().max().item() <= TOL
    return json.loads((tmp_path / 'hf' / 'config.json').read_text())


@pytest.mark.parametrize('kw, activation_function', [
    (dict(), 'gelu_new'),  # GPT-2's tanh GELU
    (dict(bias=False), 'gelu_new'),  # zero biases in HF
    (dict(activation='relu', dropout=0.1), 'relu'),
    (dict(vocab_size=50304), 'gelu_new'),  # GPT-2 BPE padded to a multiple of 64
    (dict(vocab_size=50256), 'gelu_new'),  # one short of GPT-2's: id 50256 (<|endoftext|>) is no token of it
])
def test_export_matches_logits(tmp_path, kw, activation_function):
    model = random_gpt(**kw)
    save_checkpoint(tmp_path / 'out', model)
    hf_config = export_and_compare(tmp_path, model)
    cfg = model.config
    assert hf_config['activation_function'] == activation_function
    assert (hf_config['n_layer'], hf_config['n_head'], hf_config['n_embd'], hf_config['n_positions'],
            hf_config['vocab_size']) == (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.vocab_size)
    assert hf_config['resid_pdrop'] == hf_config['attn_pdrop'] == hf_config['embd_pdrop'] == cfg.dropout
    assert hf_config['bos_token_id'] == hf_config['eos_token_id'] == (50256 if cfg.vocab_size > 50256 else None)


def test_export_merges_lora(tmp_path):
    base = random_gpt()
    idx = torch.randint(65, (2, 32))
    base_logits = all_logits(base.eval(), idx)
    lora = dict(rank=4, alpha=8.0, dropout=0.0, targets=LORA_TARGETS)
    model = apply_lora(base, **lora)
    perturb_adapters(model, std=0.5)  # trained adapters, as B starts at zero
    assert (all_logits(model, idx) - base_logits).abs().max().item() > 0.01  # the adapters matter
    save_checkpoint(tmp_path / 'out', model, lora=lora)
    export_and_compare(tmp_path, model)


def test_export_original_nanogpt_checkpoint(tmp_path):
    """ nanoGPT's model_args lack model_type/activation (it trained with the erf GELU), a compiled model's
    keys start with '_orig_mod.', and pre-SDPA checkpoints carry the causal-mask buffers. """
    model = random_gpt(activation='gelu_exact')
    save_checkpoint(tmp_path / 'out', model, nanogpt=True)
    assert export_and_compare(tmp_path, model)['activation_function'] == 'gelu'  # HF's 'gelu' is the erf one


def test_export_refuses_to_overwrite(tmp_path):
    save_checkpoint(tmp_path / 'out', random_gpt())
    (tmp_path / 'hf').mkdir()
    (tmp_path / 'hf' / 'keep.txt').write_text('precious')
    p = run_script('export.py', '--out_dir=out', '--to=hf', cwd=tmp_path, check=False)
    error_line(p, 'hf is not empty')
    assert os.listdir(tmp_path / 'hf') == ['keep.txt']
    assert sorted(os.listdir(tmp_path)) == ['hf', 'out']
    # --force replaces an earlier export (its config.json), nothing else: a dataset's folder, say
    p = run_script('export.py', '--out_dir=out', '--to=hf', '--force=True', cwd=tmp_path, check=False)
    error_line(p, 'hf is not empty and holds no earlier export (no config.json), which --force would delete')
    assert os.listdir(tmp_path / 'hf') == ['keep.txt']
    (tmp_path / 'hf' / 'config.json').write_text('{}')
    run_script('export.py', '--out_dir=out', '--to=hf', '--force=True', cwd=tmp_path)
    assert 'keep.txt' not in os.listdir(tmp_path / 'hf') and 'model.safetensors' in os.listdir(tmp_path / 'hf')
    assert sorted(os.listdir(tmp_path)) == ['hf', 'out']
    # ~ is the home folder (the shell leaves it as it is after --to=), not a folder named '~' here
    (tmp_path / 'home' / 'hf').mkdir(parents=True)
    (tmp_path / 'home' / 'hf' / 'keep.txt').write_text('precious')
    p = run_script('export.py', '--out_dir=out', '--to=~/hf', cwd=tmp_path, check=False, env={'HOME': str(tmp_path / 'home')})
    error_line(p, f"{tmp_path / 'home' / 'hf'} is not empty")
    # --force never replaces the checkpoint's own folder, or one holding it: that would delete ckpt.pt
    for to in ('out', '.'):
        p = run_script('export.py', '--out_dir=out', f'--to={to}', '--force=True', cwd=tmp_path, check=False)
        error_line(p, f"--to={to} holds the checkpoint's out_dir out, which replacing it would delete")
        assert os.listdir(tmp_path / 'out') == ['ckpt.pt']


def test_export_reaches_the_disk_before_it_takes_the_name(tmp_path, monkeypatch):
    """ --force over an older export: every file written, and its folder, is fsynced before the rename into
    place, and the parent folder after it, so that a power cut leaves the old model or the new one under the
    name, never files that never reached the disk. """
    save_checkpoint(tmp_path / 'out', random_gpt())
    (tmp_path / 'hf').mkdir()
    (tmp_path / 'hf' / 'config.json').write_text('{}')  # an older export
    (tmp_path / 'hf' / 'old.txt').write_text('of an older export')
    events, real_fsync, real_rename = [], os.fsync, os.rename

    def fsync(fd):
        events.append(('fsync', os.readlink(f'/proc/self/fd/{fd}')))
        real_fsync(fd)

    def rename(a, b):
        events.append(('rename', os.path.realpath(a), os.path.realpath(b)))
        real_rename(a, b)
    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'rename', rename)
    run_in_process(monkeypatch, 'export.py', tmp_path, '--out_dir=out', '--to=hf', '--force=True')
    hf = os.path.realpath(tmp_path / 'hf')
    into_place = next(i for i, e in enumerate(events) if e[0] == 'rename' and e[2] == hf)
    tmp = events[into_place][1]
    synced_before = {e[1] for e in events[:into_place] if e[0] == 'fsync'}
    written = {os.path.join(tmp, name) for name in os.listdir(hf)}
    assert 'config.json' in os.listdir(hf) and 'old.txt' not in os.listdir(hf)
    assert written | {tmp} <= synced_before, sorted(written | {tmp} - synced_before)
    assert ('fsync', os.path.realpath(tmp_path)) in events[into_place:]
    assert sorted(os.listdir(tmp_path)) == ['hf', 'out']


def test_export_on_a_full_disk_is_one_line(tmp_path):
    save_checkpoint(tmp_path / 'out', random_gpt())
    limit = 4096  # bytes a file may have: the weights can't be written
    p = run_script('export.py', '--out_dir=out', '--to=hf', cwd=tmp_path, check=False,
                   preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    error_line(p, 'could not write hf (')
    assert 'free some space or pass another --to' in p.stderr and sorted(os.listdir(tmp_path)) == ['out']


def test_export_errors(tmp_path):
    p = run_script('export.py', '--out_dir=out', '--to=hf', cwd=tmp_path, check=False)
    error_line(p, 'no checkpoint out/ckpt.pt')
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'ckpt.pt').write_bytes(b'not a checkpoint')
    p = run_script('export.py', '--out_dir=out', '--to=hf', cwd=tmp_path, check=False)
    error_line(p, 'cannot load out/ckpt.pt')
    save_checkpoint(tmp_path / 'out', Bigram(GPTConfig(model_type='bigram', block_size=8, vocab_size=65)))
    p = run_script('export.py', '--out_dir=out', cwd=tmp_path, check=False)
    error_line(p, 'no output directory')
    p = run_script('export.py', '--out_dir=out', '--to=hf', cwd=tmp_path, check=False)
    error_line(p, 'cannot export a bigram model')
    assert sorted(os.listdir(tmp_path)) == ['out']


@pytest.mark.parametrize('extra', [0, 1])
def test_export_writes_the_dataset_tokenizer_when_it_fits(tmp_path, extra):
    """ The run's character dataset is here: a model of its vocabulary gets its tokenizer (AutoTokenizer encodes as
    meta.pkl's stoi) and meta.pkl beside it; one whose vocab_size doesn't fit (the dataset prepared again since, say)
    is still exported, with a note saying why no tokenizer is there. """
    from transformers import AutoTokenizer
    meta = read_meta(make_char_dataset(tmp_path / 'data' / 'tiny_char'))
    save_checkpoint(tmp_path / 'out', random_gpt(vocab_size=meta['vocab_size'] + extra), 'tiny_char')
    p = run_script('export.py', '--out_dir=out', '--to=hf', cwd=tmp_path)
    files = os.listdir(tmp_path / 'hf')
    assert GPT2LMHeadModel.from_pretrained(tmp_path / 'hf').config.vocab_size == meta['vocab_size'] + extra
    if extra:
        assert f"note: no tokenizer written beside the model (the model's vocab_size is {meta['vocab_size'] + 1}" in p.stdout
        assert 'tokenizer.json' not in files and 'meta.pkl' not in files
    else:
        assert 'note:' not in p.stdout and 'meta.pkl' in files
        text = 'ROMEO:\nthe king!'
        assert AutoTokenizer.from_pretrained(tmp_path / 'hf')(text)['input_ids'] == [meta['stoi'][c] for c in text]


def test_export_to_a_file_is_refused(tmp_path):
    """ --to naming a file (not a folder) is one clear error before anything is written, and the file is kept. """
    save_checkpoint(tmp_path / 'out', random_gpt())
    (tmp_path / 'hf').write_text('precious')
    p = run_script('export.py', '--out_dir=out', '--to=hf', '--force=True', cwd=tmp_path, check=False)
    error_line(p, 'hf exists and is not a directory: pass another --to')
    assert (tmp_path / 'hf').read_text() == 'precious' and sorted(os.listdir(tmp_path)) == ['hf', 'out']
