"""Guards train.py end to end, run the way users run it (a subprocess on a tiny CPU config): training
lowers the loss; the logged val loss and mfu are the hand computations; each step's learning rate follows warmup, cosine decay and min_lr (a hand computation), its
gradients are clipped, its micro-batch and dropout masks are new (and each DDP rank's batches its own); evaluation
runs without dropout; resuming reproduces an uninterrupted run bit for bit, keeps the best val loss, and refuses
settings that would change the run's meaning; the checkpoint layout (and the original nanoGPT's) loads; init from a local Hugging Face
GPT-2 or another run's out_dir, eval_only, gradient accumulation, the bigram and relu models, LoRA and
gradient checkpointing work; every bad input stops with a one-line error, and a failed checkpoint write
keeps the previous checkpoint; a run that saves nothing says why; wandb offline, torch.compile and
torchrun (gloo) DDP runs work. runtime.py's helpers called directly: the dtype, bf16 and loss-scaling choices
for hardware this machine lacks, setup's seed and autocast, which checkpoint (ckpt.pt or ckpt.dcp) is the
newest, optimizer state by name, model state bytes, one-line errors, dataset_dir."""

import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, make_dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import conftest
import runtime
from conftest import (ROOT, all_logits, error_line, iter_losses, load, make_char_dataset, run_script, run_train,
                      step_losses, tiny_gpt, tiny_text, tiny_train_args, to_original_nanogpt, train_in_two_halves)
from data_io import read_meta, write_tokens
from model import GPTConfig
from runtime import NANOGPT_MODEL_ARGS, load_checkpoint, model_from_checkpoint, save_checkpoint

TINY = tiny_train_args()
TINY_PRETRAINED = tiny_train_args(n_layer=None, n_head=None, n_embd=None)


def train(cwd, *args, **kw):
    """ train.py on TINY; a pretrained init_from brings its own architecture, so TINY's is left out. """
    pretrained = any(a.startswith('--init_from=') and 'hf_gpt2' in a for a in args)
    return run_train(cwd, *(TINY_PRETRAINED if pretrained else TINY), *args, **kw)


@pytest.fixture(scope='module')
def base_run(tmp_path_factory):
    """ 12 iterations from scratch with the erf GELU, a checkpoint every 6: the run many tests build on. """
    cwd = tmp_path_factory.mktemp('base')
    make_char_dataset(cwd / 'data' / 'tiny_char')
    p = train(cwd, '--max_iters=12', '--eval_interval=6', '--activation=gelu_exact')
    return cwd, p.stdout


def test_scratch_training_lowers_the_loss(base_run):
    _, out = base_run
    losses = iter_losses(out)
    assert sorted(losses) == list(range(12))
    vocab_size = read_meta(base_run[0] / 'data' / 'tiny_char')['vocab_size']
    assert abs(losses[0] - math.log(vocab_size)) < 0.1  # a fresh model is about uniform
    assert np.mean([losses[i] for i in range(8, 12)]) < losses[0] - 0.5
    steps = step_losses(out)
    assert sorted(steps) == [0, 6, 12] and steps[12][1] < steps[0][1] - 0.5
    # MFU is '-' until the loop has settled (5 iterations), then measured
    mfus = [line.rsplit('mfu ', 1)[1] for line in out.splitlines() if line.startswith('iter ')]
    assert mfus[:5] == ['-'] * 5 and all(m.endswith('%') and float(m[:-1]) > 0 for m in mfus[5:])


def test_val_loss_is_the_mean_over_evenly_spread_windows(base_run):
    """ The logged val loss against a hand computation with the saved model: eval_iters x batch_size windows of
    val.bin spread evenly from its first token to its last full window, the mean cross-entropy of their targets. """
    cwd, out = base_run
    model = model_from_checkpoint(load(cwd / 'out' / 'ckpt.pt')).eval()
    val = np.fromfile(cwd / 'data' / 'tiny_char' / 'val.bin', np.uint16).astype(np.int64)
    starts = np.linspace(0, len(val) - 33, 2 * 4).astype(np.int64)  # block_size 32; eval_iters 2 x batch_size 4
    x = torch.tensor(np.stack([val[i:i + 32] for i in starts]))
    y = torch.tensor(np.stack([val[i + 1:i + 33] for i in starts]))
    with torch.no_grad():
        logits, _ = model(x, y)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
    assert step_losses(out)[12][1] == pytest.approx(loss, abs=1e-4)  # printed to 4 decimals


def test_mfu_is_the_hand_computation(char_workdir):
    """ The logged mfu: flops_per_token x the tokens of an iteration (batch_size x gradient_accumulation_steps x
    block_size) over the logged time and peak_flops; '-' for the first 5 iterations, then a 0.9/0.1 running mean. """
    p = train(char_workdir, '--gradient_accumulation_steps=2', '--max_iters=8', '--eval_interval=8', '--peak_flops=1e9')
    lines = {int(i): (float(ms), mfu) for i, ms, mfu in
             re.findall(r'^iter (\d+): loss \S+, time ([\d.]+)ms, mfu (\S+)$', p.stdout, re.M)}
    assert [lines[i][1] for i in range(5)] == ['-'] * 5
    flops_per_iter = model_from_checkpoint(load(char_workdir / 'out' / 'ckpt.pt')).flops_per_token() * 4 * 2 * 32
    running = None
    for i in (5, 6, 7):
        mfu = flops_per_iter / (lines[i][0] / 1000) / 1e9 * 100
        running = mfu if running is None else 0.9 * running + 0.1 * mfu
        assert float(lines[i][1].rstrip('%')) == pytest.approx(running, rel=0.01, abs=0.01), (i, lines[i])


def test_checkpoint_layout(base_run):
    cwd, _ = base_run
    assert os.listdir(cwd / 'out') == ['ckpt.pt']  # the atomic save left no temporary file
    ckpt = load(cwd / 'out' / 'ckpt.pt')
    assert set(ckpt) == {'model', 'optimizer', 'model_args', 'model_extra', 'iter_num', 'best_val_loss', 'config',
                         'lora', 'scaler', 'quantize'}
    assert not any(k.startswith(('_orig_mod.', 'module.')) for k in ckpt['model'])
    # model_args holds the original nanoGPT's GPTConfig fields only, so that its sample.py loads the checkpoint
    # (GPTConfig(**model_args)); the fields it lacks are apart
    assert ckpt['model_args'] == dict(block_size=32, vocab_size=read_meta(cwd / 'data' / 'tiny_char')['vocab_size'],
                                      n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False)
    assert ckpt['model_extra'] == dict(model_type='gpt', activation='gelu_exact')
    assert set(ckpt['model_args']) | set(ckpt['model_extra']) == {f.name for f in fields(GPTConfig)}
    assert ckpt['iter_num'] == 12 and ckpt['lora'] is None and not ckpt['quantize']
    assert abs(ckpt['best_val_loss'] - min(val for _, val in step_losses(base_run[1]).values())) <= 5e-5
    assert ckpt['config']['dataset'] == 'tiny_char' and ckpt['config']['dtype'] == 'float32'
    assert ckpt['config']['max_iters'] == 12
    model_args = dict(ckpt['model_args'])
    model_from_checkpoint(ckpt)  # rebuilds, and leaves model_args as it was: saved again (README's ckpt.dcp ->
    assert ckpt['model_args'] == model_args  # ckpt.pt), the dict still loads in the original nanoGPT


def test_a_checkpoint_cut_anywhere_is_called_damaged(base_run, tmp_path):
    """ torch.load fails on a cut-off file with an EOFError, a RuntimeError or, at some lengths, an OSError
    (EINVAL, a seek past the end): each is the error of a damaged file, not of one that can't be read. """
    good = (base_run[0] / 'out' / 'ckpt.pt').read_bytes()
    for n in range(0, len(good), len(good) // 50):
        (tmp_path / 'ckpt.pt').write_bytes(good[:n])
        with pytest.raises(ValueError, match='it is truncated, corrupt or not a train.py checkpoint'):
            load_checkpoint(str(tmp_path / 'ckpt.pt'))


def test_a_new_run_into_a_checkpoints_folder_says_it_replaces_it(base_run, tmp_path):
    """ A run from scratch (or a finetune) whose out_dir holds a checkpoint replaces it, as nanoGPT's does: it
    says so before its first save, where the user who forgot --init_from=resume can still stop it. """
    shutil.copytree(base_run[0] / 'out', tmp_path / 'out')
    p = train(base_run[0], f'--out_dir={tmp_path / "out"}', '--max_iters=1', '--eval_interval=1')
    before_first_save = p.stdout.split('saving checkpoint')[0]
    assert f"note: {tmp_path / 'out'} holds a checkpoint, which this run (init_from='scratch') replaces" in before_first_save
    p = train(base_run[0], f'--out_dir={tmp_path / "new"}', '--max_iters=1', '--eval_interval=1')
    assert 'holds a checkpoint' not in p.stdout


def test_ctrl_c_during_a_checkpoint_save_stops_after_it(base_run, tmp_path, monkeypatch):
    """ Ctrl-C while ckpt.pt is written: the save finishes, then the run stops as Ctrl-C stops it (the save was
    lost, and where torch's zip writer turned the KeyboardInterrupt into its own error, reported as a full disk). """
    checkpoint = load(base_run[0] / 'out' / 'ckpt.pt')
    save = torch.save

    class Interrupted:  # the file torch.save writes to, with a Ctrl-C as its first bytes go out
        def __init__(self, f):
            self.f, self.pressed = f, False

        def write(self, data):
            if not self.pressed:
                self.pressed = True
                os.kill(os.getpid(), signal.SIGINT)
            return self.f.write(data)

        def flush(self):
            self.f.flush()

    monkeypatch.setattr(torch, 'save', lambda obj, f: save(obj, Interrupted(f)))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(checkpoint, str(tmp_path))
    assert os.listdir(tmp_path) == ['ckpt.pt'] and load(tmp_path / 'ckpt.pt')['iter_num'] == checkpoint['iter_num']


@pytest.mark.parametrize('error', [RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                                                 "can't allocate memory: you tried to allocate 227000000 bytes."),
                                    MemoryError()])
def test_a_checkpoint_too_big_for_memory_is_not_called_damaged(base_run, monkeypatch, error):
    """ Out of memory while loading (the allocator's RuntimeError, Python's MemoryError) says so: a healthy file
    called corrupt could be deleted on that advice. """
    def load(*args, **kwargs):
        raise error
    monkeypatch.setattr(torch, 'load', load)
    path = str(base_run[0] / 'out' / 'ckpt.pt')
    with pytest.raises(OSError, match=f"not enough memory on cpu to load {re.escape(path)} .*free some"):
        load_checkpoint(path)


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory):
    """ 6 iterations in one go of a relu GPT, with dropout and gradient accumulation: the reference for exact resume. """
    cwd = tmp_path_factory.mktemp('straight')
    make_char_dataset(cwd / 'data' / 'tiny_char')
    args = ['--activation=relu', '--dropout=0.1', '--gradient_accumulation_steps=2', '--eval_interval=2',
            '--decay_lr=True', '--warmup_iters=2', '--lr_decay_iters=6', '--min_lr=1e-3']
    p = train(cwd, *args, '--max_iters=6')
    return cwd, args, p.stdout


def test_resume_reproduces_an_uninterrupted_run(straight_run):
    cwd, args, out = straight_run
    first, second = train_in_two_halves(train, cwd, args)
    straight, halves = iter_losses(out), {**iter_losses(first.stdout), **iter_losses(second.stdout)}
    assert sorted(iter_losses(first.stdout)) == [0, 1, 2] and sorted(iter_losses(second.stdout)) == [3, 4, 5]
    assert halves == straight
    a, b = load(cwd / 'out' / 'ckpt.pt'), load(cwd / 'out_resumed' / 'ckpt.pt')
    assert a['iter_num'] == b['iter_num'] == 6
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k  # bit for bit
    assert step_losses(second.stdout)[6] == step_losses(out)[6]


def in_process_train(before, after):
    """ A script that runs train.py in its own interpreter by runpy, between the code `before` (which may patch
    torch or the project's modules) and the code `after` (which sees train.py's globals as `scope`). """
    return '\n'.join(['import json, os, runpy, sys', 'import torch', f'sys.path.insert(0, {str(ROOT)!r})',
                      textwrap.dedent(before), f'sys.argv = [{str(ROOT / "train.py")!r}, *sys.argv[1:]]',
                      "scope = runpy.run_path(sys.argv[0], run_name='__main__')", textwrap.dedent(after)])


# model.checkpoint counted: the gradient checkpointing test's proof that it was on
COUNT_CHECKPOINTS = in_process_train("""
    import model
    calls, checkpoint = [], model.checkpoint
    model.checkpoint = lambda *args, **kw: calls.append(1) or checkpoint(*args, **kw)
""", """
    print(f"checkpointed Block forwards: {len(calls)}")
""")


def test_gradient_checkpointing_gives_the_same_run(straight_run, tmp_path):
    """ The same losses, with every Block of every training forward checkpointed (2 layers x 2 micro-steps x 6
    iterations; the evaluations' forwards have no backward to recompute for). """
    cwd, args, out = straight_run
    (tmp_path / 'count.py').write_text(COUNT_CHECKPOINTS)
    p = run_script(tmp_path / 'count.py', *TINY, *args, '--max_iters=6', f'--out_dir={tmp_path / "out"}',
                   '--gradient_checkpointing=True', cwd=cwd, env={'OMP_NUM_THREADS': '1'})
    assert iter_losses(p.stdout) == iter_losses(out)
    assert p.stdout.splitlines()[-1] == 'checkpointed Block forwards: 24'


# each optimizer step recorded: its learning rate and the norm of the gradients it applies, the norm
# clip_grad_norm_ found, the first training dropout mask of each iteration; then micro-batches 0 and 1
RECORD_STEPS = in_process_train("""
    from torch.optim.optimizer import register_optimizer_step_pre_hook
    steps, clip_norms, masks = [], [], []
    def before_step(optimizer, args, kwargs):
        grads = [p.grad.flatten() for g in optimizer.param_groups for p in g['params'] if p.grad is not None]
        steps.append(dict(lr=optimizer.param_groups[0]['lr'], grad_norm=torch.cat(grads).norm().item()))
    register_optimizer_step_pre_hook(before_step)
    clip, dropout = torch.nn.utils.clip_grad_norm_, torch.nn.functional.dropout
    def recorded_clip(*args, **kw):
        norm = clip(*args, **kw)
        clip_norms.append(norm.item())
        return norm
    def recorded_dropout(x, p=0.5, training=True, inplace=False):
        y = dropout(x, p, training, inplace)
        if training and len(masks) == len(steps):
            masks.append((y == 0).flatten().tolist())
        return y
    torch.nn.utils.clip_grad_norm_, torch.nn.functional.dropout = recorded_clip, recorded_dropout
""", """
    batches = [scope['train_batch'](step)[0].tolist() for step in (0, 1)]
    json.dump(dict(steps=steps, clip_norms=clip_norms, masks=masks, batches=batches), open('record.json', 'w'))
""")


def test_learning_rate_clipping_batches_and_dropout_of_each_step(char_workdir):
    """ Warmup, cosine decay and min_lr against the hand computation; clipped gradients; a new micro-batch and
    new dropout masks every step. """
    (char_workdir / 'record.py').write_text(RECORD_STEPS)
    run_script(char_workdir / 'record.py', *TINY, '--max_iters=8', '--eval_interval=100', '--decay_lr=True',
               '--learning_rate=1e-2', '--warmup_iters=2', '--lr_decay_iters=5', '--min_lr=1e-3', '--grad_clip=0.01',
               '--dropout=0.1', f'--out_dir={char_workdir / "record_out"}', cwd=char_workdir,
               env={'OMP_NUM_THREADS': '1'})
    record = json.loads((char_workdir / 'record.json').read_text())
    lr, min_lr = 1e-2, 1e-3
    cosine = [min_lr + 0.5 * (1 + math.cos(math.pi * r)) * (lr - min_lr) for r in (0, 1 / 3, 2 / 3)]
    expected = [lr * 1 / 3, lr * 2 / 3, *cosine, min_lr, min_lr, min_lr]  # warmup over 2, decay until 5
    assert [step['lr'] for step in record['steps']] == pytest.approx(expected, rel=1e-12)
    assert len(record['clip_norms']) == 8 and min(record['clip_norms']) > 0.01  # more than the clip: it had work to do
    assert all(step['grad_norm'] <= 0.01 * (1 + 1e-5) for step in record['steps'])
    first, second = record['batches']
    assert first != second
    masks = record['masks']
    assert len(masks) == 8 and all(0.05 < np.mean(m) < 0.15 for m in masks)  # dropout p=0.1
    assert len({tuple(m) for m in masks}) == 8


def test_relu_trains(straight_run):
    cwd, _, out = straight_run
    losses, steps = iter_losses(out), step_losses(out)
    assert losses[5] < losses[0] - 0.3 and steps[6][1] < steps[0][1] - 0.3
    # in model_args, where the original nanoGPT's GPTConfig(**model_args) refuses it rather than run it with a GELU
    ckpt = load(cwd / 'out' / 'ckpt.pt')
    assert ckpt['model_args']['activation'] == 'relu' and 'activation' not in ckpt['model_extra']
    with pytest.raises(TypeError, match='activation'):
        make_dataclass('NanoGPTConfig', NANOGPT_MODEL_ARGS)(**ckpt['model_args'])
    assert model_from_checkpoint(ckpt).config.activation == 'relu'


def test_gradient_accumulation_averages_the_micro_batches(tmp_path):
    # one repeated character: every window is the same, so two micro-batches of 4 must give exactly
    # the gradients (and the logged loss) of one batch of 4
    make_char_dataset(tmp_path / 'data' / 'tiny_char', text='a' * 3000 + 'b')
    one = train(tmp_path, '--max_iters=4', '--eval_interval=100', '--out_dir=out1', '--gradient_accumulation_steps=1')
    two = train(tmp_path, '--max_iters=4', '--eval_interval=100', '--out_dir=out2', '--gradient_accumulation_steps=2')
    assert 'tokens per iteration will be: 256' in two.stdout
    assert iter_losses(one.stdout) == iter_losses(two.stdout)
    a, b = load(tmp_path / 'out1' / 'ckpt.pt'), load(tmp_path / 'out2' / 'ckpt.pt')
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k


def test_original_nanogpt_checkpoint_resumes(base_run, tmp_path):
    cwd, out = base_run
    os.makedirs(tmp_path / 'orig')
    torch.save(to_original_nanogpt(load(cwd / 'out' / 'ckpt.pt')), tmp_path / 'orig' / 'ckpt.pt')
    p = train(cwd, '--max_iters=14', '--eval_interval=6', f'--out_dir={tmp_path / "orig"}', '--init_from=resume')
    assert step_losses(p.stdout)[12] == step_losses(out)[12]  # the same model (the erf GELU), the same numbers
    assert sorted(iter_losses(p.stdout)) == [12, 13]
    ckpt = load(tmp_path / 'orig' / 'ckpt.pt')
    assert ckpt['iter_num'] == 14 and ckpt['model_extra']['activation'] == 'gelu_exact'


def test_original_nanogpt_checkpoint_reads_as_ours(tmp_path):
    """ load_checkpoint of what nanoGPT wrote: best_val_loss a float again (nanoGPT saved a tensor), the weights'
    keys without torch.compile's prefix or the causal-mask buffers, the model the one saved (the erf GELU). """
    model = tiny_gpt(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=65, activation='gelu_exact')
    conftest.save_checkpoint(tmp_path, model, nanogpt=True)  # best_val_loss=2.5
    assert isinstance(load(tmp_path / 'ckpt.pt')['best_val_loss'], torch.Tensor)
    loaded, ckpt = load_checkpoint(str(tmp_path / 'ckpt.pt'))
    assert type(ckpt['best_val_loss']) is float and ckpt['best_val_loss'] == 2.5
    assert set(ckpt['model']) == set(model.state_dict())
    idx = torch.randint(0, 65, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(all_logits(loaded.eval(), idx), all_logits(model, idx))


def test_eval_only_evaluates_and_exits(base_run):
    cwd, out = base_run
    before = (cwd / 'out' / 'ckpt.pt').read_bytes()
    # dropout is off while evaluating: a resumed model with dropout evaluates as the run without it did
    p = train(cwd, '--init_from=resume', '--eval_only=True', '--max_iters=40', '--dropout=0.5')
    assert step_losses(p.stdout) == {12: step_losses(out)[12]}
    assert not iter_losses(p.stdout) and 'saving checkpoint' not in p.stdout
    assert (cwd / 'out' / 'ckpt.pt').read_bytes() == before
    assert p.stdout.strip().splitlines()[-1] == "no checkpoint was written to out: eval_only=True evaluates, and trains nothing"


def test_diverging_loss_stops_before_saving(base_run, tmp_path):
    cwd, _ = base_run
    shutil.copytree(cwd / 'out', tmp_path / 'out')
    # no iter line catches the divergence (log_interval): the evaluation must, before it saves
    p = train(cwd, '--init_from=resume', f'--out_dir={tmp_path / "out"}', '--max_iters=40', '--eval_interval=2',
              '--log_interval=100', '--learning_rate=1e30', '--grad_clip=0.0', check=False)
    assert 'training diverged' in error_line(p, 'The last good checkpoint in')
    good, last = load(cwd / 'out' / 'ckpt.pt'), load(tmp_path / 'out' / 'ckpt.pt')
    assert last['iter_num'] == 12
    for k in good['model']:
        assert torch.equal(good['model'][k], last['model'][k])
    # from scratch, diverging before its first save: no checkpoint to speak of
    p = train(cwd, f'--out_dir={tmp_path / "fresh"}', '--max_iters=40', '--learning_rate=1e30', '--grad_clip=0.0',
              check=False)
    assert 'training diverged' in error_line(p, f'No checkpoint was written to {tmp_path / "fresh"}')
    assert not os.listdir(tmp_path / 'fresh')


def bpe_dataset(path, val_tokens):
    """ GPT-2-sized token ids (< 50257) without a meta.pkl, like data/shakespeare's. """
    chars = sorted(set(tiny_text()))
    ids = np.array([chars.index(c) * 773 for c in tiny_text()[:20000]], dtype=np.uint16)
    os.makedirs(path, exist_ok=True)
    write_tokens(path / 'train.bin', ids, np.uint16)
    write_tokens(path / 'val.bin', ids[:val_tokens], np.uint16)
    return ids


def test_lora_from_a_local_hf_gpt2(hf_gpt2_dir, tmp_path):
    from transformers import GPT2LMHeadModel
    # a val split of block_size + 1 tokens has a single window: the val loss is the HF model's on it
    ids = torch.from_numpy(bpe_dataset(tmp_path / 'data' / 'bpe', 33)[:33].astype(np.int64))[None]
    hf = GPT2LMHeadModel.from_pretrained(hf_gpt2_dir).eval()
    with torch.no_grad():
        reference = torch.nn.functional.cross_entropy(hf(ids[:, :32]).logits[0], ids[0, 1:]).item()
    args = ['--dataset=bpe', f'--init_from={hf_gpt2_dir}', '--lora_rank=4', '--eval_interval=3']
    p = train(tmp_path, *args, '--max_iters=3')
    assert abs(step_losses(p.stdout)[0][1] - reference) < 1e-4  # adapters start as a no-op
    assert 'num decayed parameter tensors: 8, with 3,072 parameters' in p.stdout  # 2 x (4x64 + 192x4 + 4x64 + 64x4)
    assert 'num non-decayed parameter tensors: 0, with 0 parameters' in p.stdout

    def check(ckpt):
        assert ckpt['lora'] == dict(rank=4, alpha=16.0, dropout=0.0, targets=('attn.c_attn', 'attn.c_proj'))
        sd, hf_sd = ckpt['model'], hf.state_dict()
        for i in range(2):  # the base stays frozen
            assert torch.equal(sd[f'transformer.h.{i}.attn.c_attn.base.weight'], hf_sd[f'transformer.h.{i}.attn.c_attn.weight'].t())
            assert torch.equal(sd[f'transformer.h.{i}.mlp.c_fc.weight'], hf_sd[f'transformer.h.{i}.mlp.c_fc.weight'].t())
            assert sd[f'transformer.h.{i}.attn.c_attn.lora_B'].abs().sum() > 0
        assert torch.equal(sd['lm_head.weight'], hf_sd['transformer.wte.weight'])
        assert ckpt['model_args']['block_size'] == 32 and ckpt['model_args']['vocab_size'] == 50257
    check(load(tmp_path / 'out' / 'ckpt.pt'))
    p = train(tmp_path, *args, '--max_iters=5', '--init_from=resume', '--eval_interval=5')
    assert sorted(iter_losses(p.stdout)) == [3, 4]
    ckpt = load(tmp_path / 'out' / 'ckpt.pt')
    assert ckpt['iter_num'] == 5
    check(ckpt)


def test_bigram_trains_and_resumes(char_workdir):
    vocab_size = read_meta(char_workdir / 'data' / 'tiny_char')['vocab_size']
    p = train(char_workdir, '--model_type=bigram', '--max_iters=20', '--eval_interval=20', '--learning_rate=0.1')
    losses = iter_losses(p.stdout)
    assert abs(step_losses(p.stdout)[0][1] - math.log(vocab_size)) < 0.01  # about uniform at init
    assert np.mean([losses[i] for i in range(16, 20)]) < losses[0] - 0.5
    ckpt = load(char_workdir / 'out' / 'ckpt.pt')
    assert ckpt['model_extra']['model_type'] == 'bigram' and set(ckpt['model']) == {'token_embedding_table.weight'}
    p2 = train(char_workdir, '--model_type=bigram', '--max_iters=22', '--eval_interval=20', '--learning_rate=0.1',
               '--init_from=resume')
    assert step_losses(p2.stdout)[20] == step_losses(p.stdout)[20] and sorted(iter_losses(p2.stdout)) == [20, 21]


# name: (arguments, the key phrase of the error line it must give)
BAD_INPUTS = {
    'missing_dataset': (['--dataset=nope'], "data/nope/train.bin not found, and there is no data/nope/prepare.py"),
    'block_size_vs_val': (['--dataset=short_val'], "val.bin has 20 tokens, too few for block_size=32"),
    'corrupt_checkpoint': (['--init_from=resume', '--out_dir=corrupt'], "cannot load corrupt/ckpt.pt, it is truncated"),
    'truncated_checkpoint': (['--init_from=resume', '--out_dir=truncated'], "cannot load truncated/ckpt.pt"),
    'no_checkpoint': (['--init_from=resume', '--out_dir=empty'], "no checkpoint empty/ckpt.pt"),
    'out_dir_not_writable': (['--out_dir=a_file/out'], "cannot write to out_dir 'a_file/out'"),
    'unknown_init_from': (['--init_from=gpt3'], "unknown init_from 'gpt3'"),
    'pretrained_block_size': (['--init_from={hf}', '--block_size=128'], "block_size=128 is larger than the model's 64"),
    'bigram_pretrained': (['--model_type=bigram', '--init_from=gpt2'], "model_type='bigram' trains from scratch only"),
    'unknown_model_type': (['--model_type=trigram'], "unknown model_type 'trigram'"),
    'unknown_activation': (['--activation=swish'], "unknown activation 'swish'"),
    'unknown_dtype': (['--dtype=float8'], "unknown dtype 'float8'"),
    'zero_batch_size': (['--batch_size=0'], "batch_size must be at least 1"),
    'ddp_accumulation': (['--gradient_accumulation_steps=3'],  # run with torchrun's variables for 2 processes
                         "gradient_accumulation_steps=3 is not divisible by the 2 processes"),
    'lora_negative_rank': (['--lora_rank=-1'], "lora_rank=-1 must be between 1 and the layer width"),
    'lora_rank_too_large': (['--lora_rank=33'], "lora_rank=33 must be between 1 and the layer width"),
    'lora_bigram': (['--lora_rank=4', '--model_type=bigram'], "LoRA needs model_type='gpt'"),
    'lora_targets': (['--lora_rank=4', '--lora_targets=attn.c_attn,attn.q'], "unknown lora targets ['attn.q']"),
    'checkpointing_bigram': (['--gradient_checkpointing=True', '--model_type=bigram'],
                             "gradient_checkpointing recomputes the Blocks of a GPT"),
    'pretrained_architecture': (['--init_from={hf}', '--n_layer=3'], "fixes the architecture, but n_layer=3"),
    'unknown_device': (['--device=gpu'], "unknown device 'gpu': use cpu, cuda, cuda:N or mps"),
    'unsupported_device': (['--device=xpu'], "unsupported device 'xpu': use cpu, cuda, cuda:N or mps"),
    'negative_grad_clip': (['--grad_clip=-1.0'], "grad_clip must be at least 0"),
    'negative_peak_flops': (['--peak_flops=-1.0'], "peak_flops must be at least 0"),
    'init_from_no_checkpoint': (['--init_from=empty_dir'], "is a folder with no train.py checkpoint (ckpt.pt)"),
}


@pytest.fixture(scope='module')
def bad_runs(base_run, hf_gpt2_dir, tmp_path_factory):
    """ Every bad input, two runs at a time: {name: CompletedProcess}. """
    cwd = tmp_path_factory.mktemp('bad')
    make_char_dataset(cwd / 'data' / 'tiny_char')
    make_char_dataset(cwd / 'data' / 'short_val')
    write_tokens(cwd / 'data' / 'short_val' / 'val.bin', np.arange(20), np.uint16)
    good = (base_run[0] / 'out' / 'ckpt.pt').read_bytes()
    for name, damaged in [('corrupt', b'not a checkpoint' * 100), ('truncated', good[:len(good) // 2])]:
        os.makedirs(cwd / name)
        (cwd / name / 'ckpt.pt').write_bytes(damaged)
    (cwd / 'a_file').write_text('')
    (cwd / 'empty_dir').mkdir()
    ddp_env = {'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '2'}
    with ThreadPoolExecutor(2) as pool:
        runs = {name: pool.submit(train, cwd, '--max_iters=2', *[a.format(hf=hf_gpt2_dir) for a in args], check=False,
                                  env=ddp_env if name == 'ddp_accumulation' else None)
                for name, (args, _) in BAD_INPUTS.items()}
        return {name: run.result() for name, run in runs.items()}


@pytest.mark.parametrize('name', BAD_INPUTS)
def test_bad_input_is_a_one_line_error(bad_runs, name):
    # the error is the last line (before it, at most the progress bar of loading Hugging Face weights)
    error_line(bad_runs[name], BAD_INPUTS[name][1])


def test_wandb_offline(char_workdir):
    pytest.importorskip('wandb')
    p = train(char_workdir, '--max_iters=2', '--eval_interval=1', '--wandb_log=True', '--wandb_project=test',
              env={'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true'})
    runs = [d for d in os.listdir(char_workdir / 'wandb') if d.startswith('offline-run-')]
    assert len(runs) == 1 and iter_losses(p.stdout)
    assert any(f.endswith('.wandb') for f in os.listdir(char_workdir / 'wandb' / runs[0]))


@pytest.mark.slow
def test_compile_trains_like_eager(char_workdir):
    args = ['--max_iters=10', '--eval_interval=10']
    compiled = train(char_workdir, *args, '--compile=True', '--out_dir=out_compiled')
    assert 'compiling the model' in compiled.stdout and 'torch.compile failed' not in compiled.stdout
    eager = iter_losses(train(char_workdir, *args).stdout)
    assert sorted(eager) == list(range(10)) and eager[9] < eager[0]
    for i, loss in iter_losses(compiled.stdout).items():
        assert abs(loss - eager[i]) < 2e-3, (i, loss, eager[i])  # fused kernels round differently


@pytest.mark.slow
def test_compile_failure_falls_back_to_eager(char_workdir):
    p = train(char_workdir, '--max_iters=3', '--eval_interval=3', '--compile=True', env={'CXX': '/bin/false'})
    warnings = [line for line in p.stdout.splitlines() if line.startswith('warning: torch.compile failed')]
    assert len(warnings) == 1 and 'InvalidCxxCompiler' in warnings[0]
    assert sorted(iter_losses(p.stdout)) == [0, 1, 2]


# this rank's weights and first micro-batch saved: the DDP test compares the ranks
RANK_WEIGHTS = in_process_train('', """
    torch.save(scope['raw_model'].state_dict(), f"weights_rank{os.environ['RANK']}.pt")
    torch.save(scope['train_batch'](0), f"batch_rank{os.environ['RANK']}.pt")
""")


@pytest.mark.slow
def test_torchrun_ddp_on_cpu(char_workdir):
    (char_workdir / 'rank_weights.py').write_text(RANK_WEIGHTS)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'rank_weights.py',
           *TINY, '--gradient_accumulation_steps=2', '--max_iters=6', '--eval_interval=6', '--dropout=0.1']
    p = subprocess.run(cmd, cwd=char_workdir, capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(iter_losses(p.stdout)) == list(range(6))  # rank 0 logs, once per iteration
    assert 'tokens per iteration will be: 256' in p.stdout  # 2 ranks x 1 micro-step x 4 x 32
    assert p.stdout.count('Initializing a new model from scratch') == 1  # rank 0's start-up lines only
    # all-reduced gradients keep the replicas identical, bit for bit; rank 0 saved them
    rank0, rank1 = (load(char_workdir / f'weights_rank{r}.pt') for r in (0, 1))
    saved = load(char_workdir / 'out' / 'ckpt.pt')['model']
    assert rank0.keys() == rank1.keys() == saved.keys()
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]) and torch.equal(rank0[k], saved[k]), k
    # each rank trains on batches of its own
    assert not torch.equal(load(char_workdir / 'batch_rank0.pt')[0], load(char_workdir / 'batch_rank1.pt')[0])


def test_resume_refuses_settings_it_cannot_honour(base_run, tmp_path):
    """ LoRA or architecture settings that differ from the checkpoint's stop the run before it writes anything;
    the LoRA error points to finetuning the run's weights in a new out_dir. """
    cwd, _ = base_run
    shutil.copytree(cwd / 'out', tmp_path / 'out')
    before = (tmp_path / 'out' / 'ckpt.pt').read_bytes()
    resume = ['--init_from=resume', f'--out_dir={tmp_path / "out"}', '--max_iters=14', '--eval_interval=2']
    for args, phrase in [(['--lora_rank=8'], f"start a new run with --init_from={tmp_path / 'out'}"),
                         (['--n_layer=3'], "fixes the architecture, but n_layer=3 (the model's: 2)"),
                         (['--activation=relu'], "activation='relu' (the model's: 'gelu_exact')"),
                         (['--block_size=16'], "block_size=16 but the resumed run has 32"),
                         ([f'--init_from={tmp_path / "out"}'], "is this run's own out_dir")]:
        error_line(train(cwd, *resume, *args, check=False), phrase)
        assert os.listdir(tmp_path / 'out') == ['ckpt.pt'] and (tmp_path / 'out' / 'ckpt.pt').read_bytes() == before


def test_resume_keeps_the_best_val_loss(base_run, tmp_path):
    """ A resumed run saves only below the checkpoint's best val loss (always_save_checkpoint=False). """
    cwd, _ = base_run
    checkpoint = load(cwd / 'out' / 'ckpt.pt')
    os.makedirs(tmp_path / 'out')
    save_checkpoint({**checkpoint, 'best_val_loss': 0.0}, str(tmp_path / 'out'))
    before = (tmp_path / 'out' / 'ckpt.pt').read_bytes()
    p = train(cwd, '--init_from=resume', f'--out_dir={tmp_path / "out"}', '--max_iters=16', '--eval_interval=2',
              '--always_save_checkpoint=False')
    assert sorted(iter_losses(p.stdout)) == [12, 13, 14, 15] and 'saving checkpoint' not in p.stdout
    assert p.stdout.strip().splitlines()[-1] == (f"no checkpoint was written to {tmp_path / 'out'}: the val loss never "
                                                 f"went below 0.0000, and always_save_checkpoint=False")
    assert (tmp_path / 'out' / 'ckpt.pt').read_bytes() == before


def test_resume_takes_this_runs_settings(base_run, tmp_path):
    """ A resume keeps the optimizer's moments but takes this run's weight decay and betas; it reports its tokens
    per iteration at the checkpoint's block_size, not the default's; a WORLD_SIZE without torchrun's RANK is
    no distributed run. """
    cwd, _ = base_run
    shutil.copytree(cwd / 'out', tmp_path / 'out')
    p = run_train(cwd, *tiny_train_args(block_size=None), '--init_from=resume', f'--out_dir={tmp_path / "out"}',
                  '--max_iters=14', '--eval_interval=2', '--weight_decay=0.0', '--beta2=0.5', env={'WORLD_SIZE': '3'})
    assert 'tokens per iteration will be: 128\n' in p.stdout  # 1 x 4 x 32
    groups = load(tmp_path / 'out' / 'ckpt.pt')['optimizer']['param_groups']
    assert [(g['weight_decay'], tuple(g['betas'])) for g in groups] == [(0.0, (0.9, 0.5))] * 2


def test_init_from_another_runs_out_dir(base_run, tmp_path):
    """ The weights of another run, with a fresh optimizer, iteration count and LoRA settings, into this out_dir. """
    cwd, out = base_run
    before = (cwd / 'out' / 'ckpt.pt').read_bytes()
    p = train(cwd, f'--init_from={cwd / "out"}', f'--out_dir={tmp_path / "lora"}', '--lora_rank=4', '--max_iters=3',
              '--eval_interval=3')
    assert step_losses(p.stdout)[0] == step_losses(out)[12]  # the same model, the same evaluation
    assert sorted(iter_losses(p.stdout)) == [0, 1, 2] and 'OpenAI' not in p.stdout
    ckpt = load(tmp_path / 'lora' / 'ckpt.pt')
    assert ckpt['iter_num'] == 3 and ckpt['lora']['rank'] == 4 and ckpt['model_extra']['activation'] == 'gelu_exact'
    assert (cwd / 'out' / 'ckpt.pt').read_bytes() == before


def test_run_without_a_checkpoint_says_why(char_workdir):
    p = train(char_workdir, '--max_iters=0')
    assert p.stdout.strip().splitlines()[-1] == ("no checkpoint was written to out: no iteration ran (max_iters=0, "
                                                 "the run started at iter 0)")
    p = train(char_workdir, '--max_iters=4', '--eval_interval=2', '--learning_rate=0.0', '--always_save_checkpoint=False')
    assert p.stdout.strip().splitlines()[-1].startswith("no checkpoint was written to out: the val loss never went "
                                                        "below ")
    assert not (char_workdir / 'out' / 'ckpt.pt').exists()


def test_failed_checkpoint_write_keeps_the_previous_one(base_run, tmp_path):
    """ A write that fails halfway (here: a file size limit, as a full disk would) is one line naming out_dir;
    the previous checkpoint is intact and no temporary file is left. """
    cwd, _ = base_run
    shutil.copytree(cwd / 'out', tmp_path / 'out')
    before = (tmp_path / 'out' / 'ckpt.pt').read_bytes()
    limit = len(before) // 2
    p = train(cwd, '--init_from=resume', f'--out_dir={tmp_path / "out"}', '--max_iters=14', '--eval_interval=2',
              check=False, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert 'the previous checkpoint there, if any, is intact' in error_line(
        p, f"could not write the checkpoint to {tmp_path / 'out'}")
    assert os.listdir(tmp_path / 'out') == ['ckpt.pt'] and (tmp_path / 'out' / 'ckpt.pt').read_bytes() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU fallback needs a machine without CUDA')
@pytest.mark.skipif(torch.distributed.is_nccl_available(), reason="this torch has NCCL")
def test_nccl_without_nccl_is_one_line(char_workdir):
    p = train(char_workdir, '--backend=nccl', check=False, env={'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '1'})
    error_line(p, "backend='nccl' needs torch's CUDA build and GPUs: on CPUs use --backend=gloo")


def test_more_processes_than_gpus_is_one_line(char_workdir, tmp_path):
    """ torchrun starting more processes on a node than it has GPUs: the rank without a GPU of its own says so. """
    (tmp_path / 'sitecustomize.py').write_text(  # a machine with one GPU, as far as train.py asks before using it
        "import torch\ntorch.cuda.is_available = lambda: True\ntorch.cuda.device_count = lambda: 1\n")
    p = train(char_workdir, '--device=cuda', '--gradient_accumulation_steps=2', check=False,
              env={'RANK': '1', 'LOCAL_RANK': '1', 'WORLD_SIZE': '2', 'PYTHONPATH': str(tmp_path)})
    error_line(p, "LOCAL_RANK=1, but this machine has 1 GPU(s): start at most that many processes a node "
                  "(torchrun --nproc_per_node=1)")


def test_cuda_default_on_a_cpu_machine_says_so(char_workdir, tmp_path):
    """ device='cuda' on a CPU runs there with a note; the defaults' data and model (GPT-2 124M on OpenWebText, not
    prepared here) point to the CPU quick start as well, a run of its own data does not. """
    recipe = "GPT-2 124M recipe for 8 GPUs; on a CPU start with config/train_shakespeare_char_cpu.py"
    p = train(char_workdir, '--device=cuda', '--max_iters=1', '--eval_interval=1')
    assert "note: device='cuda' but torch sees no CUDA GPU here: running on the CPU" in p.stdout
    assert recipe not in p.stdout
    p = run_train(tmp_path, '--dtype=float32', check=False)
    assert "note: device='cuda' but torch sees no CUDA GPU here: running on the CPU" in p.stdout and recipe in p.stdout
    error_line(p, "data/openwebtext/train.bin not found")


# -----------------------------------------------------------------------------
# runtime's set-up and checkpoint helpers called directly: the choices this machine's hardware (no GPU, maybe no
# native bf16) and the single-process runs above leave unexercised

@pytest.mark.parametrize('cuda_bf16, cpu_bf16, expected', [
    (True, False, {'cuda': 'bfloat16', 'cpu': 'float32', 'mps': 'float32'}),
    (False, True, {'cuda': 'float16', 'cpu': 'bfloat16', 'mps': 'float32'}),
])
def test_auto_dtype_is_bf16_where_the_device_has_it(monkeypatch, cuda_bf16, cpu_bf16, expected):
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *args, **kwargs: cuda_bf16)
    monkeypatch.setattr(runtime, 'cpu_has_native_bf16', lambda: cpu_bf16)
    assert {device_type: runtime.resolve_dtype('auto', device_type) for device_type in expected} == expected
    assert runtime.resolve_dtype('float16', 'cpu') == 'float16'  # a dtype named is kept as it is
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):  # the scripts' one-line error, a ValueError
        runtime.resolve_dtype('float8', 'cpu')


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16', 'float16'])
def test_only_fp16_scales_the_loss(dtype):
    """ fp16 gradients underflow without loss scaling (GradScaler's initial scale, 2**16); bf16 and fp32 need none. """
    scaler = runtime.grad_scaler(SimpleNamespace(device_type='cpu', dtype=dtype))
    assert scaler.is_enabled() == (dtype == 'float16')
    assert scaler.scale(torch.tensor(3.0)).item() == 3.0 * (2 ** 16 if dtype == 'float16' else 1)


def test_checkpoint_path_is_the_newer_of_a_ckpt_pt_and_a_ckpt_dcp(tmp_path):
    pt, dcp, old = tmp_path / 'ckpt.pt', tmp_path / 'ckpt.dcp', tmp_path / 'ckpt.dcp.old'
    assert runtime.checkpoint_path(str(tmp_path)) == str(pt)  # none: where one would be written
    dcp.mkdir()
    assert runtime.checkpoint_path(str(tmp_path)) == str(pt)  # a ckpt.dcp without .metadata (written last): none yet
    (dcp / '.metadata').write_bytes(b'')
    assert runtime.checkpoint_path(str(tmp_path)) == str(dcp)
    pt.write_bytes(b'')
    os.utime(dcp / '.metadata', (1000, 1000))
    os.utime(pt, (2000, 2000))
    assert runtime.checkpoint_path(str(tmp_path)) == str(pt)  # a save of one kind cut off before removing the other
    os.utime(dcp / '.metadata', (3000, 3000))
    assert runtime.checkpoint_path(str(tmp_path)) == str(dcp)
    pt.unlink()
    dcp.rename(old)  # an FSDP save cut off between its two renames: the previous checkpoint is ckpt.dcp.old
    assert runtime.checkpoint_path(str(tmp_path)) == str(old)


def test_saving_a_ckpt_pt_removes_the_fsdp_checkpoint_it_replaces(tmp_path):
    """ A run without FSDP that resumed an FSDP run's ckpt.dcp (or its ckpt.dcp.old) leaves only its newer ckpt.pt. """
    for name in ('ckpt.dcp', 'ckpt.dcp.old'):
        (tmp_path / name).mkdir()
        (tmp_path / name / '.metadata').write_bytes(b'')
    save_checkpoint({'iter_num': 3}, str(tmp_path))
    assert os.listdir(tmp_path) == ['ckpt.pt'] and load(tmp_path / 'ckpt.pt') == {'iter_num': 3}
    assert runtime.checkpoint_path(str(tmp_path)) == str(tmp_path / 'ckpt.pt')


def test_optimizer_state_by_name_is_torchs_state_of_each_parameter():
    """ The optimizer state keyed by parameter name (FSDP's checkpoints) holds each parameter's own moments, and keyed
    by index again it is optimizer.state_dict() as torch gives it. """
    model = tiny_gpt(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=65, bias=True)
    optimizer = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu', verbose=False)
    x = torch.randint(0, 65, (2, 16), generator=torch.Generator().manual_seed(0))
    model.train()
    model(x, x)[1].backward()
    optimizer.step()
    state = optimizer.state_dict()
    by_name = runtime.optimizer_state_by_name(state, model, optimizer)
    params = dict(model.named_parameters())
    assert sorted(by_name['state']) == sorted(params)
    for name, p in params.items():
        assert torch.equal(by_name['state'][name]['exp_avg'], optimizer.state[p]['exp_avg']), name
    assert [[params[n] for n in g['params']] for g in by_name['param_groups']] == \
           [g['params'] for g in optimizer.param_groups]
    back = runtime.optimizer_state_by_index(by_name)
    assert back['param_groups'] == state['param_groups'] and sorted(back['state']) == sorted(state['state'])
    for i, s in state['state'].items():
        assert all(torch.equal(back['state'][i][k], v) for k, v in s.items()), i


def test_model_state_bytes_counts_four_copies_of_what_trains_and_one_of_what_is_frozen():
    from model import apply_lora
    model = tiny_gpt(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=65)
    n = sum(p.numel() for p in model.parameters())
    assert runtime.model_state_bytes(model) == (16 * n, 16 * n, 4 * n)  # fp32 weight, gradient, exp_avg, exp_avg_sq
    apply_lora(model, rank=4, alpha=8)  # the base frozen: its weights alone
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert trained and frozen
    assert runtime.model_state_bytes(model) == (16 * trained + 4 * frozen,) * 2 + (4 * trained,)


@pytest.mark.parametrize('raise_, returncode, stderr', [
    ("raise ValueError('bad setting x=1\\nmore detail')", 1, 'error: bad setting x=1\n'),
    ("raise OSError()", 1, 'error: OSError\n'),
    ("raise KeyboardInterrupt", -signal.SIGINT, 'stopped (Ctrl-C)\n'),
])
def test_an_error_at_the_top_is_one_line(raise_, returncode, stderr):
    """ errors_as_one_line: a ValueError or OSError prints its first line (its type where it has no message) and exits 1;
    Ctrl-C says so, and the process ends as killed by SIGINT, as Python's own handling ends it. """
    p = subprocess.run([sys.executable, '-c', f"import runtime\nruntime.errors_as_one_line()\n{raise_}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stderr) == (returncode, stderr)


@pytest.mark.skipif(not os.path.isdir('/sys/kernel'), reason='needs Linux sysfs')
def test_an_unwritable_out_dir_is_found_before_training():
    """ ensure_writable: a folder that exists but can't take a file is refused at once. sysfs is such a folder for
    every user, root included (where a chmod'ed one would not be). """
    with pytest.raises(OSError, match=r"^cannot write to out_dir '/sys/kernel' \(.+\): choose another one with --out_dir="):
        runtime.ensure_writable('/sys/kernel')


def test_setup_seeds_and_picks_the_autocast(monkeypatch):
    monkeypatch.setattr(runtime, 'cpu_has_native_bf16', lambda: False)
    rt = runtime.setup('cpu', 'auto', seed=5)
    assert (rt.device, rt.device_type, rt.dtype, rt.ptdtype) == ('cpu', 'cpu', 'float32', torch.float32)
    drawn = torch.rand(4)
    assert torch.equal(drawn, torch.rand(4, generator=torch.Generator().manual_seed(5)))  # seeded as torch seeds
    with rt.ctx:
        assert not torch.is_autocast_enabled('cpu')  # fp32: no autocast
    rt = runtime.setup('cpu', 'bfloat16')
    with rt.ctx:
        assert torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16


def test_dataset_dir_names_a_dataset_out_of_sight(tmp_path, monkeypatch, capsys):
    """ The tokenizer's folder: data/<dataset> of the checkpoint's run; out of sight, None with a note (GPT-2's BPE
    assumed) or, strict (export.py), a FileNotFoundError; a Hugging Face folder with its own tokenizer files. """
    monkeypatch.chdir(tmp_path)
    checkpoint = {'config': {'dataset': 'shakes'}}
    assert runtime.dataset_dir(checkpoint) is None
    assert "note: the model was trained on data/shakes, which is not in the current directory" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match=r"the model was trained on data/shakes, .*run from the folder that holds it"):
        runtime.dataset_dir(checkpoint, strict=True)
    (tmp_path / 'data' / 'shakes').mkdir(parents=True)
    assert runtime.dataset_dir(checkpoint, strict=True) == os.path.join('data', 'shakes')
    assert runtime.dataset_dir({'config': {}}) is None and runtime.dataset_dir(None) is None  # OpenAI's GPT-2
    (tmp_path / 'hf').mkdir()
    assert runtime.dataset_dir(None, str(tmp_path / 'hf')) is None  # no tokenizer files: GPT-2's BPE
    (tmp_path / 'hf' / 'meta.pkl').write_bytes(b'')
    assert runtime.dataset_dir(None, str(tmp_path / 'hf')) == str(tmp_path / 'hf')


def test_a_checkpoint_loads_with_another_dropout(tmp_path):
    """ dropout may change between runs (a finetune of another run's model): the loaded model takes the new one. """
    conftest.save_checkpoint(tmp_path, tiny_gpt(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=65,
                                                dropout=0.0))
    assert load_checkpoint(str(tmp_path / 'ckpt.pt'))[0].config.dropout == 0.0
    model = load_checkpoint(str(tmp_path / 'ckpt.pt'), dropout=0.25)[0]
    assert model.config.dropout == 0.25 and model.transformer.drop.p == 0.25
