"""quantize.PackedLinear and runtime.pack_for_cpu guard: a Linear packed for oneDNN computes what the plain
nn.Linear computes (fp32, and bf16 under autocast), for one row and for many; pack() swaps every plain Linear
(the lm_head too, the token embedding keeps its own weight; LoRA bases under their adapters) and leaves the
model's function unchanged; greedy decoding of a packed model with the KV cache equals the plain model's
full-recompute reference (batch 2, past block_size, prompts of one token and more); pack_for_cpu packs only
CPU inference in fp32 or bf16; dequantize() gives back the plain weights bit for bit."""

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from torch.nn import functional as F

import conftest
import runtime
from conftest import all_logits
from model import apply_lora
from quantize import PackedLinear, dequantize, pack

TINY = dict(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=71)


def tiny_gpt(**overrides):
    return conftest.tiny_gpt(**{**TINY, **overrides})


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('shape', [(1, 48), (1, 1, 48), (3, 7, 48)])  # a decode step's row, a prefill's rows
def test_packed_linear_matches_nn_linear_in_fp32(bias, shape):
    torch.manual_seed(0)
    linear = nn.Linear(48, 80, bias=bias)
    x = torch.randn(shape)
    y = PackedLinear(linear, torch.float32)(x)
    assert y.dtype == torch.float32 and y.shape == (*shape[:-1], 80)
    torch.testing.assert_close(y, F.linear(x, linear.weight, linear.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                    reason="oneDNN has no bf16 path on this CPU (it needs AVX512BW/VL/DQ or AVX-NE-CONVERT); "
                           "pack_for_cpu packs bf16 only where the CPU has bf16 natively")
def test_packed_linear_in_bf16_matches_nn_linear_under_autocast():
    torch.manual_seed(0)
    linear = nn.Linear(64, 96)
    x = torch.randn(2, 5, 64)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        expected = linear(x)
        y = PackedLinear(linear, torch.bfloat16)(x)
    assert y.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(y, expected, rtol=1.6e-2, atol=1e-2)  # bf16 rounding of the sums, in another order


def test_pack_swaps_every_plain_linear_and_keeps_the_function():
    model = tiny_gpt()
    wte = model.transformer.wte.weight.detach().clone()
    idx = torch.randint(0, 71, (2, 9))
    expected = all_logits(model, idx)
    pack(model, torch.float32)
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert isinstance(model.lm_head, PackedLinear) and isinstance(model.transformer.h[1].mlp.c_proj, PackedLinear)
    assert torch.equal(model.transformer.wte.weight, wte)  # the lookup keeps its own, plain weight
    torch.testing.assert_close(all_logits(model, idx), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('prompt_len,new_tokens', [(1, 40), (7, 40), (32, 5)])
def test_packed_greedy_with_cache_equals_plain_recompute(prompt_len, new_tokens):
    """ Batch 2, past block_size (32), one-token and longer prompts. """
    plain = tiny_gpt()
    packed = pack(copy.deepcopy(plain), torch.float32)
    assert torch.equal(*conftest.greedy_pair(packed, plain, prompt_len, new_tokens))


def test_lora_model_packs_its_base_and_keeps_the_adapters():
    model = apply_lora(tiny_gpt(), rank=4, alpha=8)
    conftest.perturb_adapters(model)
    idx = torch.randint(0, 71, (2, 9))
    expected = all_logits(model, idx)
    pack(model, torch.float32)
    c_attn = model.transformer.h[0].attn.c_attn
    assert isinstance(c_attn.base, PackedLinear) and isinstance(c_attn.lora_A, nn.Parameter)
    torch.testing.assert_close(all_logits(model, idx), expected, rtol=1e-5, atol=1e-5)


def test_dequantize_gives_back_the_plain_weights():
    plain = tiny_gpt()
    model = dequantize(pack(copy.deepcopy(plain), torch.float32))
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    for name, m in plain.named_modules():
        if isinstance(m, nn.Linear):
            assert torch.equal(model.get_submodule(name).weight, m.weight), name


@pytest.mark.parametrize('device_type, dtype, packs', [
    ('cpu', torch.float32, True),
    ('cpu', torch.bfloat16, None),  # only where the CPU has bf16 natively: elsewhere oneDNN emulates it, slowly
    ('cpu', torch.float16, False),
    ('cuda', torch.float32, False),
])
def test_pack_for_cpu_packs_cpu_inference_in_fp32_or_native_bf16(device_type, dtype, packs):
    if packs is None:
        packs = runtime.cpu_has_native_bf16()
    model = runtime.pack_for_cpu(tiny_gpt(), SimpleNamespace(device_type=device_type, ptdtype=dtype))
    assert isinstance(model.lm_head, PackedLinear) == packs
    if packs:
        assert model.lm_head.dtype == dtype
