"""bench.py guards: the training benchmark on real and random data (its loss is the model's loss, its summary's
tokens/s and MFU follow from its ms/iter, which averages the timed iterations; each iteration's MFU follows from
its time), the profiler trace, the eager-vs-compiled benchmark (both start from
the same weights: same first loss; the speedup printed is the ratio of the times) and the generation benchmark (KV
cache and full recompute give the same greedy tokens, or the first new token that differs is named; the ratio printed is the ratio of the rates; the
weight-streaming floor counts the model's weight bytes and feeds each matrix the dtype a decode step does, the KV
cache line the keys and values read, in autocast's dtype, and the decode line's share is the ratio of the two
times; with --quantize=int8 the int8 model too, timed in rounds alternating with the fp32 one, and the ratio of
the speeds; compiled too)."""

import json
import math
import re

import numpy as np
import pytest
import model as model_py
from conftest import error_line, run_in_process, run_script
from data_io import read_meta
from model import GPT, GPTConfig

SHAPE = dict(n_layer=2, n_head=2, n_embd=32, block_size=16)
ARGS = ['--device=cpu', '--dtype=float32', '--compile=False', '--batch_size=2', *[f'--{k}={v}' for k, v in SHAPE.items()]]


def summary(stdout):
    """ (ms/iter, tokens/s, MFU %) from the final line. """
    m = re.search(r"time per iteration: ([\d.]+)ms, ([\d,]+) tokens/s, MFU: ([\d.]+)%\n$", stdout)
    assert m, stdout[-1000:]
    return float(m[1]), float(m[2].replace(',', '')), float(m[3])


def test_random_data(tmp_path):
    import torch
    p = run_script('bench.py', *ARGS, '--real_data=False', '--vocab_size=128', '--burnin_iters=2', '--timed_iters=3',
                   '--peak_flops=1e12', '--seed=5', cwd=tmp_path)
    assert len(re.findall(r"^burn-in iter \d: loss [\d.]+, time [\d.]+ms, mfu [\d.]+%$", p.stdout, re.M)) == 2
    assert len(re.findall(r"^timed iter \d: loss [\d.]+, time [\d.]+ms, mfu [\d.]+%$", p.stdout, re.M)) == 3
    # the first loss is the fresh model's on the fixed batch: rebuild both as bench.py draws them
    torch.manual_seed(5)
    x, y = torch.randint(128, (2, 16)), torch.randint(128, (2, 16))
    model = GPT(GPTConfig(vocab_size=128, bias=False, **SHAPE))
    first = float(re.search(r"burn-in iter 0: loss ([\d.]+)", p.stdout)[1])
    assert abs(first - model(x, y)[1].item()) < 1e-4
    ms, tokens_per_s, mfu = summary(p.stdout)
    assert math.isclose(tokens_per_s, 2 * 16 / ms * 1000, rel_tol=0.01, abs_tol=0.5)  # printed as a whole number
    assert math.isclose(mfu, model.flops_per_token() * 2 * 16 / (ms / 1000) / 1e12 * 100, rel_tol=0.01, abs_tol=0.01)


def test_real_data(char_workdir):
    p = run_script('bench.py', *ARGS, '--real_data=True', '--dataset=tiny_char', '--burnin_iters=1',
                   '--timed_iters=2', cwd=char_workdir)
    vocab_size = read_meta(char_workdir / 'data' / 'tiny_char')['vocab_size']  # the model takes meta.pkl's
    n_params = GPT(GPTConfig(vocab_size=vocab_size, bias=False, **SHAPE)).get_num_params()
    assert f"{n_params/1e6:.2f}M parameters, 32 tokens per iteration" in p.stdout
    # the first loss is the fresh model's on the first batch of train.bin: rebuild both as bench.py draws them
    import torch
    torch.manual_seed(1337)
    model = GPT(GPTConfig(vocab_size=vocab_size, bias=False, **SHAPE))
    tokens = torch.from_numpy(np.fromfile(char_workdir / 'data' / 'tiny_char' / 'train.bin', np.uint16).astype(np.int64))
    ix = torch.randint(len(tokens) - 16, (2,))
    x, y = (torch.stack([tokens[i + shift:i + shift + 16] for i in ix]) for shift in (0, 1))
    first = float(re.search(r"burn-in iter 0: loss ([\d.]+)", p.stdout)[1])
    assert abs(first - model(x, y)[1].item()) < 1e-4
    summary(p.stdout)


def test_missing_data_is_one_clear_error(tmp_path):
    """ A dataset not prepared yet names its prepare.py; one that does not exist names those that do. """
    (tmp_path / 'data' / 'unprepared').mkdir(parents=True)
    (tmp_path / 'data' / 'unprepared' / 'prepare.py').write_text('')
    p = run_script('bench.py', *ARGS, '--dataset=unprepared', cwd=tmp_path, check=False)
    assert error_line(p, "data/unprepared/train.bin not found: run `python data/unprepared/prepare.py` first") \
        == p.stderr.strip()
    p = run_script('bench.py', *ARGS, '--dataset=nothere', cwd=tmp_path, check=False)
    assert error_line(p, "data/nothere/train.bin not found, and there is no data/nothere/prepare.py to make it: "
                         "--dataset names a dataset folder of data/ (unprepared)") == p.stderr.strip()


def test_profile_writes_a_trace(tmp_path):
    p = run_script('bench.py', *ARGS, '--real_data=False', '--profile=True', '--profile_dir=trace', cwd=tmp_path)
    assert len(re.findall(r"^\d+/15 loss: [\d.]+$", p.stdout, re.M)) == 15
    folder = re.search(r"profiler trace written to (\S+):", p.stdout)[1]
    assert folder == str(tmp_path / 'trace')
    traces = list((tmp_path / 'trace').glob('*.pt.trace.json'))
    assert len(traces) == 1
    events = json.loads(traces[0].read_text())['traceEvents']
    assert sum(e.get('name', '').startswith('ProfilerStep#') for e in events) == 5  # the 5 active steps


@pytest.mark.slow
def test_compile_mode(tmp_path):
    p = run_script('bench.py', *ARGS, '--mode=compile', '--real_data=False', '--vocab_size=64', '--burnin_iters=1',
                   '--timed_iters=7', cwd=tmp_path)  # blocks of 5 and 2
    first = dict(re.findall(r"^(eager|compiled): first loss ([\d.]+), burn-in [\d.]+s$", p.stdout, re.M))
    assert first.keys() == {'eager', 'compiled'} and abs(float(first['eager']) - float(first['compiled'])) <= 2e-4
    ms = dict(re.findall(r"^(eager|compiled): ([\d.]+)ms/iter, [\d,]+ tokens/s, MFU: [\d.]+%$", p.stdout, re.M))
    ratio = float(re.search(r"^compile speedup: ([\d.]+)x$", p.stdout, re.M)[1])
    assert math.isclose(ratio, float(ms['eager']) / float(ms['compiled']), rel_tol=0.02, abs_tol=0.01)


def test_generate_mode(tmp_path):
    # 8 + 30 tokens run past block_size 16: both paths slide their window
    p = run_script('bench.py', *ARGS, '--mode=generate', '--vocab_size=64', '--prompt_len=8', '--gen_tokens=30',
                   cwd=tmp_path)
    assert "greedy tokens with and without the cache: identical" in p.stdout
    assert re.search(r"^9 Linear layers packed for oneDNN$", p.stdout, re.M)  # 2 x 4 and the lm_head, as sample.py runs
    with_cache = float(re.search(r"^with KV cache: ([\d.]+) tokens/s", p.stdout, re.M)[1])
    without = float(re.search(r"^without KV cache: ([\d.]+) tokens/s", p.stdout, re.M)[1])
    ratio = float(re.search(r"^KV cache speedup: ([\d.]+)x$", p.stdout, re.M)[1])
    assert math.isclose(ratio, with_cache / without, rel_tol=0.05, abs_tol=0.01)  # rates printed rounded
    assert re.search(r"^prefill: 8 tokens in [\d.]+ms$", p.stdout, re.M)
    # the floor streams every Linear weight once: 2 layers x (3 + 1 + 4 + 4) x 32 x 32 plus the 64 x 32 lm_head, fp32
    floor = re.search(r"^weight-streaming floor: ([\d.]+)ms per token \(([\d.]+) MB of weights, [\d.]+ GB/s; inputs as the "
                      r"decode's: 9 float32\)$", p.stdout, re.M)
    assert float(floor[2]) == round((2 * 12 * 32 * 32 + 64 * 32) * 4 / 1e6, 2)
    decode = re.search(r"^decode: ([\d.]+) ms/token, (\d+)% of the weight-streaming floor \(([\d.]+) ms\)$", p.stdout, re.M)
    assert decode[3] == floor[1]
    assert math.isclose(int(decode[2]), float(floor[1]) / float(decode[1]) * 100, abs_tol=1 + 100 * 0.01 / float(decode[1]))
    # keys and values of 2 layers x 32 wide, fp32, over the 8 decode steps before the window slides: 8 + 4.5 positions
    kv = re.search(r"^KV cache read per decode step: [\d.]+ MB on average, ([\d.]+)% of the weights' bytes$", p.stdout, re.M)
    assert float(kv[1]) == round(2 * 2 * 32 * 4 * 12.5 / ((2 * 12 * 32 * 32 + 64 * 32) * 4) * 100, 1)
    best = re.search(r"^weights \+ KV cache at the floor's speed: ([\d.]+)ms per token, (\d+)% of the weight-streaming "
                     r"floor at best$", p.stdout, re.M)
    assert math.isclose(float(best[1]), float(floor[1]) * (1 + float(kv[1]) / 100), rel_tol=0.01, abs_tol=0.01)
    assert int(best[2]) == round(100 / (1 + float(kv[1]) / 100))


def test_generate_mode_counts_the_kv_cache_in_autocast_dtype(tmp_path):
    """ Under fp16 autocast generate's cache holds fp16 keys and values: half the bytes of fp32's (the weights stay
    fp32 parameters, not packed in fp16), where bench.py once counted an fp32 cache. """
    p = run_script('bench.py', *ARGS, '--dtype=float16', '--mode=generate', '--vocab_size=64', '--prompt_len=8',
                   '--gen_tokens=30', cwd=tmp_path)
    kv = re.search(r"^KV cache read per decode step: [\d.]+ MB on average, ([\d.]+)% of the weights' bytes$", p.stdout,
                   re.M)
    assert float(kv[1]) == round(2 * 2 * 32 * 2 * 12.5 / ((2 * 12 * 32 * 32 + 64 * 32) * 4) * 100, 1)


def test_generate_mode_feeds_the_floor_the_decode_input_dtypes(tmp_path):
    """ Under bf16 autocast a decode step feeds each matrix fp32 or bf16: the LayerNorms' outputs (c_attn, c_fc, the
    lm_head) stay fp32, attention's and the GELU's (attn.c_proj, mlp.c_proj) are bf16. The floor feeds each the same,
    as a kernel may differ by it (nf4's does). """
    p = run_script('bench.py', *ARGS, '--dtype=bfloat16', '--mode=generate', '--vocab_size=64', '--prompt_len=8',
                   '--gen_tokens=10', '--quantize=nf4', cwd=tmp_path)
    assert len(re.findall(r"^weight-streaming floor: .*; inputs as the decode's: 5 float32, 4 bfloat16\)$", p.stdout,
                          re.M)) == 2  # the bf16 model's and the nf4 one's


def is_printed_ratio(ratio, ms):
    """ Whether ratio, printed to 2 decimals, is ms[0] / ms[1] for values that print as ms (2 decimals): at a tiny
    model's 0.1 ms/token the rounding of the printed ms alone moves their ratio by up to 9%. """
    return (ms[0] - 0.005) / (ms[1] + 0.005) - 0.005 <= ratio <= (ms[0] + 0.005) / (ms[1] - 0.005) + 0.005


def test_generate_mode_with_int8(tmp_path):
    """ --quantize=int8 runs the fp32 model, then the int8 one (their greedy tokens each with and without the
    cache identical), then the floors and decode steps of both in alternating rounds, and prints each model's
    lines and the ratio of their decode speeds. """
    p = run_script('bench.py', *ARGS, '--mode=generate', '--vocab_size=64', '--prompt_len=8', '--gen_tokens=30',
                   '--quantize=int8', cwd=tmp_path)
    sections = re.split(r"^(float32|int8):$", p.stdout, flags=re.M)
    assert sections[1::2] == ['float32', 'int8', 'float32', 'int8']
    assert sections[4].endswith("floor and decode, 5 rounds alternating float32 and int8:\n")
    assert all("greedy tokens with and without the cache: identical" in text for text in sections[2:5:2])
    ms = [float(re.search(r"^decode: ([\d.]+) ms/token", text, re.M)[1]) for text in sections[6::2]]
    ratio = float(re.search(r"^int8/fp32 decode speed: ([\d.]+)x$", p.stdout, re.M)[1])
    assert is_printed_ratio(ratio, ms)


@pytest.mark.slow
def test_generate_mode_compiled_with_int8(tmp_path):
    """ --compile=True compiles both models for inference as sample.py does, and each one's floor with them (the
    decode's kernels); the two models share GPT.forward's graphs in dynamo, yet none runs out of recompiles. """
    # 10 tokens slide the window once (a shape more); each shape met is a compile, with autotuning (seconds each)
    p = run_script('bench.py', *ARGS, '--mode=generate', '--vocab_size=64', '--prompt_len=8', '--gen_tokens=10',
                   '--quantize=int8', '--compile=True', cwd=tmp_path)
    assert 'recompile_limit' not in p.stderr and 'packed for oneDNN' not in p.stdout
    sections = re.split(r"^(float32|int8):$", p.stdout, flags=re.M)
    assert sections[1::2] == ['float32', 'int8', 'float32', 'int8']
    assert "greedy tokens with and without the cache: identical" in sections[2]
    ms = [float(re.search(r"^decode: ([\d.]+) ms/token", text, re.M)[1]) for text in sections[6::2]]
    ratio = float(re.search(r"^int8/fp32 decode speed: ([\d.]+)x$", p.stdout, re.M)[1])
    assert is_printed_ratio(ratio, ms)


@pytest.mark.parametrize('args, message', [
    (['--quantize=int4', '--prompt_len=8'], "unknown quantize 'int4': use '' (none) or int8"),
    (['--prompt_len=16'], "prompt_len=16 must be < block_size=16"),
    (['--profile=True', '--prompt_len=8'], "profile=True traces the training step of mode='train', not mode='generate'"),
])
def test_generate_mode_bad_input(tmp_path, args, message):
    p = run_script('bench.py', *ARGS, '--mode=generate', *args, cwd=tmp_path, check=False)
    error_line(p, message)


@pytest.mark.parametrize('args, message', [
    (['--vocab_size=0'], "vocab_size must be > 0, got 0"),
    (['--peak_flops=-1.0'], "peak_flops must be >= 0 (0: the device's own), got -1.0"),
    (['--profile=True', '--profile_dir=a_file'], "cannot write to profile_dir 'a_file'"),
    (['--device=xpu'], "unsupported device 'xpu': use cpu, cuda, cuda:N or mps"),
])
def test_train_mode_bad_input_stops_before_timing(tmp_path, args, message):
    (tmp_path / 'a_file').write_text('')
    p = run_script('bench.py', *ARGS, '--real_data=False', *args, cwd=tmp_path, check=False)
    error_line(p, message)
    assert 'ms/iter' not in p.stdout


def test_generate_mode_short_run_numbers_follow_from_each_other(tmp_path):
    """ 5 new tokens after an 8-token prompt (the window never slides): 4 decode steps, so the KV cache read is
    averaged over 8 + (4 + 1) / 2 positions; the floor's GB/s is its MB over its ms; the int8 model's MB are its int8
    weights and bf16 row scales. """
    p = run_script('bench.py', *ARGS, '--mode=generate', '--vocab_size=64', '--prompt_len=8', '--gen_tokens=5',
                   '--quantize=int8', cwd=tmp_path)
    sections = re.split(r"^(float32|int8):$", p.stdout, flags=re.M)
    fp32, int8 = sections[6], sections[8]
    weights = 2 * 12 * 32 * 32 + 64 * 32  # every Linear: 2 layers x (3 + 1 + 4 + 4) x 32 x 32, and the lm_head
    rows = 2 * (3 + 1 + 4 + 1) * 32 + 64  # output rows, one bf16 scale each
    for text, nbytes in ((fp32, 4 * weights), (int8, weights + 2 * rows)):
        floor = re.search(r"^weight-streaming floor: ([\d.]+)ms per token \(([\d.]+) MB of weights, ([\d.]+) GB/s;",
                          text, re.M)
        assert float(floor[2]) == round(nbytes / 1e6, 2)
        ms, gbs = float(floor[1]), float(floor[3])  # ms printed to 2 decimals: its rounding bounds the GB/s
        assert nbytes / ((ms + 0.005) * 1e6) - 0.05 <= gbs <= nbytes / (max(ms - 0.005, 1e-9) * 1e6) + 0.05
    kv = re.search(r"^KV cache read per decode step: [\d.]+ MB on average, ([\d.]+)% of the weights' bytes$", fp32, re.M)
    kv_bytes = 2 * 2 * 32 * 4 * (8 + 2.5)  # keys and values of 2 layers, 32 fp32 each a position, one sequence
    assert float(kv[1]) == round(kv_bytes / (4 * weights) * 100, 1)


def test_train_mode_each_iteration_mfu_follows_from_its_time(tmp_path):
    """ Each iteration's line: its MFU is that of batch_size x block_size tokens in its time. """
    p = run_script('bench.py', *ARGS, '--real_data=False', '--vocab_size=128', '--burnin_iters=1', '--timed_iters=3',
                   '--peak_flops=1e10', cwd=tmp_path)
    flops_per_token = GPT(GPTConfig(vocab_size=128, bias=False, **SHAPE)).flops_per_token()
    lines = re.findall(r"^(?:burn-in|timed) iter \d: loss [\d.]+, time ([\d.]+)ms, mfu ([\d.]+)%$", p.stdout, re.M)
    assert len(lines) == 4
    for ms, mfu in lines:  # the time printed to 2 decimals, the MFU to 2: bound it by both roundings
        lo, hi = (flops_per_token * 2 * 16 / ((float(ms) + d) / 1000) / 1e10 * 100 for d in (0.005, -0.005))
        assert lo - 0.005 <= float(mfu) <= hi + 0.005, (ms, mfu)


def test_train_mode_summary_is_the_mean_of_the_timed_iterations(tmp_path):
    """ The summary's ms/iter averages the timed iterations only: the sum of their printed times over their number
    (the burn-in iterations, printed before them, are not part of it). """
    p = run_script('bench.py', *ARGS, '--real_data=False', '--vocab_size=128', '--burnin_iters=4', '--timed_iters=2',
                   cwd=tmp_path)
    timed = [float(t) for t in re.findall(r"^timed iter \d: loss [\d.]+, time ([\d.]+)ms", p.stdout, re.M)]
    assert len(timed) == 2
    ms, _, _ = summary(p.stdout)
    # the burn-in's 4 iterations counted in would make it about 3 times as much; the margin is for a descheduled
    # process between the last iteration's time and the summary's
    assert math.isclose(ms, sum(timed) / 2, rel_tol=0.5), (ms, timed)


def test_generate_mode_names_the_first_new_token_that_differs(tmp_path, monkeypatch, capsys):
    """ Where the two paths part ways (bf16 near ties), the line counts the new tokens from 0, after the prompt:
    here the recomputing path's 4th new token is made another, so new token 3 differs. """
    generate = model_py.LanguageModel.generate

    def changed(self, idx, max_new_tokens, *args, use_kv_cache=True, **kwargs):
        y = generate(self, idx, max_new_tokens, *args, use_kv_cache=use_kv_cache, **kwargs)
        if not use_kv_cache:
            y[0, 8 + 3] = (y[0, 8 + 3] + 1) % 64
        return y
    monkeypatch.setattr(model_py.LanguageModel, 'generate', changed)
    with pytest.raises(SystemExit) as e:
        run_in_process(monkeypatch, 'bench.py', tmp_path, *ARGS, '--mode=generate', '--vocab_size=64',
                       '--prompt_len=8', '--gen_tokens=30')
    assert e.value.code == 0
    assert "greedy tokens with and without the cache: DIFFERENT, first at new token 3\n" in capsys.readouterr().out
