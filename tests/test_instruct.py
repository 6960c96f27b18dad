"""Instruction tuning: the chat template's mask is 1 exactly on the assistant's replies and their end token (with
characters, a trained BPE and GPT-2's BPE); GPT.grow_vocab keeps the old logits and starts new rows at the mean, and
runtime.grow_vocab_for grows a base model's vocabulary only;
train.py's val loss on an instruction dataset equals a hand-computed masked cross-entropy (after growing a base
model's vocabulary), changing a masked target changes nothing, and rows never run from one conversation into
the next without the boundary token, and a row is trained on where one of its targets is a reply; finetuning works from a local Hugging Face GPT-2 (GPT-2's BPE, grown
by 6 tokens), with LoRA and resume, and with torchrun DDP and gradient accumulation."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chat_template import BOUNDARY, chat_tokenizer, conversation_starts, masked_targets, render, rows_with_a_reply
from conftest import (load, make_char_dataset, make_instruct_dataset, make_sft_workdir, run_script, step_bpb,
                      step_losses, tiny_gpt, tiny_text)
from data_io import read_meta
import runtime
from runtime import load_checkpoint
from tokenizer import CharTokenizer, gpt2_tokenizer, load_tokenizer, train_bpe

CONVERSATION = [{'role': 'system', 'content': 'be brief'}, {'role': 'user', 'content': 'the king'},
                {'role': 'assistant', 'content': 'is dead'}, {'role': 'user', 'content': 'long live'},
                {'role': 'assistant', 'content': 'the king!'}]


def check_template(tok):
    tok = chat_tokenizer(tok)
    ids, mask = render(tok, CONVERSATION)
    assert len(ids) == len(mask) and ids[0] == tok.special_id(BOUNDARY)
    # the masked tokens, decoded, are exactly the replies each followed by its end token
    on = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(on) == 'is dead<|assistant_end|>the king!<|assistant_end|>'
    assert tok.decode(ids) == ('<|endoftext|><|system_start|>be brief<|system_end|><|user_start|>the king<|user_end|>'
                               '<|assistant_start|>is dead<|assistant_end|><|user_start|>long live<|user_end|>'
                               '<|assistant_start|>the king!<|assistant_end|>')
    # the reply tokens are contiguous runs that end on <|assistant_end|> and start right after <|assistant_start|>
    for k in np.flatnonzero(np.diff([0, *mask]) == 1):
        assert ids[k - 1] == tok.special_id('<|assistant_start|>')


def test_template_with_characters():
    text = tiny_text()
    chars = sorted(set(text) | set('!'))
    tok = CharTokenizer({c: i for i, c in enumerate(chars)}, dict(enumerate(chars)))
    check_template(tok)
    assert chat_tokenizer(tok).vocab_size == len(chars) + 7  # the specials appended after the characters


def test_template_with_a_trained_bpe():
    tok = train_bpe([tiny_text()], 400)
    check_template(tok)
    assert chat_tokenizer(tok).vocab_size == tok.vocab_size  # a trained BPE reserves them


def test_template_with_gpt2(gpt2):
    check_template(gpt2_tokenizer())
    assert chat_tokenizer(gpt2_tokenizer()).vocab_size == 50257 + 6  # <|endoftext|> was there already


def test_grow_vocab_keeps_old_logits_and_starts_new_rows_at_the_mean():
    model = tiny_gpt(block_size=16, vocab_size=20, n_layer=2, n_head=2, n_embd=16)
    idx = torch.randint(0, 20, (2, 16))
    with torch.no_grad():
        before = model(idx, idx)[0]
        mean = model.transformer.wte.weight.mean(0)
        model.grow_vocab(27)
        after = model(idx, idx)[0]
    assert after.shape == (2, 16, 27) and model.config.vocab_size == 27
    torch.testing.assert_close(after[..., :20], before)
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied
    torch.testing.assert_close(model.transformer.wte.weight[20:], mean.expand(7, -1))
    with torch.no_grad():  # a new id runs through the model
        assert torch.isfinite(model(torch.tensor([[25, 3]]))[0]).all()


def test_changing_a_masked_target_changes_nothing():
    model = tiny_gpt(block_size=8, vocab_size=12, n_layer=1, n_head=2, n_embd=8)
    x, y = torch.randint(0, 12, (2, 8)), torch.randint(0, 12, (2, 8))
    mask = torch.zeros(2, 8, dtype=torch.long)
    mask[0, 3:6], mask[1, 6:] = 1, 1
    with torch.no_grad():
        loss = model(x, masked_targets(y, mask))[1]
        y2 = y.clone()
        y2[0, 1], y2[1, 0] = (y[0, 1] + 1) % 12, (y[1, 0] + 1) % 12  # masked out
        assert model(x, masked_targets(y2, mask))[1] == loss
        y2[0, 4] = (y[0, 4] + 1) % 12  # counted: the loss must move
        assert model(x, masked_targets(y2, mask))[1] != loss
        logp = F.log_softmax(model(x, x)[0], -1).gather(-1, y[..., None])[..., 0]
        torch.testing.assert_close(loss, -(logp * mask).sum() / mask.sum())


def test_a_row_is_kept_for_a_reply_token_among_its_targets_only():
    """ A row from start s reads tokens s..s+block_size-1 and predicts s+1..s+block_size: a reply token at one of
    those targets keeps it (the last included), one at its first input or past its last target does not. """
    block_size, s = 8, 5
    for reply_at, kept in ((s, False), (s + 1, True), (s + block_size, True), (s + block_size + 1, False)):
        mask = np.zeros(30, dtype=np.uint8)
        mask[reply_at] = 1
        assert rows_with_a_reply(np.array([s]), mask, block_size).tolist() == ([s] if kept else []), reply_at


def test_rows_start_at_conversations_and_never_run_into_the_next_without_the_boundary(tmp_path):
    base = make_char_dataset(tmp_path / 'base')
    data_dir = make_instruct_dataset(tmp_path / 'sft', base, block_size=24)
    tok = load_tokenizer(str(data_dir))
    tokens = np.fromfile(data_dir / 'train.bin', dtype=np.uint16)
    mask = np.fromfile(data_dir / 'train_mask.bin', dtype=np.uint8)
    bos, end = tok.special_id(BOUNDARY), tok.special_id('<|assistant_end|>')
    assert len(mask) == len(tokens) and not mask[tokens == bos].any()
    starts = conversation_starts(tokens, bos, 24)
    assert len(starts) > 10 and (tokens[starts] == bos).all() and starts.max() + 24 < len(tokens)
    for i in starts:
        row = tokens[i:i + 25]
        after_end = np.flatnonzero(row[:-1] == end) + 1  # whatever follows a conversation's last reply
        assert all(row[k] == bos or i + k >= len(tokens) - 24 for k in after_end)  # or the split's end filler


def test_train_py_loss_is_the_masked_cross_entropy_of_a_grown_base_model(tmp_path):
    make_sft_workdir(tmp_path, block_size=32, model='base')
    data_dir = tmp_path / 'data' / 'sft'
    p = run_script('train.py', '--dataset=sft', '--init_from=out-base', '--out_dir=out-sft', '--eval_only=True',
                   '--eval_iters=1', '--batch_size=3', '--block_size=32', '--device=cpu', '--dtype=float32',
                   '--compile=False', cwd=tmp_path)
    assert 'growing the model' in p.stdout
    val_loss = step_losses(p.stdout)[0][1]
    assert step_bpb(p.stdout)[0] is None  # bits per byte of every window's text would not match a loss on replies
    # by hand: the base model grown, on val's first, middle and last conversation starts, loss on the mask only
    meta = read_meta(data_dir)
    base, _ = load_checkpoint(str(tmp_path / 'out-base' / 'ckpt.pt'))
    base.grow_vocab(meta['vocab_size'])
    tokens = np.fromfile(data_dir / 'val.bin', dtype=np.uint16).astype(np.int64)
    mask = np.fromfile(data_dir / 'val_mask.bin', dtype=np.uint8)
    starts = np.flatnonzero(tokens[:len(tokens) - 32] == meta['bos_id'])
    total, count = 0.0, 0
    with torch.no_grad():
        for i in starts[np.linspace(0, len(starts) - 1, 3).astype(np.int64)]:
            logits = base.eval()(torch.from_numpy(tokens[i:i + 32])[None], torch.zeros(1, 32, dtype=torch.long))[0][0]
            logp = F.log_softmax(logits, -1)
            for t in range(32):
                if mask[i + 1 + t]:
                    total -= logp[t, tokens[i + 1 + t]].item()
                    count += 1
    assert count > 0 and abs(val_loss - total / count) < 2e-4, (val_loss, total / count)


def test_train_py_finetunes_with_lora_and_resumes(tmp_path):
    make_sft_workdir(tmp_path, block_size=32, model='base')
    args = ['--dataset=sft', '--out_dir=out-sft', '--eval_iters=1', '--batch_size=2', '--block_size=32',
            '--device=cpu', '--dtype=float32', '--compile=False', '--lora_rank=4', '--eval_interval=2',
            '--gradient_accumulation_steps=2', '--always_save_checkpoint=True', '--warmup_iters=0']
    run_script('train.py', '--init_from=out-base', '--max_iters=2', *args, cwd=tmp_path)
    ckpt = load(tmp_path / 'out-sft' / 'ckpt.pt')
    grown = ckpt['model']['transformer.wte.weight']
    assert grown.shape[0] == read_meta(tmp_path / 'data' / 'sft')['vocab_size']
    # with LoRA the embedding trains too, so the new special tokens' rows move away from their shared start
    assert not torch.allclose(grown[-1], grown[-2])
    p = run_script('train.py', '--init_from=resume', '--max_iters=4', *args, cwd=tmp_path)
    assert 4 in step_losses(p.stdout)


def test_train_py_finetunes_a_local_hf_gpt2_on_gpt2_bpe_instructions(tmp_path, gpt2, hf_gpt2_dir):
    from chat_template import write_dataset
    chats = [[{'role': 'user', 'content': f"say {w}"}, {'role': 'assistant', 'content': w * 3}]
             for w in tiny_text(2000).split()]
    write_dataset(str(tmp_path / 'data' / 'sft'), gpt2_tokenizer(), {'train': chats[20:], 'val': chats[:20]}, 32)
    p = run_script('train.py', '--dataset=sft', f'--init_from={hf_gpt2_dir}', '--out_dir=out-sft', '--max_iters=2',
                   '--eval_interval=2', '--eval_iters=1', '--batch_size=2', '--block_size=32', '--device=cpu',
                   '--dtype=float32', '--compile=False', '--always_save_checkpoint=True', cwd=tmp_path)
    assert 'growing the model\'s vocab_size from 50257 to 50263' in p.stdout and 2 in step_losses(p.stdout)
    ckpt = load(tmp_path / 'out-sft' / 'ckpt.pt')
    assert ckpt['model_args']['vocab_size'] == 50263


@pytest.mark.slow
def test_torchrun_ddp_with_accumulation_on_instructions(tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    make_sft_workdir(tmp_path, block_size=32, model='base')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(ROOT / 'train.py'),
           '--dataset=sft', '--init_from=out-base', '--out_dir=out-sft', '--max_iters=4', '--eval_interval=4',
           '--eval_iters=1', '--batch_size=2', '--block_size=32', '--gradient_accumulation_steps=4', '--device=cpu',
           '--dtype=float32', '--compile=False', '--always_save_checkpoint=True']
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert p.returncode == 0, p.stderr[-3000:]
    assert 4 in step_losses(p.stdout) and load(tmp_path / 'out-sft' / 'ckpt.pt')['model_args']['vocab_size'] == \
        read_meta(tmp_path / 'data' / 'sft')['vocab_size']


@pytest.mark.parametrize('vocab_size, meta, grown', [
    (65, {'base_vocab_size': 65, 'vocab_size': 71}, 71),  # the base vocabulary: grown to take the chat's tokens
    (68, {'base_vocab_size': 65, 'vocab_size': 71}, 71),  # padded beyond it
    (71, {'base_vocab_size': 65, 'vocab_size': 71}, None),  # grown already (an SFT model): left as it is
    (64, {'base_vocab_size': 65, 'vocab_size': 71}, None),  # another dataset's vocabulary
    (65, {'vocab_size': 71}, None),  # a dataset without chat tokens
])
def test_grow_vocab_for_grows_a_base_vocabulary_only(capsys, vocab_size, meta, grown):
    model = tiny_gpt(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=vocab_size)
    weight = model.lm_head.weight
    runtime.grow_vocab_for(model, meta)
    out = capsys.readouterr().out
    if grown is None:
        assert out == '' and model.lm_head.weight is weight and model.config.vocab_size == vocab_size
    else:
        assert out == f"growing the model's vocab_size from {vocab_size} to {grown} for the chat's special tokens\n"
        assert model.config.vocab_size == grown and model.lm_head.weight.shape == (grown, 16)
