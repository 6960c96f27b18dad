"""quantize.py guards: int8 weights are the per-row absmax rounding of the float weights (checked by hand),
Int8Linear computes what its dequantized weights compute (through aten's kernel only at the in_features it gets
right, and at widths where the kernel crashed a model generates), quantize() swaps every Linear (the lm_head too,
while the token embedding stays float), int8 logits and loss stay close to fp32 on a trained model, int8
greedy decoding with the KV cache equals the int8 full-recompute reference (compiled too), compiled on an AVX2 CPU a
one-row int8 product takes runtime's wide blocking and equals eager int8's, and bad input is one clear error."""

import copy

import pytest
import torch
import torch._inductor.config
import torch.nn as nn
from torch._inductor.cpu_vec_isa import pick_vec_isa
from torch._inductor.utils import run_and_get_code

import conftest
import runtime
from conftest import all_logits
from model import GPTConfig, apply_lora, build_model
from quantize import Int8Linear, dequantize, int8_kernel_works, quantize

TINY = dict(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=71)


def tiny_gpt(**overrides):
    return conftest.tiny_gpt(**{**TINY, **overrides})


def trained_gpt(steps=150):
    """ A tiny GPT fitted for a few seconds to a cycle of 71 ids with a little noise: peaked, confident
    predictions like a trained model's (a fresh one predicts almost uniformly, its loss is ~ln(71) whatever
    the weights). Returns the model and a held-out (x, y) batch. """
    model = tiny_gpt().train()
    g = torch.Generator().manual_seed(0)
    def batch(n):
        start = torch.randint(0, 71, (n, 1), generator=g)
        seq = (start + 3 * torch.arange(TINY['block_size'] + 1)) % 71
        noise = torch.rand(seq.shape, generator=g) < 0.1
        seq = torch.where(noise, torch.randint(0, 71, seq.shape, generator=g), seq)
        return seq[:, :-1], seq[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        x, y = batch(16)
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), batch(64)


def test_int8_weights_are_the_rounded_float_weights():
    torch.manual_seed(0)
    linear = nn.Linear(96, 40)
    q = Int8Linear(linear)
    w = linear.weight.detach()
    scales = q.scales.float()[:, None]  # one per output row
    assert q.weight.dtype == torch.int8 and q.weight.shape == (40, 96) and q.scales.shape == (40,)
    # absmax / 127, rounded to bf16 (the kernel's dtype): within bf16's rounding of the exact scale
    assert torch.allclose(scales[:, 0], w.abs().amax(dim=1) / 127, rtol=2 ** -8)
    assert q.weight.abs().max() <= 127
    assert ((w - q.weight.float() * scales).abs() <= scales / 2 + 1e-7).all()  # nearest step, per row
    assert torch.equal(q.bias, linear.bias)


def test_int8_linear_matches_its_dequantized_weights():
    """ The kernel's product equals the float product with the dequantized weights on bf16-rounded input
    (the kernel computes in bf16), up to the bf16 rounding of its output. """
    torch.manual_seed(0)
    linear = nn.Linear(96, 40)
    q = Int8Linear(linear)
    x = torch.randn(2, 5, 96)
    with torch.no_grad():
        y = q(x)
        product = x.bfloat16().float() @ (q.weight.float() * q.scales.float()[:, None]).t()  # before the bias
    assert y.shape == (2, 5, 40) and y.dtype == torch.float32
    assert ((y - linear.bias - product).abs() <= product.abs() * 2 ** -8 + 1e-5).all()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert q(x).dtype == linear(x).dtype == torch.bfloat16  # autocast's dtype, as nn.Linear's


def kernel_calls(module, x):
    """ module(x) and how many times it called aten's int8 kernel. """
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        y = module(x)
    return y, sum(e.count for e in prof.key_averages() if e.key == 'aten::_weight_int8pack_mm')


@pytest.mark.parametrize('in_features,out_features', [
    (64, 50304), (384, 65), (384, 1536), (1536, 384), (128, 65),  # GPT-2's lm_head, shakespeare_char's shapes
    (100, 65), (120, 65), (200, 65), (20, 3), (33, 7), (8, 64), (400, 100)])  # the kernel crashed or was wrong
def test_int8_linear_takes_the_kernel_only_where_it_is_right(in_features, out_features):
    """ aten's CPU kernel reads past the rows, segfaulting or returning garbage, unless in_features is a multiple of
    16 (quantize.py, INT8_KERNEL_K): the common shapes still take it, the others the dequantized product. Rows 1, 2,
    3 and 7, the kernel's blocks of 4 and its remainders. """
    torch.manual_seed(0)
    q = Int8Linear(nn.Linear(in_features, out_features, bias=False))
    reference = q.dequantized_weight()
    for rows in (1, 2, 3, 7):
        x = torch.randn(rows, in_features)
        y, calls = kernel_calls(q, x)
        product = x.bfloat16().float() @ reference.t()
        assert calls == (in_features % 16 == 0 and int8_kernel_works('cpu'))
        assert ((y - product).abs() <= product.abs() * 2 ** -7 + 1e-3 * product.abs().max()).all()


def test_int8_kernel_input_view_is_aligned():
    """ The kernel's loads segfault on rows not 32-byte aligned: a bf16 input viewed 8 bytes into its storage is
    copied first. """
    torch.manual_seed(0)
    q = Int8Linear(nn.Linear(64, 40, bias=False))
    x = torch.randn(3 * 64 + 4).bfloat16()[4:].view(3, 64)
    assert x.data_ptr() % 32
    with torch.no_grad():
        y = q(x)
    product = x.float() @ q.dequantized_weight().t()
    assert ((y.float() - product).abs() <= product.abs() * 2 ** -7 + 1e-3 * product.abs().max()).all()


@pytest.mark.parametrize('n_embd,n_head', [(100, 4), (120, 6)])
def test_int8_generates_at_widths_the_kernel_cannot_take(n_embd, n_head):
    """ n_embd=100, and 120 with shakespeare_char's 65 characters, crashed sample.py --quantize=int8 (or gave
    garbage): now the logits are the dequantized model's, and generation runs past block_size with the cache. """
    model = quantize(tiny_gpt(n_embd=n_embd, n_head=n_head, vocab_size=65), 'int8')
    idx = torch.randint(0, 65, (2, 9), generator=torch.Generator().manual_seed(0))
    logits = all_logits(model, idx)
    expected = all_logits(dequantize(copy.deepcopy(model)), idx)
    assert (logits - expected).abs().max().item() <= 0.02 * expected.abs().max().item()
    with torch.no_grad():
        out = model.generate(idx, 40, top_k=1, use_kv_cache=True)
    assert out.shape == (2, 49) and 0 <= out.min() and out.max() < 65


def test_quantize_swaps_every_linear_and_keeps_the_embedding():
    model = tiny_gpt()
    wte = model.transformer.wte.weight.detach().clone()
    quantize(model, 'int8')
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 4 * TINY['n_layer'] + 1  # + lm_head
    assert isinstance(model.lm_head, Int8Linear)
    # the token embedding stays the float table it was (tied to the lm_head before)
    assert model.transformer.wte.weight.dtype == torch.float32 and torch.equal(model.transformer.wte.weight, wte)
    assert not any(p.requires_grad for p in model.parameters())
    idx = torch.randint(0, 71, (2, 9))
    assert all_logits(model, idx).shape == (2, 9, 71)


def test_int8_logits_and_loss_stay_close_to_fp32():
    """ Per-row absmax int8 moves each weight by at most half a step, absmax/254 (~0.4% of the row's
    largest weight), and the kernel rounds its input and output to bf16 (2^-9 relative): the logits of a
    trained model move by a few hundredths against a spread of ~12, and the loss by well under the 1%
    the issue allows (measured here: 0.001%). """
    model, (x, y) = trained_gpt()
    with torch.no_grad():
        logits, loss = model(x, y)
        logits8, loss8 = quantize(copy.deepcopy(model), 'int8')(x, y)
    assert loss.item() < 1.5  # it learned the cycle: a fresh model's loss is ln(71) = 4.26
    assert abs(loss8.item() - loss.item()) / loss.item() <= 0.01
    assert (logits8 - logits).abs().max().item() <= 0.02 * (logits.max() - logits.min()).item()


@pytest.mark.parametrize('prompt_len,new_tokens', [(1, 40), (7, 40), (32, 5)])
def test_int8_greedy_with_cache_equals_int8_recompute(prompt_len, new_tokens):
    """ Batch 2, past block_size (32), one-token and longer prompts. """
    model = quantize(trained_gpt(steps=50)[0], 'int8')
    assert torch.equal(*conftest.greedy_pair(model, model, prompt_len, new_tokens))


@pytest.mark.slow
def test_compiled_int8_is_one_graph_and_decodes_as_eager_int8():
    """ Int8Linear compiles without a graph break (fullgraph), and compiled for inference as sample.py does it
    (inductor's freezing and max-autotune, where inductor's own int8 GEMM may replace aten's kernel), its greedy
    tokens with the cache equal eager int8's full recompute: batch 2, past block_size (compiled by aot_eager). """
    model = quantize(trained_gpt(steps=50)[0], 'int8')
    reference = copy.deepcopy(model)
    graph = copy.deepcopy(model)
    torch._dynamo.reset()
    graph.compile(fullgraph=True, dynamic=True, backend='aot_eager')
    assert torch.equal(*conftest.greedy_pair(graph, reference, 7, 40))
    config = torch._inductor.config
    with config.patch({name: getattr(config, name) for name in runtime.CPU_INFERENCE_COMPILE}):  # undone after
        runtime.compile_for_inference(model)  # a few steps: each new shape costs seconds of autotuning
        assert torch.equal(*conftest.greedy_pair(model, reference, 7, 6))


@pytest.mark.slow
@pytest.mark.filterwarnings('ignore:dynamo_pgo force disabled')
@pytest.mark.skipif(type(pick_vec_isa()).__name__ != 'VecAVX2', reason="runtime widens inductor's int8 GEMM on AVX2 "
                    "CPUs only (AVX-512 ones keep inductor's own blocking)")
def test_compiled_one_row_int8_takes_the_wide_blocking_on_avx2():
    """ Compiled for inference on an AVX2 CPU, a one-row Int8Linear (a decode step) runs inductor's int8 GEMM with the
    64-wide blocking runtime.widen_int8_gemv_on_avx2 registers (its code says so), and computes what eager int8 does
    (aten's kernel) up to bf16 rounding. """
    torch.manual_seed(0)
    q = Int8Linear(nn.Linear(128, 192, bias=False))
    x = torch.randn(1, 128)
    with torch.no_grad():
        eager = q(x)
    config = torch._inductor.config
    saved = {name: getattr(config, name) for name in runtime.CPU_INFERENCE_COMPILE}
    # inductor's GEMM only, not aten's, and compiled afresh: its caches' keys leave out the micro-kernels' table
    with config.patch({**saved, 'max_autotune_gemm_backends': 'CPP', 'force_disable_caches': True}):
        runtime.compile_for_inference(q)
        with torch.no_grad():
            compiled, (code,) = run_and_get_code(q, x)
    assert 'micro_gemm_kernel<1, 64, accum, prefetch>' in code
    assert ((compiled - eager).abs() <= eager.abs() * 2 ** -7 + 1e-3 * eager.abs().max()).all()


def test_lora_model_quantizes_its_base_and_keeps_the_adapters():
    model = apply_lora(tiny_gpt(), rank=4, alpha=8)
    conftest.perturb_adapters(model)
    idx = torch.randint(0, 71, (2, 9))
    expected = all_logits(model, idx)
    quantize(model, 'int8')
    assert isinstance(model.transformer.h[0].attn.c_attn.base, Int8Linear)
    assert model.transformer.h[0].attn.c_attn.lora_A.dtype == torch.float32
    assert (all_logits(model, idx) - expected).abs().max().item() <= 0.05


def test_dequantize_gives_plain_linears_with_the_int8_function():
    model = quantize(tiny_gpt(), 'int8')
    idx = torch.randint(0, 71, (2, 9))
    expected = all_logits(model, idx)
    dequantize(model)
    assert not any(isinstance(m, Int8Linear) for m in model.modules())
    # the same weights in fp32; the kernel rounded its input and output to bf16
    assert (all_logits(model, idx) - expected).abs().max().item() <= 0.02 * expected.abs().max().item()


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown quantization 'int4': use one of int8, nf4"):
        quantize(tiny_gpt(), 'int4')
    bigram = build_model(GPTConfig(model_type='bigram', vocab_size=71, block_size=32))
    with pytest.raises(ValueError, match="quantize='int8' needs model_type='gpt': a bigram model has no Linear layers"):
        quantize(bigram, 'int8')
