"""Shared fixtures: the repo on sys.path, offline environment, tiny datasets and models made on the fly."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / 'shared'
sys.path.insert(0, str(ROOT))

# no test may touch the network: hubs fail at once instead of timing out, wandb stays local
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('WANDB_MODE', 'offline')
if (SHARED / 'tiktoken_cache').is_dir():
    os.environ.setdefault('TIKTOKEN_CACHE_DIR', str(SHARED / 'tiktoken_cache'))

from data_io import save_meta, write_tokens  # noqa: E402


def tiny_text():
    """ ~60k characters of English: tiny Shakespeare's start when ../shared has it, else made up. """
    path = SHARED / 'data' / 'tinyshakespeare' / 'input.txt'
    if path.exists():
        return path.read_text()[:60000]
    rng = np.random.default_rng(0)
    words = 'the king shall not die to night for all his men are here and she will see them come'.split()
    return ' '.join(rng.choice(words, 12000)) + '\n'


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


def run_script(script, *args, cwd=None, check=True, env=None, timeout=600):
    """ Run one of the repo's scripts the way a user does; returns the CompletedProcess. """
    cmd = [sys.executable, str(ROOT / script), *map(str, args)]
    full_env = {**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})}
    p = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}")
    return p
