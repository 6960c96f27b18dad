"""quantize.py (NF4 through bitsandbytes) and QLoRA: NF4 codes dequantize to what bitsandbytes' own Linear4bit
dequantizes and stay within NF4's rounding bound; a QLoRA step trains only the adapters; train.py --quantize=nf4
resumes bit for bit from a checkpoint that stores the 4-bit base; export.py merges the adapters into the
dequantized base with the quantized model's logits; sample.py and bench.py --mode=memory run; bad input fails
with one line each (quantize without LoRA, an unknown name, a bigram model, bitsandbytes missing, a changed
setting on resume)."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import conftest
from conftest import (all_logits, error_line, iter_losses, load, make_char_dataset, perturb_adapters, run_script,
                      run_train, save_checkpoint, step_losses, tiny_train_args, train_in_two_halves, train_steps)
from model import Bigram, GPTConfig, LORA_TARGETS, apply_lora
from quantize import NF4Linear, dequantize, quantize

bnb = pytest.importorskip('bitsandbytes', reason="bitsandbytes is not installed (pip install -r requirements.txt)")

# the vocabulary of conftest's tiny text, so that sample.py can read the models
CONFIG = dict(block_size=32, vocab_size=len(set(conftest.tiny_text())), n_layer=2, n_head=2, n_embd=64)
TINY = tiny_train_args(n_embd=64)
LORA = dict(rank=4, alpha=8.0, dropout=0.0, targets=LORA_TARGETS)


def tiny_gpt():
    return conftest.tiny_gpt(**CONFIG)


def train(cwd, *args, **kw):
    return run_train(cwd, *TINY, *args, **kw)


def test_nf4_codes_dequantize_like_bitsandbytes_linear4bit():
    torch.manual_seed(0)
    linear = nn.Linear(256, 192)
    with torch.no_grad():
        linear.weight.normal_(std=0.02)
    q = NF4Linear(linear)
    # the library's own module, quantized independently from the same weights, in QLoRA's blocks of 64
    ref = bnb.nn.Params4bit(linear.weight.detach().clone(), requires_grad=False, quant_type='nf4',
                            blocksize=64, compress_statistics=False)._quantize('cpu')
    expected = bnb.functional.dequantize_4bit(ref.data, ref.quant_state)
    assert torch.equal(q.dequantized_weight(), expected)
    # rounding to the nearest of the 16 NF4 values errs at most half their largest gap (-1 to -0.6962), times the block's scale
    w = linear.weight.detach()
    err = (q.dequantized_weight() - w).view(-1, 64).abs()
    scale = w.view(-1, 64).abs().amax(dim=1, keepdim=True)
    assert (err <= 0.5 * (1 - 0.6961928009986877) * scale + 1e-7).all()
    assert err.mean() / w.abs().mean() < 0.12  # ~9% typical for normal weights
    assert q.weight.dtype == torch.uint8 and q.weight.numel() == w.numel() // 2  # two codes per byte
    assert q.absmax.numel() == w.numel() // 64  # one scale per block
    x = torch.randn(3, 5, 256)
    assert torch.allclose(q(x), F.linear(x, expected, linear.bias), atol=1e-5)
    assert torch.allclose(q.dequantized()(x), q(x), atol=1e-5)


def test_nf4_weights_count_in_the_flops():
    # a 4-bit weight is a buffer, not a parameter, but its matmuls are done all the same: MFU counts them as it
    # counts LoRA's frozen base (test_model checks that count against torch's FLOP counter)
    model = apply_lora(tiny_gpt(), **LORA)
    before = model.flops_per_token()
    assert quantize(model, 'nf4').flops_per_token() == before


def test_qlora_step_trains_only_the_adapters():
    model = quantize(apply_lora(tiny_gpt(), **LORA), 'nf4').train()
    assert sum(isinstance(m, NF4Linear) for m in model.modules()) == CONFIG['n_layer'] * len(LORA_TARGETS)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora_only = {n for n, p in apply_lora(tiny_gpt(), **LORA).named_parameters() if p.requires_grad}
    assert trainable == lora_only
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith(('lora_A', 'lora_B'))}
    x = torch.randint(CONFIG['vocab_size'], (4, CONFIG['block_size']), generator=torch.Generator().manual_seed(1))
    losses = train_steps(model, x, x)
    assert losses[-1] < losses[0] - 0.1
    for k, v in model.state_dict().items():
        if k in frozen:
            assert torch.equal(v, frozen[k]), k  # the 4-bit codes, scales, biases, embeddings: untouched
        else:
            assert k.endswith(('lora_A', 'lora_B'))
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)


def test_export_merges_adapters_into_the_dequantized_base(tmp_path):
    from transformers import GPT2LMHeadModel
    model = quantize(perturb_adapters(apply_lora(tiny_gpt(), **LORA), std=0.5), 'nf4').eval()
    save_checkpoint(tmp_path / 'out', model, lora=LORA, quantize='nf4')
    p = run_script('export.py', '--out_dir=out', '--to=hf', cwd=tmp_path)
    assert 'dequantized the nf4 base weights' in p.stdout
    idx = torch.randint(CONFIG['vocab_size'], (2, CONFIG['block_size']), generator=torch.Generator().manual_seed(1))
    ours = all_logits(model, idx)
    with torch.no_grad():
        theirs = GPT2LMHeadModel.from_pretrained(tmp_path / 'hf').eval()(idx).logits
    assert (theirs - ours).abs().max().item() <= 1e-4  # only float rounding: the merge is exact in the dequantized weights
    # and the quantization is real: the unquantized model with the same adapters computes something else
    unquantized = perturb_adapters(apply_lora(tiny_gpt(), **LORA), std=0.5).eval()
    torch.manual_seed(0)
    assert (all_logits(unquantized, idx) - ours).abs().max().item() > 1e-3


@pytest.fixture(scope='module')
def qlora_run(tmp_path_factory):
    """ 6 QLoRA iterations in one go, dropout on: the reference for exact resume. """
    cwd = tmp_path_factory.mktemp('qlora')
    make_char_dataset(cwd / 'data' / 'tiny_char')
    args = ['--lora_rank=4', '--quantize=nf4', '--lora_targets=attn.c_attn,mlp.c_fc', '--dropout=0.1',
            '--lora_dropout=0.1', '--eval_interval=3']
    p = train(cwd, *args, '--max_iters=6')
    return cwd, args, p.stdout


def test_qlora_resumes_bit_for_bit(qlora_run):
    cwd, args, out = qlora_run
    first, second = train_in_two_halves(train, cwd, args)
    assert {**iter_losses(first.stdout), **iter_losses(second.stdout)} == iter_losses(out)
    assert step_losses(second.stdout)[6] == step_losses(out)[6]
    a, b = load(cwd / 'out' / 'ckpt.pt'), load(cwd / 'out_resumed' / 'ckpt.pt')
    assert a['quantize'] == 'nf4' and a['iter_num'] == b['iter_num'] == 6
    assert a['model']['transformer.h.0.attn.c_attn.base.weight'].dtype == torch.uint8  # the base is stored 4-bit
    assert a['model'].keys() == b['model'].keys()
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k
    losses = iter_losses(out)
    assert losses[5] < losses[0]
    # resumed with its --quantize alone: the LoRA settings are the checkpoint's, not needed again
    train(cwd, '--quantize=nf4', '--max_iters=7', '--out_dir=out_resumed', '--init_from=resume')
    assert load(cwd / 'out_resumed' / 'ckpt.pt')['iter_num'] == 7


def test_sample_loads_qlora_and_quantizes_plain_checkpoints(qlora_run, tmp_path):
    cwd, _, _ = qlora_run
    args = ['--device=cpu', '--num_samples=1', '--max_new_tokens=8', '--dtype=float32']
    p = run_script('sample.py', '--out_dir=out', *args, cwd=cwd, env={'OMP_NUM_THREADS': '1'})
    assert p.stdout.count('---------------') == 1
    make_char_dataset(tmp_path / 'data' / 'tiny_char')
    save_checkpoint(tmp_path / 'plain', tiny_gpt())
    p = run_script('sample.py', '--out_dir=plain', '--quantize=nf4', *args, cwd=tmp_path, env={'OMP_NUM_THREADS': '1'})
    assert p.stdout.count('---------------') == 1


def test_bench_memory_mode_rows_and_ratio(tmp_path):
    small = ['--mode=memory', '--device=cpu', '--n_layer=2', '--n_head=2', '--n_embd=64', '--vocab_size=65',
             '--block_size=32', '--lora_rank=4']
    p = run_script('bench.py', *small, env={'OMP_NUM_THREADS': '1'}, cwd=tmp_path)
    rows = [line.split()[0] for line in p.stdout.splitlines()
            if line.split() and line.split()[0] in ('full', 'lora', 'lora+gc', 'qlora', 'qlora+gc')]
    assert rows == ['full', 'lora', 'lora+gc', 'qlora', 'qlora+gc'], p.stdout
    assert 'qlora/lora peak memory: ' in p.stdout
    # trainable: n_layer x rank x (in + out of c_attn, c_proj, c_fc, mlp.c_proj = 4+2+5+5 x n_embd)
    assert p.stdout.split('\nqlora ')[1].splitlines()[0].endswith(f' {2 * 4 * 16 * 64:,}')
    # a model too big for this machine is skipped, with what it would need, before anything is built
    p = run_script('bench.py', *small[:2], '--n_layer=64', '--n_embd=8192', '--n_head=32', cwd=tmp_path)
    assert p.stdout.count('skipped: needs about') == 5 and 'qlora/lora' not in p.stdout


def test_bad_quantization_input_is_one_line(qlora_run, tmp_path):
    cwd, args, _ = qlora_run
    error_line(train(cwd, '--quantize=nf4', '--max_iters=1', f'--out_dir={tmp_path / "a"}', check=False),
               "freezes the base model's weights in 4 bits, which can't be trained: train LoRA adapters")
    error_line(train(cwd, '--quantize=int8', '--lora_rank=4', '--max_iters=1', f'--out_dir={tmp_path / "b"}',
                     check=False), "quantize='int8' can't train: use '' or 'nf4' (QLoRA); int8 is for inference")
    error_line(train(cwd, '--init_from=resume', '--lora_rank=4', '--lora_targets=attn.c_attn,mlp.c_fc',
                     '--dropout=0.1', '--lora_dropout=0.1', '--quantize=', '--max_iters=7', check=False),
               "resuming can't change it")
    with pytest.raises(ValueError, match='a bigram model has no Linear layers to quantize'):
        quantize(Bigram(GPTConfig(model_type='bigram', vocab_size=65)), 'nf4')
    make_char_dataset(tmp_path / 'data' / 'tiny_char')
    save_checkpoint(tmp_path / 'bigram', Bigram(GPTConfig(model_type='bigram', block_size=8,
                                                          vocab_size=CONFIG['vocab_size'])))
    sample = ['--device=cpu', '--num_samples=1', '--max_new_tokens=4', '--quantize=nf4']
    error_line(run_script('sample.py', '--out_dir=bigram', *sample, cwd=tmp_path, check=False),
               'a bigram model has no Linear layers to quantize')
    # bitsandbytes missing: a package of that name that fails to import, first on the path
    fake = tmp_path / 'no_bnb' / 'bitsandbytes'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text("raise ImportError('No module named bitsandbytes')\n")
    save_checkpoint(tmp_path / 'plain', tiny_gpt())
    error_line(run_script('sample.py', '--out_dir=plain', *sample, cwd=tmp_path, check=False,
                          env={'PYTHONPATH': str(tmp_path / 'no_bnb')}),
               "needs bitsandbytes, which is not installed: pip install 'bitsandbytes")
    # a QLoRA checkpoint read without bitsandbytes is intact: it says what to install, not that the file is corrupt
    last = error_line(run_script('sample.py', f'--out_dir={cwd / "out"}', *sample[:-1], cwd=tmp_path, check=False,
                                 env={'PYTHONPATH': str(tmp_path / 'no_bnb')}),
                      f"cannot load {cwd / 'out' / 'ckpt.pt'}: quantize='nf4' needs bitsandbytes, which is not installed")
    assert 'corrupt' not in last
    # its base is NF4 already: int8 on top is refused with the way out
    for script in ('sample.py', 'chat.py'):
        error_line(run_script(script, f'--out_dir={cwd / "out"}', '--device=cpu', '--quantize=int8', cwd=cwd,
                              check=False, input=''),
                   "the checkpoint's base is quantized to nf4 already (QLoRA): drop --quantize=int8")
    with pytest.raises(ValueError, match='already quantized'):
        quantize(quantize(tiny_gpt(), 'nf4'), 'nf4')
    model = dequantize(quantize(tiny_gpt(), 'nf4'))
    assert not any(isinstance(m, NF4Linear) for m in model.modules())
