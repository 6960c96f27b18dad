"""Gradient checkpointing (model.gradient_checkpointing): each Block really is recomputed in backward, and the
loss and every gradient equal those of the plain model, with dropout (the recompute replays the RNG) and with
LoRA (whose frozen embeddings give the first Block an input that needs no grad); inference is unaffected."""

import copy

import pytest
import torch

from conftest import perturb_adapters
from model import GPT, GPTConfig, apply_lora

CONFIG = dict(block_size=16, vocab_size=50, n_layer=3, n_head=2, n_embd=16)


def loss_and_grads(model, x, y, seed):
    """ One training forward/backward; also how many times the Blocks started forward (a pre-hook:
    the recompute stops as soon as it has what backward needs, so a Block's forward may not return). """
    calls = []
    hooks = [block.register_forward_pre_hook(lambda *_: calls.append(1)) for block in model.transformer.h]
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks for both models
    _, loss = model(x, y)
    loss.backward()
    for h in hooks:
        h.remove()
    return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}, len(calls)


@pytest.mark.parametrize('dropout', [0.0, 0.2])
@pytest.mark.parametrize('lora', [False, True])
def test_same_loss_and_gradients(dropout, lora):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CONFIG, dropout=dropout))
    if lora:
        apply_lora(model, rank=4, alpha=8, dropout=dropout, targets=('attn.c_attn', 'mlp.c_fc'))
        perturb_adapters(model)  # B = 0 would make A's gradient zero with and without checkpointing
    checkpointed = copy.deepcopy(model)
    checkpointed.gradient_checkpointing = True
    g = torch.Generator().manual_seed(1)
    x, y = (torch.randint(CONFIG['vocab_size'], (4, CONFIG['block_size']), generator=g) for _ in range(2))

    loss, grads, calls = loss_and_grads(model, x, y, seed=2)
    loss_ckpt, grads_ckpt, calls_ckpt = loss_and_grads(checkpointed, x, y, seed=2)
    assert (calls, calls_ckpt) == (CONFIG['n_layer'], 2 * CONFIG['n_layer'])  # forward, then again in backward
    assert abs(loss_ckpt - loss) <= 1e-6
    assert grads.keys() == grads_ckpt.keys()
    for n in grads:
        assert grads[n].abs().max().item() > 0, n  # every gradient is really compared
        assert (grads_ckpt[n] - grads[n]).abs().max().item() <= 1e-6, n
    if dropout:  # another seed gives other masks: the comparison above is not blind to dropout
        assert abs(loss_and_grads(model, x, y, seed=3)[0] - loss) > 1e-4


def test_inference_ignores_checkpointing():
    """ Evaluation, sampling and a KV cache see the plain model (in eval mode, as sample.py uses it). """
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CONFIG)).eval()
    idx = torch.randint(CONFIG['vocab_size'], (2, 10))
    with torch.no_grad():
        expected = model(idx, idx)[0]
        model.gradient_checkpointing = True
        assert torch.equal(model(idx, idx)[0], expected)
        kv_cache = model.new_kv_cache(2)
        model(idx[:, :9], kv_cache=kv_cache)
        logits, _ = model(idx[:, 9:], kv_cache=kv_cache)
    assert (logits[:, -1] - expected[:, -1]).abs().max().item() <= 1e-5


def test_kv_cache_in_train_mode():
    """ Checkpointing calls a Block without the cache; generating from a model left in train mode
    (dropout 0) must still fill and use the cache rather than silently lose the context. """
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CONFIG)).train()
    model.gradient_checkpointing = True
    idx = torch.randint(CONFIG['vocab_size'], (2, 10))
    with torch.no_grad():
        expected = model(idx)[0]
        kv_cache = model.new_kv_cache(2)
        model(idx[:, :9], kv_cache=kv_cache)
        logits, _ = model(idx[:, 9:], kv_cache=kv_cache)
    assert (logits - expected).abs().max().item() <= 1e-5
