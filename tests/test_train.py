"""Guards train.py end to end, run the way users run it (a subprocess on a tiny CPU config): training
lowers the loss; resuming reproduces an uninterrupted run bit for bit; the checkpoint layout (and the
original nanoGPT's) loads; init from a local Hugging Face GPT-2, eval_only, gradient accumulation, the
bigram and relu models, LoRA and gradient checkpointing work; every bad input of issues 3, 7 and 8
stops with a one-line error; wandb offline, torch.compile and torchrun (gloo) DDP runs work."""

import math
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields

import numpy as np
import pytest
import torch

from conftest import ROOT, make_char_dataset, run_script, tiny_text
from data_io import read_meta, write_tokens
from model import GPT, GPTConfig

TINY = ['--dataset=tiny_char', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
        '--device=cpu', '--compile=False', '--eval_iters=2', '--log_interval=1', '--gradient_accumulation_steps=1',
        '--learning_rate=1e-2', '--decay_lr=False']


def iter_losses(out):
    """ {iter: loss} from the `iter N: loss X, time Yms, mfu Z%` lines. """
    lines = [line for line in out.splitlines() if line.startswith('iter ')]
    for line in lines:
        assert re.fullmatch(r'iter \d+: loss \d+\.\d{4}, time \d+\.\d{2}ms, mfu -?\d+\.\d{2}%', line), line
    return {int(m[1]): float(m[2]) for m in (re.match(r'iter (\d+): loss (\S+),', line) for line in lines)}


def step_losses(out):
    """ {iter: (train loss, val loss)} from the `step N: train loss X, val loss Y` lines. """
    return {int(m[1]): (float(m[2]), float(m[3]))
            for m in re.finditer(r'^step (\d+): train loss (\d+\.\d{4}), val loss (\d+\.\d{4})$', out, re.M)}


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def train(cwd, *args, check=True, env=None):
    # one thread: these models are too small to gain from two, and runs that overlap don't oversubscribe the cores
    return run_script('train.py', *TINY, *args, cwd=cwd, check=check, env={'OMP_NUM_THREADS': '1', **(env or {})})


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


def test_checkpoint_layout(base_run):
    cwd, _ = base_run
    assert os.listdir(cwd / 'out') == ['ckpt.pt']  # the atomic save left no temporary file
    ckpt = load(cwd / 'out' / 'ckpt.pt')
    assert set(ckpt) == {'model', 'optimizer', 'model_args', 'iter_num', 'best_val_loss', 'config', 'lora', 'scaler'}
    assert not any(k.startswith(('_orig_mod.', 'module.')) for k in ckpt['model'])
    assert ckpt['model_args'] == dict(block_size=32, vocab_size=read_meta(cwd / 'data' / 'tiny_char')['vocab_size'],
                                      n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False, model_type='gpt',
                                      activation='gelu_exact')
    assert set(ckpt['model_args']) == {f.name for f in fields(GPTConfig)}
    assert ckpt['iter_num'] == 12 and ckpt['lora'] is None
    assert abs(ckpt['best_val_loss'] - min(val for _, val in step_losses(base_run[1]).values())) <= 5e-5
    assert ckpt['config']['dataset'] == 'tiny_char' and ckpt['config']['dtype'] == 'float32'
    assert ckpt['config']['max_iters'] == 12
    GPT.from_checkpoint(ckpt)  # rebuilds


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
    first = train(cwd, *args, '--max_iters=3', '--out_dir=out_resumed')
    second = train(cwd, *args, '--max_iters=6', '--out_dir=out_resumed', '--init_from=resume')
    straight, halves = iter_losses(out), {**iter_losses(first.stdout), **iter_losses(second.stdout)}
    assert sorted(iter_losses(first.stdout)) == [0, 1, 2] and sorted(iter_losses(second.stdout)) == [3, 4, 5]
    assert halves == straight
    a, b = load(cwd / 'out' / 'ckpt.pt'), load(cwd / 'out_resumed' / 'ckpt.pt')
    assert a['iter_num'] == b['iter_num'] == 6
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k  # bit for bit
    assert step_losses(second.stdout)[6] == step_losses(out)[6]


def test_gradient_checkpointing_gives_the_same_run(straight_run, tmp_path):
    cwd, args, out = straight_run
    p = train(cwd, *args, '--max_iters=6', f'--out_dir={tmp_path}', '--gradient_checkpointing=True')
    assert iter_losses(p.stdout) == iter_losses(out)


def test_relu_trains(straight_run):
    cwd, _, out = straight_run
    losses, steps = iter_losses(out), step_losses(out)
    assert losses[5] < losses[0] - 0.3 and steps[6][1] < steps[0][1] - 0.3
    assert load(cwd / 'out' / 'ckpt.pt')['model_args']['activation'] == 'relu'


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


def to_original_nanogpt(ckpt):
    """ What nanoGPT's train.py wrote: no model_type/activation, a compiled model's key prefix, the
    causal-mask buffers of its non-flash path, best_val_loss as a tensor, no lora/scaler. """
    model = {f'_orig_mod.{k}': v for k, v in ckpt['model'].items()}
    for i in range(ckpt['model_args']['n_layer']):
        T = ckpt['model_args']['block_size']
        model[f'_orig_mod.transformer.h.{i}.attn.bias'] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
    model_args = {k: v for k, v in ckpt['model_args'].items() if k not in ('model_type', 'activation')}
    return dict(model=model, optimizer=ckpt['optimizer'], model_args=model_args, iter_num=ckpt['iter_num'],
                best_val_loss=torch.tensor(ckpt['best_val_loss']), config=ckpt['config'])


def test_original_nanogpt_checkpoint_resumes(base_run, tmp_path):
    cwd, out = base_run
    os.makedirs(tmp_path / 'orig')
    torch.save(to_original_nanogpt(load(cwd / 'out' / 'ckpt.pt')), tmp_path / 'orig' / 'ckpt.pt')
    p = train(cwd, '--max_iters=14', '--eval_interval=6', f'--out_dir={tmp_path / "orig"}', '--init_from=resume')
    assert step_losses(p.stdout)[12] == step_losses(out)[12]  # the same model (the erf GELU), the same numbers
    assert sorted(iter_losses(p.stdout)) == [12, 13]
    ckpt = load(tmp_path / 'orig' / 'ckpt.pt')
    assert ckpt['iter_num'] == 14 and ckpt['model_args']['activation'] == 'gelu_exact'


def test_eval_only_evaluates_and_exits(base_run):
    cwd, out = base_run
    before = (cwd / 'out' / 'ckpt.pt').read_bytes()
    p = train(cwd, '--init_from=resume', '--eval_only=True', '--max_iters=40')
    assert step_losses(p.stdout) == {12: step_losses(out)[12]}
    assert not iter_losses(p.stdout) and 'saving checkpoint' not in p.stdout
    assert (cwd / 'out' / 'ckpt.pt').read_bytes() == before


def test_diverging_loss_stops_before_saving(base_run, tmp_path):
    cwd, _ = base_run
    shutil.copytree(cwd / 'out', tmp_path / 'out')
    # no iter line catches the divergence (log_interval): the evaluation must, before it saves
    p = train(cwd, '--init_from=resume', f'--out_dir={tmp_path / "out"}', '--max_iters=40', '--eval_interval=2',
              '--log_interval=100', '--learning_rate=1e30', '--grad_clip=0.0', check=False)
    assert p.returncode == 1 and 'Traceback' not in p.stderr
    assert re.fullmatch(r"error: the (train|val) loss is (nan|inf) at iter 1[4-9]: training diverged; lower "
                        r"learning_rate .*\. The last good checkpoint in .* is untouched\n", p.stderr), p.stderr
    good, last = load(cwd / 'out' / 'ckpt.pt'), load(tmp_path / 'out' / 'ckpt.pt')
    assert last['iter_num'] == 12
    for k in good['model']:
        assert torch.equal(good['model'][k], last['model'][k])


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
    assert ckpt['model_args']['model_type'] == 'bigram' and set(ckpt['model']) == {'token_embedding_table.weight'}
    p2 = train(char_workdir, '--model_type=bigram', '--max_iters=22', '--eval_interval=20', '--learning_rate=0.1',
               '--init_from=resume')
    assert step_losses(p2.stdout)[20] == step_losses(p.stdout)[20] and sorted(iter_losses(p2.stdout)) == [20, 21]


# name: (arguments, the error line it must give)
BAD_INPUTS = {
    'missing_dataset': (['--dataset=nope'],
                        r"error: data/nope/train\.bin not found: run `python data/nope/prepare\.py` first"),
    'block_size_vs_val': (['--dataset=short_val'],
                          r"error: .*short_val/val\.bin has 20 tokens, too few for block_size=32: "
                          r"use a block_size below 20 or more data"),
    'corrupt_checkpoint': (['--init_from=resume', '--out_dir=corrupt'],
                           r"error: cannot load corrupt/ckpt\.pt, it is truncated, corrupt or not a train\.py "
                           r"checkpoint \(.*\); restore a copy or start with init_from='scratch'"),
    'truncated_checkpoint': (['--init_from=resume', '--out_dir=truncated'],
                             r"error: cannot load truncated/ckpt\.pt, it is truncated, corrupt .*"),
    'no_checkpoint': (['--init_from=resume', '--out_dir=empty'],
                      r"error: init_from='resume' but empty/ckpt\.pt does not exist: point --out_dir to the run's "
                      r"folder, or start with init_from='scratch'"),
    'out_dir_not_writable': (['--out_dir=a_file/out'],
                             r"error: cannot write to out_dir 'a_file/out' \(Not a directory\): "
                             r"choose another one with --out_dir=\.\.\."),
    'unknown_init_from': (['--init_from=gpt3'],
                          r"error: unknown init_from 'gpt3': use 'scratch', 'resume', one of gpt2, gpt2-medium, "
                          r"gpt2-large, gpt2-xl, or a local Hugging Face GPT-2 directory"),
    'pretrained_block_size': (['--init_from={hf}', '--block_size=128'],
                              r"error: block_size=128 is larger than the model's 64 \(.*\): "
                              r"set --block_size=64 or less"),
    'bigram_pretrained': (['--model_type=bigram', '--init_from=gpt2'],
                          r"error: init_from='gpt2' is a GPT; model_type='bigram' trains from scratch only"),
    'unknown_model_type': (['--model_type=trigram'], r"error: unknown model_type 'trigram': use one of gpt, bigram"),
    'unknown_activation': (['--activation=swish'],
                           r"error: unknown activation 'swish': use one of gelu, gelu_exact, relu"),
    'unknown_dtype': (['--dtype=float8'], r"error: unknown dtype 'float8': use one of float32, bfloat16, float16 or auto"),
    'zero_batch_size': (['--batch_size=0'], r"error: batch_size must be at least 1, got 0"),
    'ddp_accumulation': (['--gradient_accumulation_steps=3'],  # run with torchrun's variables for 2 processes
                         r"error: gradient_accumulation_steps=3 is not divisible by the 2 processes: "
                         r"make it a multiple of --nproc_per_node x --nnodes"),
    'lora_negative_rank': (['--lora_rank=-1'], r"error: lora_rank=-1 must be between 1 and the layer width n_embd=32"),
    'lora_rank_too_large': (['--lora_rank=33'], r"error: lora_rank=33 must be between 1 and the layer width n_embd=32"),
    'lora_bigram': (['--lora_rank=4', '--model_type=bigram'],
                    r"error: LoRA needs model_type='gpt': a bigram model has no Linear layers to adapt"),
    'lora_targets': (['--lora_rank=4', '--lora_targets=attn.c_attn,attn.q'],
                     r"error: unknown lora targets \['attn\.q'\]: choose from attn\.c_attn, attn\.c_proj, "
                     r"mlp\.c_fc, mlp\.c_proj"),
    'checkpointing_bigram': (['--gradient_checkpointing=True', '--model_type=bigram'],
                             r"error: gradient_checkpointing recomputes the Blocks of a GPT; model_type='bigram' has "
                             r"none: set gradient_checkpointing=False"),
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
    ddp_env = {'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '2'}
    with ThreadPoolExecutor(2) as pool:
        runs = {name: pool.submit(train, cwd, '--max_iters=2', *[a.format(hf=hf_gpt2_dir) for a in args], check=False,
                                  env=ddp_env if name == 'ddp_accumulation' else None)
                for name, (args, _) in BAD_INPUTS.items()}
        return {name: run.result() for name, run in runs.items()}


@pytest.mark.parametrize('name', BAD_INPUTS)
def test_bad_input_is_a_one_line_error(bad_runs, name):
    p = bad_runs[name]
    assert p.returncode == 1 and 'Traceback' not in p.stderr, p.stderr
    # the error is the last line (before it, at most the progress bar of loading Hugging Face weights)
    assert re.fullmatch(BAD_INPUTS[name][1], p.stderr.strip().splitlines()[-1]), p.stderr


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


@pytest.mark.slow
def test_torchrun_ddp_on_cpu(char_workdir):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(ROOT / 'train.py'),
           *TINY, '--gradient_accumulation_steps=2', '--max_iters=6', '--eval_interval=6', '--dropout=0.1']
    p = subprocess.run(cmd, cwd=char_workdir, capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(iter_losses(p.stdout)) == list(range(6))  # rank 0 logs, once per iteration
    assert 'tokens per iteration will be: 256' in p.stdout  # 2 ranks x 1 micro-step x 4 x 32
    checksums = re.search(r'^weight checksum per rank: \[(\S+), (\S+)\]$', p.stdout, re.M)
    assert checksums[1] == checksums[2]
    model = GPT.from_checkpoint(load(char_workdir / 'out' / 'ckpt.pt'))
    assert float(checksums[1]) == sum(p.detach().double().sum().item() for p in model.parameters())
