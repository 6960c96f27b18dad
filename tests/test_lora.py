"""LoRA surgery (model.apply_lora / merge_lora): an adapter adds (alpha / rank) B A x, checked by hand; the adapted
model starts out computing exactly what the base computes, trains only its adapters (counted independently from
the config), merges back into plain weights with the same logits, round-trips through a checkpoint, and rejects
bad settings by message."""

import copy
import dataclasses

import pytest
import torch

import conftest
from conftest import all_logits, load, perturb_adapters, train_steps
from model import GPTConfig, LORA_TARGETS, Bigram, LoRALinear, apply_lora, merge_lora
from runtime import model_from_checkpoint

CONFIG = dict(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=16)


def tiny_gpt(**kw):
    return conftest.tiny_gpt(**{**CONFIG, **kw})


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(CONFIG['vocab_size'], (4, CONFIG['block_size']), generator=g), \
        torch.randint(CONFIG['vocab_size'], (4, CONFIG['block_size']), generator=g)


@pytest.mark.parametrize('targets', [('attn.c_attn', 'attn.c_proj'), LORA_TARGETS])
def test_lora_starts_as_the_base_model(targets):
    base = tiny_gpt().eval()
    idx, _ = batch()
    expected = all_logits(base, idx)
    model = apply_lora(copy.deepcopy(base), rank=4, alpha=8, targets=targets).eval()
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == CONFIG['n_layer'] * len(targets)
    assert torch.equal(all_logits(model, idx), expected)


def test_lora_adds_the_scaled_low_rank_update():
    """ By hand: y = base(x) + (alpha / rank) x A^T B^T, and merged() folds in that same update. """
    torch.manual_seed(0)
    base = torch.nn.Linear(8, 6)
    lora = LoRALinear(copy.deepcopy(base), rank=2, alpha=6)
    with torch.no_grad():
        lora.lora_B.normal_()
        x = torch.randn(3, 8)
        expected = base(x) + 3.0 * (x @ lora.lora_A.t() @ lora.lora_B.t())
        assert torch.allclose(lora(x), expected, atol=1e-6)
        assert torch.allclose(lora.merged()(x), expected, atol=1e-5)


def test_only_adapters_train():
    C, L, r = CONFIG['n_embd'], CONFIG['n_layer'], 4
    shapes = {'attn.c_attn': (C, 3 * C), 'attn.c_proj': (C, C), 'mlp.c_fc': (C, 4 * C), 'mlp.c_proj': (4 * C, C)}
    for targets in [('attn.c_attn', 'attn.c_proj'), LORA_TARGETS, ('mlp.c_fc',)]:
        model = apply_lora(tiny_gpt(), rank=r, alpha=8, targets=targets)
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        assert trainable and all(n.endswith(('.lora_A', '.lora_B')) for n in trainable)
        assert sum(p.numel() for p in trainable.values()) == L * sum(r * sum(shapes[t]) for t in targets)
        optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu', verbose=False)
        in_optimizer = [p for group in optimizer.param_groups for p in group['params']]
        assert len(in_optimizer) == len(trainable)
        assert {id(p) for p in in_optimizer} == {id(p) for p in trainable.values()}


def test_training_moves_only_the_adapters():
    model = apply_lora(tiny_gpt(), rank=4, alpha=8, targets=LORA_TARGETS)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    losses = train_steps(model, *batch())
    assert losses[-1] < losses[0] - 0.1
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None
            assert torch.equal(p, frozen[n]), n


def test_lora_dropout_acts_in_training_only():
    base = tiny_gpt().eval()
    idx, _ = batch()
    model = apply_lora(copy.deepcopy(base), rank=4, alpha=8, dropout=0.5, targets=LORA_TARGETS)
    assert torch.equal(all_logits(model.eval(), idx), all_logits(base, idx))  # B = 0: dropout changes nothing yet
    perturb_adapters(model)
    model.eval()
    assert torch.equal(all_logits(model, idx), all_logits(model, idx))  # eval: deterministic
    evaluated = all_logits(model, idx)
    model.train()  # the base model has dropout 0, so only the adapters' inputs are dropped
    assert (all_logits(model, idx) - evaluated).abs().max().item() > 1e-3


def test_merge_gives_the_same_logits():
    base = tiny_gpt().eval()
    idx, _ = batch()
    model = apply_lora(copy.deepcopy(base), rank=4, alpha=16, targets=LORA_TARGETS).eval()
    perturb_adapters(model)
    unmerged = all_logits(model, idx)
    assert (unmerged - all_logits(base, idx)).abs().max().item() > 1e-2  # the adapters matter
    merged_model = merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in merged_model.modules())
    assert merged_model.state_dict().keys() == base.state_dict().keys()
    assert all(p.requires_grad for p in merged_model.parameters())
    assert (all_logits(merged_model, idx) - unmerged).abs().max().item() <= 1e-5


@pytest.mark.parametrize('prefix', ['', '_orig_mod.'])  # '_orig_mod.': saved from a torch.compile'd model
def test_checkpoint_round_trip(tmp_path, prefix):
    lora = dict(rank=3, alpha=6.0, dropout=0.1, targets=('attn.c_attn', 'mlp.c_proj'))
    model = apply_lora(tiny_gpt(), **lora).eval()
    perturb_adapters(model)
    torch.save({'model': {prefix + k: v for k, v in model.state_dict().items()},
                'model_args': dataclasses.asdict(model.config), 'lora': lora}, tmp_path / 'ckpt.pt')
    ckpt = load(tmp_path / 'ckpt.pt')
    loaded = model_from_checkpoint(ckpt).eval()
    sd, sd_loaded = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd_loaded.keys()
    assert all(torch.equal(sd[k], sd_loaded[k]) for k in sd)
    assert [n for n, p in loaded.named_parameters() if p.requires_grad] == \
        [n for n, p in model.named_parameters() if p.requires_grad]
    assert loaded.transformer.h[0].attn.c_attn.lora_dropout.p == 0.1
    idx, _ = batch()
    assert torch.equal(all_logits(loaded, idx), all_logits(model, idx))


@pytest.mark.parametrize('kw, message', [
    (dict(rank=0), 'lora_rank=0 must be between 1 and the layer width n_embd=16'),
    (dict(rank=-2), 'lora_rank=-2 must be between 1 and the layer width n_embd=16'),
    (dict(rank=17), 'lora_rank=17 must be between 1 and the layer width n_embd=16'),
    (dict(rank=4, targets=('attn.c_attn', 'mlp.gate')), "unknown lora targets ['mlp.gate']: choose from attn.c_attn"),
    (dict(rank=4, targets=()), 'unknown lora targets'),
])
def test_bad_settings(kw, message):
    model = tiny_gpt()
    with pytest.raises(ValueError) as e:
        apply_lora(model, alpha=8, **kw)
    assert message in str(e.value)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())  # nothing half-done
    assert all(p.requires_grad for p in model.parameters())


def test_a_target_named_twice_is_adapted_once():
    model = apply_lora(tiny_gpt(), rank=4, alpha=8, targets=('attn.c_attn', 'attn.c_attn'))
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == CONFIG['n_layer']


def test_rank_may_equal_the_width():
    """ The largest rank: full-width adapters, and the model starts as its base (lora_B is zero). """
    width, idx = CONFIG['n_embd'], torch.randint(0, CONFIG['vocab_size'], (2, 8))
    base = tiny_gpt()
    model = apply_lora(copy.deepcopy(base), rank=width, alpha=1)
    c_attn = model.transformer.h[0].attn.c_attn
    assert c_attn.lora_A.shape == (width, width) and c_attn.lora_B.shape == (3 * width, width)
    assert (model(idx)[0] - base(idx)[0]).abs().max() < 1e-6


def test_bigram_has_no_lora():
    bigram = Bigram(GPTConfig(model_type='bigram', block_size=8, vocab_size=50))
    with pytest.raises(ValueError, match="LoRA needs model_type='gpt': a bigram model has no Linear layers"):
        apply_lora(bigram, rank=4, alpha=8)
