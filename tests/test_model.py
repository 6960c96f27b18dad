"""model.py: parity with Hugging Face GPT-2, SDPA vs manual attention, KV-cache generation vs the
full-recompute reference (one cache per generation, never reallocated; compiled, a longer run after a short one
compiles nothing new; a callback per new token; top_k=1
is the argmax; sampling draws from softmax(logits / temperature), over the top_k largest alone), model surgery, parameter counts, the CPU's peak FLOPs (doubled with native bf16), and the errors bad input gets."""

import math
import re

import pytest
import torch
from transformers import GPT2LMHeadModel

import conftest
import runtime
from model import GPT, CausalSelfAttention, GPTConfig, apply_lora, build_model, sample_next
from runtime import model_from_checkpoint

TINY = dict(n_layer=3, n_head=4, n_embd=64, block_size=32, vocab_size=71)


def tiny_gpt(**overrides):
    return conftest.tiny_gpt(**{**TINY, **overrides})


def test_logits_and_loss_match_huggingface(hf_gpt2_dir):
    hf = GPT2LMHeadModel.from_pretrained(hf_gpt2_dir, dtype=torch.float32).eval()
    ours = GPT.from_pretrained(str(hf_gpt2_dir)).eval()
    idx = torch.randint(0, 50257, (3, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(idx, labels=idx)  # HF shifts labels itself
        logits, loss = ours(idx[:, :-1], targets=idx[:, 1:])
        last, _ = ours(idx)
    assert (logits - ref.logits[:, :-1]).abs().max().item() <= 1e-4
    assert abs(loss.item() - ref.loss.item()) <= 1e-5
    assert (last[:, 0] - hf(idx).logits[:, -1]).abs().max().item() <= 1e-4  # last-position-only path


def test_from_pretrained_reads_shapes_from_the_directory(hf_gpt2_dir):
    model = GPT.from_pretrained(str(hf_gpt2_dir), override_args=dict(dropout=0.1))
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size) == (2, 4, 64, 64, 50257)
    assert c.dropout == 0.1 and c.bias and c.activation == 'gelu'
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied after loading


def test_sdpa_and_manual_attention_agree():
    model = tiny_gpt()
    idx = torch.randint(0, 71, (2, 32))
    with torch.no_grad():
        sdpa, _ = model(idx, targets=idx)
        for block in model.transformer.h:
            block.attn.flash = False
        manual, _ = model(idx, targets=idx)
    assert (sdpa - manual).abs().max().item() <= 1e-5


def test_cpu_bf16_attention_takes_the_manual_path(monkeypatch):
    # aten's CPU flash kernel is slow in bf16, so there the model computes attention itself
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, 'scaled_dot_product_attention', lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    model = tiny_gpt()
    idx = torch.randint(0, 71, (2, 32))
    with torch.no_grad():
        fp32, _ = model(idx, targets=idx)
        assert len(calls) == 3  # one per layer
        with torch.autocast('cpu', dtype=torch.bfloat16):
            bf16, _ = model(idx, targets=idx)
    assert len(calls) == 3
    assert bf16.dtype == torch.bfloat16 and (bf16.float() - fp32).abs().max().item() <= 0.1
    # the switch transformer_sizing.ipynb uses to measure the path a GPU takes
    monkeypatch.setattr(CausalSelfAttention, 'sdpa_on_cpu_in_low_precision', True)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        model(idx, targets=idx)
    assert len(calls) == 6


def test_train_and_eval_forward_agree_without_dropout():
    model = tiny_gpt()
    idx = torch.randint(0, 71, (2, 32))
    with torch.no_grad():
        eval_logits, _ = model(idx, targets=idx)
        train_logits, _ = model.train()(idx, targets=idx)
    assert torch.equal(eval_logits, train_logits)


def test_attention_is_causal():
    """ Changing a later token never changes the logits of earlier positions. """
    model = tiny_gpt()
    idx = torch.randint(0, 71, (1, 32))
    changed = idx.clone()
    changed[0, 20] = (changed[0, 20] + 1) % 71
    with torch.no_grad():
        a, _ = model(idx, targets=idx)
        b, _ = model(changed, targets=changed)
    assert torch.equal(a[:, :20], b[:, :20])
    assert not torch.equal(a[:, 20:], b[:, 20:])


@pytest.mark.parametrize('prompt_len,new_tokens', [(1, 31), (5, 20), (30, 40), (32, 10)])
def test_greedy_generation_with_cache_equals_full_recompute(prompt_len, new_tokens):
    """ Up to block_size (32) and past it, where the cache must crop and re-prefill. """
    model = tiny_gpt()
    prompt = torch.randint(0, 71, (2, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    reference = model.generate(prompt, new_tokens, top_k=1, use_kv_cache=False)
    cached = model.generate(prompt, new_tokens, top_k=1, use_kv_cache=True)
    assert cached.shape == (2, prompt_len + new_tokens)
    assert torch.equal(cached, reference)


def test_kv_cache_is_allocated_once_for_a_whole_generation(monkeypatch):
    """ One cache per generate call, sized at creation; past block_size it is refilled in place (a
    re-prefill of the window), never reallocated. """
    model = tiny_gpt()
    caches = []
    new_kv_cache = model.new_kv_cache
    monkeypatch.setattr(model, 'new_kv_cache', lambda b: caches.append(new_kv_cache(b)) or caches[-1])
    prompt = torch.randint(0, 71, (2, 5))
    created = []
    def check(_):
        ptrs = [t.data_ptr() for t in caches[0].k + caches[0].v]
        created.extend([] if created else ptrs)
        assert ptrs == created
    model.generate(prompt, 60, top_k=1, callback=check)  # 5 + 60 tokens: the window slides past 32
    assert len(caches) == 1 and len(caches[0].k) == len(caches[0].v) == 3  # a pair per layer
    assert all(t.shape == (2, 4, 32, 16) for t in caches[0].k + caches[0].v)  # (B, nh, block_size, hs)


@pytest.mark.parametrize('backend', ['eager', 'aot_eager'])
def test_compiled_generation_is_one_graph_and_equals_eager(backend):
    """ torch.compile captures the cached forward whole (fullgraph: a graph break is an error), with the
    cache's length symbolic (dynamic, so decode steps don't recompile), and writes the cache in place:
    its tokens equal eager's, past block_size too. 'aot_eager' runs the functionalized graph, where a
    cache write that lost its in-place effect would show; inductor adds kernels, not semantics. """
    model = tiny_gpt()
    prompt = torch.randint(0, 71, (2, 5), generator=torch.Generator().manual_seed(3))
    reference = model.generate(prompt, 40, top_k=1, use_kv_cache=False)
    torch._dynamo.reset()
    model.compile(fullgraph=True, dynamic=True, backend=backend)
    assert torch.equal(model.generate(prompt, 40, top_k=1), reference)


@pytest.mark.parametrize('batch', [1, 2])
def test_compiled_generation_compiles_nothing_new_for_more_tokens(batch):
    """ sample.py compiles with a 2-token warm-up, then generates max_new_tokens: the model gets its tokens as a
    fresh tensor, not a view of generate's output (whose row stride, prompt + max_new_tokens, a compiled model
    guards on), so the longer run compiles nothing new. """
    graphs = []
    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    model = tiny_gpt()
    prompt = torch.randint(0, 71, (batch, 5), generator=torch.Generator().manual_seed(3))
    torch._dynamo.reset()
    model.compile(backend=backend)
    model.generate(prompt, 2, top_k=1)
    compiled = len(graphs)
    model.generate(prompt, 20, top_k=1)
    assert len(graphs) == compiled


def test_compiled_cpu_decode_steps_compute_attention_themselves():
    """ Compiled on a CPU, a decode step (one new query) takes the manual path, which inductor fuses with the cache
    write into one kernel; a prefill keeps SDPA. The recompute reference's tokens all the same. """
    graphs = {}  # new tokens fed (a number, or a symbol: any but 1) -> whether the graph calls SDPA

    def backend(gm, example_inputs):
        idx = next(n for n in gm.graph.find_nodes(op='placeholder') if 'idx' in n.name)
        graphs[str(idx.meta['example_value'].size(1))] = any(
            n.target is torch.nn.functional.scaled_dot_product_attention for n in gm.graph.nodes)
        return gm.forward
    model = tiny_gpt()
    prompt = torch.randint(0, 71, (2, 5), generator=torch.Generator().manual_seed(3))
    reference = model.generate(prompt, 40, top_k=1, use_kv_cache=False)
    torch._dynamo.reset()
    model.compile(backend=backend)
    assert torch.equal(model.generate(prompt, 40, top_k=1), reference)
    assert graphs.pop('1') is False and graphs.pop('5') is True  # a decode step; the prompt's prefill
    assert graphs and all(graphs.values())  # the window's prefills


def test_callback_gets_each_new_token_as_it_is_sampled():
    model = tiny_gpt()
    prompt = torch.randint(0, 71, (2, 3))
    for use_kv_cache in (True, False):
        tokens = []
        torch.manual_seed(1)
        out = model.generate(prompt, 40, temperature=0.9, top_k=5, use_kv_cache=use_kv_cache, callback=tokens.append)
        assert len(tokens) == 40 and all(t.shape == (2, 1) for t in tokens)
        assert torch.equal(torch.cat([prompt, *tokens], dim=1), out)


def test_top_k_one_is_the_argmax_without_a_random_draw():
    model = tiny_gpt()
    prompt = torch.randint(0, 71, (1, 4))
    state = torch.get_rng_state()
    out = model.generate(prompt, 1, top_k=1)
    assert torch.equal(torch.get_rng_state(), state)
    with torch.no_grad():
        assert out[0, -1] == model(prompt)[0][0, -1].argmax()
    tie = torch.tensor([[0.0, 2.0, 1.0, 2.0]])
    assert sample_next(tie, top_k=1).item() == 1  # an exact tie (bf16 logits have them) goes to the lower id


def test_small_temperature_samples_without_overflow():
    """ fp16 logits of a trained model over a near-greedy temperature exceed fp16's range, and any logits over a
    tiny enough one exceed fp32's: the sample is the argmax, instead of inf logits and a crash in torch.multinomial;
    also with denormal numbers flushed to zero, as the scripts run on a CPU (1e-40 is one in fp32). """
    logits = torch.tensor([[60.0, 66.0, 10.0], [66.0, 10.0, 60.0]], dtype=torch.float16)
    for flush_denormal in (False, True):
        torch.set_flush_denormal(flush_denormal)
        for dtype, temperature in ((torch.float16, 1e-3), (torch.float32, 1e-40)):
            for top_k in (None, 2):
                assert sample_next(logits.to(dtype), temperature, top_k).flatten().tolist() == [1, 0]
    # the same distribution as softmax(logits / temperature), and with top_k the softmax over the k largest alone
    logits = torch.randn(2, 50, generator=torch.Generator().manual_seed(0)) * 3
    torch.manual_seed(1)
    for top_k in (None, 3):
        drawn = torch.cat([sample_next(logits, 0.7, top_k) for _ in range(4000)], dim=1)  # (2, 4000)
        for row in range(2):
            counts = torch.bincount(drawn[row], minlength=50) / drawn.size(1)
            kept = torch.full((50,), -float('inf'))
            ids = logits[row].argsort(descending=True)[:top_k or 50]
            kept[ids] = logits[row, ids]
            assert set(drawn[row].tolist()) <= set(ids.tolist())
            assert (counts - torch.softmax(kept / 0.7, dim=-1)).abs().max() < 0.03


def test_cached_forward_matches_full_forward_per_position():
    """ Prefill 10 tokens, then feed 3, then 1: each step's last logits equal the full forward's. """
    model = tiny_gpt()
    idx = torch.randint(0, 71, (2, 14))
    cache = model.new_kv_cache(2)
    with torch.no_grad():
        for start, end in [(0, 10), (10, 13), (13, 14)]:
            step, _ = model(idx[:, start:end], kv_cache=cache)
            full, _ = model(idx[:, :end])
            assert (step - full).abs().max().item() <= 1e-5
    assert cache.pos == 14


def test_sampling_with_seed_is_reproducible():
    model = tiny_gpt()
    prompt = torch.zeros((1, 1), dtype=torch.long)
    runs = []
    for _ in range(2):
        torch.manual_seed(42)
        runs.append(model.generate(prompt, 50, temperature=0.8, top_k=10))
    assert torch.equal(*runs)
    torch.manual_seed(42)
    assert torch.equal(model.generate(prompt, 50, temperature=0.8, top_k=10, use_kv_cache=False), runs[0])


def test_top_k_larger_than_vocab_and_top_k_one():
    model = tiny_gpt()
    prompt = torch.zeros((1, 3), dtype=torch.long)
    out = model.generate(prompt, 5, top_k=10_000)
    assert out.shape == (1, 8) and out.max() < 71
    with torch.no_grad():
        logits, _ = model(prompt)
    assert model.generate(prompt, 1, top_k=1)[0, -1] == logits[0, -1].argmax()


def test_crop_block_size_then_forward_and_generate():
    model = tiny_gpt()
    model.crop_block_size(16)
    assert model.config.block_size == 16 and model.transformer.wpe.weight.shape == (16, 64)
    idx = torch.randint(0, 71, (2, 16))
    logits, loss = model(idx, targets=idx)
    assert logits.shape == (2, 16, 71) and torch.isfinite(loss)
    assert model.generate(idx[:, :4], 20, top_k=1).shape == (2, 24)
    with pytest.raises(ValueError, match='block size is only 16'):
        model(torch.zeros((1, 17), dtype=torch.long))


def test_num_params_of_gpt2_124m():
    with torch.device('meta'):
        model = GPT(GPTConfig(vocab_size=50257))
    assert round(model.get_num_params() / 1e6, 2) == 123.65
    assert model.get_num_params(non_embedding=False) - model.get_num_params() == 1024 * 768


def test_num_params_by_hand_with_lora_int8_and_packed_weights():
    """ Counted by hand: a Block's four matrices 12 C^2 and two LayerNorms; the token embedding once (the lm_head's
    weight) until int8 or packing gives the lm_head its own copy, when the embedding is a lookup alone. """
    from quantize import pack, quantize
    L, C, V, T = 2, 32, 65, 16
    config = dict(n_layer=L, n_head=2, n_embd=C, block_size=T, vocab_size=V, bias=False)
    model = tiny_gpt(**config)
    total = L * (12 * C * C + 2 * C) + V * C + T * C + C  # + ln_f
    assert model.get_num_params(non_embedding=False) == total and model.get_num_params() == total - T * C
    apply_lora(model, rank=4, alpha=8)  # c_attn (C -> 3C) and attn.c_proj (C -> C): rank x (in + out) each
    lora = L * 4 * ((C + 3 * C) + (C + C))
    assert model.get_num_params(trainable=True) == lora  # the frozen position embedding is not subtracted
    assert model.get_num_params() == total - T * C + lora
    quantize(model, 'int8')  # int8 buffers: still in x out parameters each
    assert model.get_num_params() == total - T * C + lora
    assert pack(tiny_gpt(**config), torch.float32).get_num_params() == total - T * C


def test_init_follows_gpt2():
    model = GPT(GPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=64, vocab_size=1000))
    std = lambda p: p.detach().std().item()
    for name, p in model.named_parameters():
        if '.ln_' in name:  # LayerNorms start as the identity
            assert torch.all(p == (1 if name.endswith('.weight') else 0)), name
        elif name.endswith('.bias'):
            assert p.abs().max() == 0, name
        elif name.endswith('c_proj.weight'):  # the residual projections: scaled by 1/sqrt(2 * n_layer)
            assert std(p) == pytest.approx(0.02 / math.sqrt(16), rel=0.05), name
        else:  # the embeddings and the other Linears
            assert std(p) == pytest.approx(0.02, rel=0.05), name


def test_loss_at_init_is_near_uniform():
    model = tiny_gpt()
    idx, targets = torch.randint(0, 71, (2, 8, 32))  # targets unrelated to the input (tied weights favour idx itself)
    _, loss = model(idx, targets=targets)
    assert abs(loss.item() - math.log(71)) < 0.1


def test_configure_optimizers_decays_2d_weights_only(capsys):
    model = tiny_gpt(bias=False)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    decay, no_decay = opt.param_groups
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    assert all(p.dim() == 2 for p in decay['params']) and all(p.dim() == 1 for p in no_decay['params'])
    # the tied embedding appears once; every trainable tensor is in exactly one group
    assert len(decay['params']) + len(no_decay['params']) == len(list(model.parameters()))
    assert 'num decayed parameter tensors' in capsys.readouterr().out


@pytest.mark.parametrize('lora', [False, True])
def test_flops_per_token_counts_what_a_training_step_multiplies(lora):
    """ flops_per_token against torch's FLOP counter on a real forward-backward, attention on its math path so
    that its matmuls count: full training, and LoRA, whose frozen base gets no weight gradients (6N would
    overstate its MFU by ~1.5x). The counter doesn't see what the rule counts as parameters but never
    multiplies (LayerNorm gains), nor the input gradient of the first adapted Linear, which autograd skips. """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    model = tiny_gpt(n_layer=4, bias=False)
    if lora:
        apply_lora(model, rank=4, alpha=8.0, targets=('attn.c_attn', 'mlp.c_fc'))
    idx = torch.randint(model.config.vocab_size, (2, model.config.block_size), generator=torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        _, loss = model(idx, idx)
        loss.backward()
    assert model.flops_per_token() == pytest.approx(counter.get_total_flops() / idx.numel(), rel=0.03)


def test_estimate_mfu_uses_the_given_peak():
    model = tiny_gpt()
    c = model.config
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()  # the tied lm_head once
    flops_per_token = 6 * n + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.block_size
    expected = flops_per_token * c.block_size * 8 / 0.5 / 1e12
    assert model.estimate_mfu(8, 0.5, peak_flops=1e12) == pytest.approx(expected)
    assert model.estimate_mfu(8, 0.5, peak_flops=None) is None  # a device whose peak is unknown
    # a bigram model looks its logits up: no matmul FLOPs to count, so no MFU (shown as '-')
    bigram = build_model(GPTConfig(block_size=8, vocab_size=65, model_type='bigram'))
    assert bigram.estimate_mfu(8, 0.5, peak_flops=1e12) is None


@pytest.mark.parametrize('name, peak', [
    ('NVIDIA H100 80GB HBM3', 989e12), ('NVIDIA H100 PCIe', 756e12), ('NVIDIA H100 NVL', 835e12),
    ('NVIDIA A100-SXM4-80GB', 312e12), ('NVIDIA L4', 121e12), ('Tesla T4', 65e12),
    # other cards whose names hold a listed one: no guess
    ('NVIDIA L40', None), ('NVIDIA A10G', None), ('NVIDIA RTX A1000 Laptop GPU', None),
    ('NVIDIA GeForce RTX 4090 Laptop GPU', None)])
def test_gpu_peak_is_read_from_whole_words_of_its_name(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: name)
    assert runtime.peak_flops('cuda') == peak


def test_cpu_peak_doubles_in_native_bf16():
    fp32, bf16 = runtime.peak_flops('cpu'), runtime.peak_flops('cpu', dtype='bfloat16')
    assert fp32 == torch.get_num_threads() * 1e11
    assert bf16 == fp32 * (2 if runtime.cpu_has_native_bf16() else 1)
    assert runtime.peak_flops('cpu', given=5.0, dtype='bfloat16') == 5.0


def test_cpu_peak_doubles_on_a_cpu_with_native_bf16(monkeypatch):
    """ The doubling itself, whatever this machine's CPU: one with AVX512-BF16 or AMX, as the table's note says. """
    monkeypatch.setattr(runtime, 'cpu_has_native_bf16', lambda: True)
    threads = torch.get_num_threads()
    assert runtime.peak_flops('cpu', dtype='bfloat16') == threads * 2e11
    assert runtime.peak_flops('cpu', dtype='float32') == runtime.peak_flops('cpu', dtype='float16') == threads * 1e11


@pytest.mark.parametrize('avx512_bf16, amx, native', [(False, False, False), (True, False, True),
                                                      (False, True, True), (True, True, True)])
def test_native_bf16_is_either_instruction_set(monkeypatch, avx512_bf16, amx, native):
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: amx)
    assert runtime.cpu_has_native_bf16() == native


def test_bigram_matches_its_table():
    model = build_model(GPTConfig(model_type='bigram', vocab_size=71, block_size=32))
    idx, targets = torch.randint(0, 71, (2, 2, 32))
    logits, loss = model(idx, targets=targets)
    assert torch.equal(logits, model.token_embedding_table.weight[idx])
    assert abs(loss.item() - math.log(71)) < 0.05
    out = model.generate(idx[:, :3], 40, top_k=1)  # past block_size too
    assert torch.equal(out, model.generate(idx[:, :3], 40, top_k=1, use_kv_cache=False))


@pytest.mark.parametrize('kwargs,message', [
    (dict(n_embd=65, n_head=4), 'not divisible by n_head=4'),
    (dict(model_type='trigram'), "unknown model_type 'trigram'"),
    (dict(activation='swish'), "unknown activation 'swish'"),
    (dict(n_head=0), 'n_head=0: the model\'s sizes must be at least 1'),
    (dict(n_layer=-1, vocab_size=0), 'vocab_size=0, n_layer=-1: the model\'s sizes must be at least 1'),
])
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**kwargs)


def test_input_longer_than_block_size_is_a_clear_error():
    with pytest.raises(ValueError, match='block size is only 32'):
        tiny_gpt()(torch.zeros((1, 33), dtype=torch.long))


def test_pretrained_bad_input(hf_gpt2_dir):
    with pytest.raises(ValueError, match="unknown pretrained model 'gpt3'"):
        GPT.from_pretrained('gpt3')
    with pytest.raises(ValueError, match='cannot override n_layer'):
        GPT.from_pretrained(str(hf_gpt2_dir), override_args=dict(n_layer=4))


@pytest.mark.parametrize('change, message', [
    (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon=1e-06 (ours: 1e-05)"),
    (dict(n_inner=100), "n_inner=100 (ours: 128)"),
    (dict(tie_word_embeddings=False), "tie_word_embeddings=False (ours: True)"),
])
def test_pretrained_config_we_cannot_hold_is_refused(tmp_path, change, message):
    # each would load without an error and give other logits than Hugging Face's
    from transformers import GPT2Config, GPT2LMHeadModel
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=16, vocab_size=64, **change)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"its GPT2Config has {message}, which this GPT does not support")):
        GPT.from_pretrained(str(tmp_path))


def test_hub_name_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(OSError, match="could not fetch the 'gpt2' weights from the Hugging Face hub") as e:
        GPT.from_pretrained('gpt2')
    assert '.;' not in str(e.value)  # transformers' first line ends its sentence, ours goes on after a ';'


def test_from_checkpoint_accepts_original_nanogpt_layout():
    """ Original nanoGPT: compiled-model key prefix, no activation/model_type in model_args, erf GELU. """
    model = tiny_gpt()
    model_args = {k: v for k, v in TINY.items()} | dict(bias=True, dropout=0.0)
    state = {f'_orig_mod.{k}': v for k, v in model.state_dict().items()}
    loaded = model_from_checkpoint({'model': state, 'model_args': model_args}).eval()
    assert loaded.config.activation == 'gelu_exact'
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    idx = torch.randint(0, 71, (1, 32))
    with torch.no_grad():
        tanh, _ = model(idx, idx)
        erf, _ = loaded(idx, idx)
    assert 0 < (tanh - erf).abs().max().item() < 1e-2  # same weights, the activation the checkpoint trained with
