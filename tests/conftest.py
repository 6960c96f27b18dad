"""Shared fixtures and helpers, once: the repo on sys.path, an offline environment, text, datasets, models
and checkpoints made on the fly (ours and the original nanoGPT's layout), train.py's log parsers, and the
scripts run as a user runs them. No test reads ../shared or writes the repo's own data/ and out* folders:
the files that can't be made here (GPT-2's BPE, the real tiny Shakespeare) are opted into by environment
(TIKTOKEN_CACHE_DIR, TINY_SHAKESPEARE) and their tests, marked `offline_files`, skip with a reason without."""

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# no test may touch the network: hubs fail at once instead of timing out, wandb stays local
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('WANDB_MODE', 'offline')

from data_io import gpt2_encoding, read_meta, save_meta, write_tokens  # noqa: E402


def pytest_collection_modifyitems(items):
    for item in items:
        if 'gpt2' in getattr(item, 'fixturenames', ()):
            item.add_marker('offline_files')


def _user_files():
    """ {path: (size, mtime)} of the files in the repo's own data/ and out*/ folders: a user's work. """
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for folder in [ROOT / 'data', *ROOT.glob('out*')]
            for p in folder.rglob('*') if p.is_file() and '__pycache__' not in p.parts}


@pytest.fixture(scope='session', autouse=True)
def users_files_untouched():
    """ Tests make their data in temporary folders: the repo's data/ and out*/ are the same after the session. """
    before = _user_files()
    yield
    assert _user_files() == before, "a test wrote into the repo's data/ or out* folders"


@pytest.fixture(autouse=True)
def denormals_kept():
    """ runtime.setup flushes denormal numbers to zero process-wide, on a CPU, and some tests run a script in this
    process: each test starts with torch's default again. """
    yield
    import torch
    torch.set_flush_denormal(False)


@pytest.fixture(scope='session')
def gpt2():
    """ tiktoken's GPT-2 BPE, or a skip saying why it can't be loaded (no network, no TIKTOKEN_CACHE_DIR). """
    try:
        return gpt2_encoding()
    except OSError as e:
        pytest.skip(f"GPT-2 BPE files not loadable by tiktoken (set TIKTOKEN_CACHE_DIR): {str(e)[:120]}")


def tiny_text(n_chars=60000):
    """ A made-up play of n_chars characters: speakers in capitals ('ROMEO:'), lines of words, punctuation. """
    rng = np.random.default_rng(0)
    words = ('the king shall not die to night for all his men are here and she will see them come what is '
             'love but a madness most discreet my lord i pray you tell me why good sir we know thy name').split()
    speakers = ['ROMEO', 'JULIET', 'KING RICHARD III', 'FIRST CITIZEN', 'MENENIUS', 'LADY CAPULET']
    parts, size = [], 0
    while size < n_chars:
        lines = []
        for _ in range(rng.integers(1, 5)):
            line = ' '.join(rng.choice(words, rng.integers(4, 10)))
            lines.append(line[0].upper() + line[1:] + rng.choice([',', '.', '!', '?', ';', ':']))
        parts.append(f"{rng.choice(speakers)}:\n" + '\n'.join(lines) + '\n\n')
        size += len(parts[-1])
    return ''.join(parts)[:n_chars]


def make_char_dataset(data_dir, text=None):
    """ A character-level dataset in nanoGPT's layout: 90/10 split, meta.pkl with stoi/itos. """
    text = text or tiny_text()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = int(0.9 * len(ids))
    os.makedirs(data_dir, exist_ok=True)
    write_tokens(os.path.join(data_dir, 'train.bin'), ids[:n], np.uint16)
    write_tokens(os.path.join(data_dir, 'val.bin'), ids[n:], np.uint16)
    save_meta(os.path.join(data_dir, 'meta.pkl'),
              {'vocab_size': len(chars), 'stoi': stoi, 'itos': {i: ch for ch, i in stoi.items()}})
    return data_dir


@pytest.fixture
def char_workdir(tmp_path):
    """ A working directory with data/tiny_char/ ready: scripts run with cwd=this, --dataset=tiny_char. """
    make_char_dataset(tmp_path / 'data' / 'tiny_char')
    return tmp_path


@pytest.fixture(scope='session')
def hf_gpt2_dir(tmp_path_factory):
    """ A randomly initialised small GPT2LMHeadModel saved with save_pretrained (a local 'GPT-2'). """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64, vocab_size=50257,
                        bos_token_id=50256, eos_token_id=50256)
    path = tmp_path_factory.mktemp('hf_gpt2')
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


# -----------------------------------------------------------------------------
# models and checkpoints

def tiny_gpt(**config):
    """ A GPT of the given config with seed-0 weights, in eval mode. """
    import torch
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    return GPT(GPTConfig(**config)).eval()


def all_logits(model, idx):
    """ Logits at every position (the targets only make forward keep them all). """
    import torch
    with torch.no_grad():
        return model(idx, idx)[0]


def greedy_pair(model, reference, prompt_len, new_tokens, vocab_size=71):
    """ Greedy tokens of model with the KV cache and of reference recomputing the whole context, from the same
    batch-2 prompt of prompt_len tokens (seeded by prompt_len). """
    import torch
    prompt = torch.randint(0, vocab_size, (2, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    return (model.generate(prompt, new_tokens, top_k=1, use_kv_cache=True),
            reference.generate(prompt, new_tokens, top_k=1, use_kv_cache=False))


def perturb_adapters(model, std=0.1):
    """ What training does to LoRA's B, which starts at zero (so that LoRA starts as the base model). """
    import torch
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('lora_B'):
                p.normal_(std=std)
    return model


def train_in_two_halves(train, cwd, args, half=3, total=6):
    """ train.py with args for `half` iterations into out_resumed, then resumed there up to `total`: both runs,
    for comparing with one uninterrupted run. train(cwd, *args) runs the script. """
    first = train(cwd, *args, f'--max_iters={half}', '--out_dir=out_resumed')
    second = train(cwd, *args, f'--max_iters={total}', '--out_dir=out_resumed', '--init_from=resume')
    return first, second


def train_steps(model, x, y, steps=10, lr=1e-2):
    """ The losses of `steps` AdamW steps on one batch, through the model's own configure_optimizers. """
    optimizer = model.configure_optimizers(0.1, lr, (0.9, 0.95), 'cpu', verbose=False)
    losses = []
    for _ in range(steps):
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def to_original_nanogpt(ckpt):
    """ What nanoGPT's train.py wrote: no model_type/activation, a compiled model's key prefix, the
    causal-mask buffers of its non-flash path, best_val_loss as a tensor, no lora/scaler. """
    import torch
    model = {f'_orig_mod.{k}': v for k, v in ckpt['model'].items()}
    T = ckpt['model_args']['block_size']
    for i in range(ckpt['model_args']['n_layer']):
        model[f'_orig_mod.transformer.h.{i}.attn.bias'] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
    model_args = {k: v for k, v in ckpt['model_args'].items() if k not in ('model_type', 'activation')}
    return dict(model=model, optimizer=ckpt['optimizer'], model_args=model_args, iter_num=ckpt['iter_num'],
                best_val_loss=torch.tensor(ckpt['best_val_loss']), config=ckpt['config'])


def save_checkpoint(out_dir, model, dataset='tiny_char', lora=None, nanogpt=False, quantize=None):
    """ out_dir/ckpt.pt in train.py's layout (an empty optimizer), or with nanogpt=True as the original
    nanoGPT wrote it from a torch.compile'd model. """
    import torch
    ckpt = dict(model=model.state_dict(), optimizer={}, model_args=dataclasses.asdict(model.config), iter_num=10,
                best_val_loss=2.5, config={'dataset': dataset, 'out_dir': str(out_dir)}, lora=lora, quantize=quantize)
    os.makedirs(out_dir, exist_ok=True)
    torch.save(to_original_nanogpt(ckpt) if nanogpt else ckpt, os.path.join(out_dir, 'ckpt.pt'))


def load(path):
    """ A checkpoint (or any torch.save'd file of tensors), read onto the CPU. """
    import torch
    return torch.load(path, map_location='cpu', weights_only=True)


# -----------------------------------------------------------------------------
# running the scripts

def run_in_process(monkeypatch, script, cwd, *args):
    """ A script run in this process (runpy) from cwd, so that a test can patch what it calls; the exception hook
    the scripts install and the working directory are put back after the test. """
    import runpy
    monkeypatch.setattr(sys, 'excepthook', sys.excepthook)
    monkeypatch.setattr(sys, 'argv', [script, *args])
    monkeypatch.chdir(cwd)
    runpy.run_path(str(ROOT / script), run_name='__main__')


def run_script(script, *args, cwd=None, check=True, env=None, timeout=600, **popen):
    """ Run one of the repo's scripts the way a user does; returns the CompletedProcess. """
    cmd = [sys.executable, str(ROOT / script), *map(str, args)]
    full_env = {**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})}
    p = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, **popen)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}")
    return p


# the settings of a tiny CPU run of train.py on data/tiny_char (char_workdir's, make_char_dataset's)
TINY_TRAIN = dict(dataset='tiny_char', n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=4, device='cpu',
                  dtype='float32', compile=False, eval_iters=2, log_interval=1, gradient_accumulation_steps=1,
                  learning_rate='1e-2', decay_lr=False)


def tiny_train_args(**changes):
    """ TINY_TRAIN as train.py's --key=value arguments, with changes: a value replaces the setting's (in place) or
    is added (at the end), None leaves the setting out (train.py's default). """
    return [f'--{k}={v}' for k, v in {**TINY_TRAIN, **changes}.items() if v is not None]


def run_train(cwd, *args, check=True, env=None, **popen):
    """ train.py with args, as run_script runs it, on one thread: these models are too small to gain from two,
    and runs that overlap don't oversubscribe the cores. """
    return run_script('train.py', *args, cwd=cwd, check=check, env={'OMP_NUM_THREADS': '1', **(env or {})}, **popen)


def copy_prepare(repo, name):
    """ data/<name>/prepare.py and the repo's modules it may import (data_io, configurator, tokenizer,
    chat_template) copied under repo, so the script, run with cwd=repo, writes its files there as it would in
    data/<name>/. Returns that data folder. """
    data_dir = repo / 'data' / name
    data_dir.mkdir(parents=True, exist_ok=True)
    for path in ('data_io.py', 'configurator.py', 'tokenizer.py', 'chat_template.py'):
        shutil.copy(ROOT / path, repo / path)
    shutil.copy(ROOT / 'data' / name / 'prepare.py', data_dir / 'prepare.py')
    return data_dir


def write_jsonl(path, records):
    """ records written one JSON object a line; returns path. """
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))
    return path


def free_port():
    """ A localhost port where nothing listens. """
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def closed_port_url():
    """ An http URL on localhost where nothing listens: a connection fails at once, as offline. """
    return f"http://127.0.0.1:{free_port()}"


def error_line(p, phrase):
    """ A failed run's stderr: exit code 1, no traceback, its last line `error: ...` containing phrase. """
    assert p.returncode == 1 and 'Traceback' not in p.stderr, (p.returncode, p.stderr[-3000:])
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and phrase in last, last
    return last


def iter_losses(out):
    """ {iter: loss} from the `iter N: loss X, time Yms, mfu Z%` lines (mfu '-' until measured). """
    lines = [line for line in out.splitlines() if line.startswith('iter ')]
    for line in lines:
        assert re.fullmatch(r'iter \d+: loss \d+\.\d{4}, time \d+\.\d{2}ms, mfu (-|\d+\.\d{2}%)', line), line
    return {int(m[1]): float(m[2]) for m in (re.match(r'iter (\d+): loss (\S+),', line) for line in lines)}


STEP_LINE = r'^step (\d+): train loss (\d+\.\d{4}), val loss (\d+\.\d{4}), val bpb (\d+\.\d{4}|-)$'


def step_losses(out):
    """ {iter: (train loss, val loss)} from the `step N: train loss X, val loss Y, val bpb Z` lines. """
    return {int(m[1]): (float(m[2]), float(m[3])) for m in re.finditer(STEP_LINE, out, re.M)}


def step_bpb(out):
    """ {iter: val bits per byte, None where not measured ('-')} from the same lines. """
    return {int(m[1]): None if m[4] == '-' else float(m[4]) for m in re.finditer(STEP_LINE, out, re.M)}


# -----------------------------------------------------------------------------
# instruction data

def make_instruct_dataset(data_dir, base_dir, block_size=64):
    """ An instruction dataset (chat_template.write_dataset) over the character tokenizer of base_dir: spelling
    chats of tiny_text()'s words, val's words unseen in train. Returns data_dir. """
    from chat_template import write_dataset
    from tokenizer import load_tokenizer
    words = sorted({w.strip(',.!?;:') for w in tiny_text(3000).lower().split()} - {''})

    def spelling(words):  # the user asks to spell a word, the assistant answers with its letters spaced out
        return [[{'role': 'user', 'content': f"spell {w}"}, {'role': 'assistant', 'content': ' '.join(w)}] for w in words]
    write_dataset(str(data_dir), load_tokenizer(str(base_dir)), {'train': spelling(words[3:] * 4),
                                                                 'val': spelling(words[:3] * 2)}, block_size)
    return data_dir


def make_sft_workdir(workdir, block_size=64, model='sft'):
    """ data/tiny_char, data/sft (make_instruct_dataset's over it, rows of block_size) and a random GPT of
    block_size (n_layer=2, n_head=2, n_embd=32): with model='sft' out-sft/ckpt.pt, the instruction set's (grown)
    vocabulary and dataset='sft'; with model='base' out-base/ckpt.pt, tiny_char's vocabulary and dataset, for
    train.py to grow. Returns workdir. """
    make_char_dataset(workdir / 'data' / 'tiny_char')
    make_instruct_dataset(workdir / 'data' / 'sft', workdir / 'data' / 'tiny_char', block_size=block_size)
    dataset = {'sft': 'sft', 'base': 'tiny_char'}[model]
    save_checkpoint(workdir / f'out-{model}', tiny_gpt(block_size=block_size, vocab_size=read_meta(
        workdir / 'data' / dataset)['vocab_size'], n_layer=2, n_head=2, n_embd=32), dataset=dataset)
    return workdir
