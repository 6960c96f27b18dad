"""sample.py guards: checkpoints (ours and the original nanoGPT's), GPT-2 from a local HF directory,
char-level (meta.pkl) and GPT-2 BPE tokenization (without a meta.pkl, or with one adding special tokens),
string and FILE: prompts, seeding (after a compile's warm-up), --use_kv_cache=False, int8 weights, and one clear error per bad input. Each sample printed must
equal the decoded output of model.generate run here, with the same seed, on the same weights; it is streamed as
its tokens come, and the streamed text is that text."""

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import model as model_py
import runtime
from conftest import ROOT, closed_port_url, error_line, load, make_char_dataset, perturb_adapters, run_in_process, run_script, save_checkpoint, tiny_text
from data_io import load_meta, write_tokens
from model import GPT, GPTConfig, apply_lora, build_model
from quantize import quantize
from runtime import model_from_checkpoint

SEP = '\n---------------\n'
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=32)


def sample(*args, **kw):
    """ sample.py on the CPU in float32, the precision of the references computed here (a later --dtype wins). """
    return run_script('sample.py', '--device=cpu', '--dtype=float32', *args, **kw)


def without_lines(text, *prefixes):
    """ text less its one line starting with each prefix (each must be there exactly once). """
    for prefix in prefixes:
        line, = [line for line in text.splitlines(True) if line.startswith(prefix)]
        text = text.replace(line, '')
    return text


def sample_in_process(monkeypatch, cwd, *args):
    """ sample.py run in this process, on the CPU in float32, so that a test can patch what it calls. """
    run_in_process(monkeypatch, 'sample.py', cwd, '--device=cpu', '--dtype=float32', *args)


def reference(model, start_ids, decode, seed, num_samples, max_new_tokens, temperature=1.0, top_k=None,
              use_kv_cache=True):
    """ What sample.py must print, computed in this process. """
    torch.manual_seed(seed)
    x = torch.tensor([start_ids], dtype=torch.long)
    out = ''
    for _ in range(num_samples):
        y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, use_kv_cache=use_kv_cache)
        out += decode(y[0].tolist()) + SEP
    return out


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    """ data/tiny_char (meta.pkl) with a char-level checkpoint in out_char, a nanoGPT-format one in
    out_nanogpt, and a BPE checkpoint (dataset without meta.pkl) in out_bpe. """
    wd = tmp_path_factory.mktemp('sample')
    make_char_dataset(wd / 'data' / 'tiny_char')
    meta = load_meta(wd / 'data' / 'tiny_char' / 'meta.pkl')
    torch.manual_seed(0)
    models = {
        'char': GPT(GPTConfig(vocab_size=meta['vocab_size'], **TINY)).eval(),
        'nanogpt': GPT(GPTConfig(vocab_size=meta['vocab_size'], activation='gelu_exact', bias=False, **TINY)).eval(),
        'bpe': GPT(GPTConfig(vocab_size=50257, **TINY)).eval(),
    }
    save_checkpoint(wd / 'out_char', models['char'], 'tiny_char')
    save_checkpoint(wd / 'out_nanogpt', models['nanogpt'], 'tiny_char', nanogpt=True)
    save_checkpoint(wd / 'out_bpe', models['bpe'], 'tiny_bpe')
    return wd, meta, models


def output(p):
    """ sample.py's stdout (info lines, then the samples), which must end with a separator. """
    assert p.stdout.endswith(SEP), p.stdout[-500:]
    return p.stdout


@pytest.mark.parametrize('kind', ['char', 'nanogpt'])
def test_char_level_string_and_file_prompt(workdir, kind):
    wd, meta, models = workdir
    text = tiny_text()  # the dataset's own characters: with or without ../shared
    prompt = text[:15] + '\n' + text[30:40]
    (wd / 'prompt.txt').write_text(prompt, encoding='utf-8')
    args = [f'--out_dir=out_{kind}', '--num_samples=2', '--max_new_tokens=40', '--seed=7',
            '--temperature=0.9', '--top_k=10']
    p_str = sample(*args, f'--start={prompt}', cwd=wd)
    p_file = sample(*args, '--start=FILE:prompt.txt', cwd=wd)
    assert 'Loading meta from data/tiny_char/meta.pkl' in p_str.stdout
    decode = lambda ids: ''.join(meta['itos'][i] for i in ids)
    expected = reference(models[kind], [meta['stoi'][c] for c in prompt], decode, 7, 2, 40, 0.9, 10)
    assert output(p_str).endswith(expected)
    assert output(p_file).endswith(expected)  # same seed, same prompt from a file: the same text
    assert expected.count(prompt) == 2 and len(expected) == 2 * (len(prompt) + 40 + len(SEP))


def test_bf16_autocast_on_cpu(workdir):
    wd, meta, _ = workdir
    torch.manual_seed(3)  # weights whose bf16 samples part from the fp32 ones (checked below)
    model = GPT(GPTConfig(vocab_size=meta['vocab_size'], **TINY)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.uniform_(-1, 1)  # logits far larger than at init, so that bf16's rounding changes some draws
    save_checkpoint(wd / 'out_bf16', model, 'tiny_char')
    p = sample('--out_dir=out_bf16', '--dtype=bfloat16', '--num_samples=2',
                   '--max_new_tokens=100', '--seed=3', '--start=ab', cwd=wd)
    args = (model, [meta['stoi'][c] for c in 'ab'], lambda ids: ''.join(meta['itos'][i] for i in ids), 3, 2, 100, 0.8, 200)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        expected = reference(*args)
    assert expected != reference(*args)  # the fp32 samples differ, so this tells the two apart
    assert output(p).endswith(expected)


@pytest.mark.parametrize('dataset', ['tiny_char', pytest.param('tiny_bpe', marks=pytest.mark.offline_files)])
def test_checkpoint_written_by_train_py(tmp_path, dataset, request):
    """ End to end: train.py's checkpoint after 2 iterations; char-level with a FILE: prompt, and GPT-2 BPE
    (no meta.pkl, so vocab_size 50304) with a string prompt. """
    text = tiny_text()
    if dataset == 'tiny_char':
        make_char_dataset(tmp_path / 'data' / dataset)
        meta = load_meta(tmp_path / 'data' / dataset / 'meta.pkl')
        encode, decode = (lambda s: [meta['stoi'][c] for c in s]), (lambda ids: ''.join(meta['itos'][i] for i in ids))
        prompt, start = text[:12], '--start=FILE:prompt.txt'  # block_size is 16
        (tmp_path / 'prompt.txt').write_text(prompt, encoding='utf-8')
    else:
        enc = request.getfixturevalue('gpt2')
        ids = np.array(enc.encode_ordinary(text[:20000]), dtype=np.uint16)
        (tmp_path / 'data' / dataset).mkdir(parents=True)
        write_tokens(tmp_path / 'data' / dataset / 'train.bin', ids[:4000], np.uint16)
        write_tokens(tmp_path / 'data' / dataset / 'val.bin', ids[4000:], np.uint16)
        encode, decode = enc.encode, enc.decode
        prompt = text[:20]
        start = f'--start={prompt}'
    run_script('train.py', f'--dataset={dataset}', '--out_dir=out', '--compile=False', '--max_iters=2',
               '--eval_interval=2', '--eval_iters=1', '--batch_size=2', '--block_size=16', '--n_layer=1', '--n_head=2',
               '--n_embd=16', '--gradient_accumulation_steps=1', '--warmup_iters=0', cwd=tmp_path)
    p = sample('--out_dir=out', '--num_samples=2', '--max_new_tokens=10', '--seed=2',
                   '--top_k=20', start, cwd=tmp_path)
    checkpoint = load(tmp_path / 'out' / 'ckpt.pt')
    model = model_from_checkpoint(checkpoint).eval()
    assert model.config.vocab_size == (meta['vocab_size'] if dataset == 'tiny_char' else 50304)
    expected = reference(model, encode(prompt), decode, 2, 2, 10, 0.8, 20)  # (a padding id here: KeyError)
    assert output(p).endswith(expected)


def test_bpe_checkpoint_uses_tiktoken(workdir, gpt2):
    wd, _, models = workdir
    enc = gpt2
    prompt = 'Hello, my name is<|endoftext|>'
    p = sample('--out_dir=out_bpe', '--num_samples=2', '--max_new_tokens=12',
                   '--seed=3', '--top_k=0', f'--start={prompt}', cwd=wd)
    assert 'No meta.pkl found, assuming GPT-2 encodings' in p.stdout
    start_ids = enc.encode(prompt, allowed_special={'<|endoftext|>'})
    assert start_ids[-1] == enc.eot_token
    assert output(p).endswith(reference(models['bpe'], start_ids, enc.decode, 3, 2, 12))


def test_gpt2_bpe_with_a_meta_pkl_says_it_read_it(tmp_path, gpt2):
    """ A GPT-2 BPE instruction set has a meta.pkl (the chat's special tokens): sample.py says it loaded it. """
    from chat_template import write_dataset
    from tokenizer import gpt2_tokenizer, load_tokenizer
    chat = [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'ho'}]
    write_dataset(str(tmp_path / 'data' / 'sft_gpt2'), gpt2_tokenizer(), {'train': [chat], 'val': [chat]}, 16)
    tok = load_tokenizer(str(tmp_path / 'data' / 'sft_gpt2'))
    save_checkpoint(tmp_path / 'out', GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16,
                                                    block_size=16)), 'sft_gpt2')
    p = sample('--out_dir=out', '--num_samples=1', '--max_new_tokens=2', '--start=hi', cwd=tmp_path)
    assert 'No meta.pkl' not in p.stdout
    assert (f"Loading meta from data/sft_gpt2/meta.pkl: GPT-2 encodings with special tokens "
            f"{' '.join(tok.special_tokens)}...") in p.stdout.splitlines()


def test_init_from_local_hf_dir(workdir, hf_gpt2_dir, gpt2):
    wd = workdir[0]
    enc = gpt2
    p = sample(f'--init_from={hf_gpt2_dir}', '--num_samples=1',
                   '--max_new_tokens=10', '--seed=5', '--start=The king', cwd=wd)
    model = GPT.from_pretrained(str(hf_gpt2_dir)).eval()
    assert output(p).endswith(reference(model, enc.encode('The king'), enc.decode, 5, 1, 10, 0.8, 200))


def test_padding_ids_are_shown_not_a_crash(workdir, gpt2):
    """ vocab_size 50304 (GPT-2's 50257 padded): ids tiktoken can't decode appear as <|pad:id|>. """
    wd = workdir[0]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50304, **TINY)).eval()
    with torch.no_grad():  # make id 50300 the certain pick: ln_f pushes dim 0 up, only row 50300 reads it
        model.transformer.ln_f.bias[0] = 10.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[50300] = 0.0
        model.lm_head.weight[50300, 0] = 1.0
    save_checkpoint(wd / 'out_pad', model, 'tiny_bpe')
    p = sample('--out_dir=out_pad', '--num_samples=1', '--max_new_tokens=3',
                   '--top_k=1', '--start=Hi', cwd=wd)
    assert p.stdout.endswith('Hi' + '<|pad:50300|>' * 3 + SEP)


def test_prompt_longer_than_block_size_is_cropped(workdir):
    wd, meta, models = workdir
    prompt = tiny_text()[:50]  # block_size is 32
    p = sample('--out_dir=out_char', '--num_samples=1', '--max_new_tokens=5',
                   '--seed=1', f'--start={prompt}', cwd=wd)
    assert 'note: the prompt has 50 tokens, more than block_size=32: keeping the last 32' in p.stdout
    decode = lambda ids: ''.join(meta['itos'][i] for i in ids)
    expected = reference(models['char'], [meta['stoi'][c] for c in prompt[-32:]], decode, 1, 1, 5, 0.8, 200)
    assert output(p).endswith('\n' + expected)


@pytest.mark.parametrize('args, message', [
    (['--start=the €~'], "the prompt has characters not in the vocabulary of data/tiny_char: '~' '€'"),
    (['--out_dir=missing'], "no checkpoint missing/ckpt.pt"),
    (['--out_dir=data'], "no checkpoint data/ckpt.pt"),
    (['--start=FILE:nowhere.txt'], "nowhere.txt not found: give the path of an existing file"),
    (['--start=FILE:data'], "data is a folder: give the path of a file"),
    (['--start=FILE:latin1.txt'], "latin1.txt is not UTF-8 text (byte 0xe9 at offset 3)"),
    (['--max_new_tokens=0'], "max_new_tokens must be > 0"),
    (['--num_samples=0'], "num_samples must be > 0, got 0"),
    (['--top_k=-1'], "top_k must be >= 0 (0 keeps all tokens), got -1"),
    (['--temperature=0.0'], "temperature must be > 0"),
    (['--temperature=-1', '--out_dir=missing'], "temperature must be > 0, got -1.0; use --top_k=1"),  # before loading
    (['--init_from=gpt3'], "unknown init_from 'gpt3'"),
    (['--start='], "the prompt is empty"),
])
def test_bad_input_is_one_clear_error(workdir, args, message):
    wd, meta, _ = workdir
    assert '~' not in meta['stoi'] and '€' not in meta['stoi']
    (wd / 'latin1.txt').write_bytes('café'.encode('latin-1'))
    p = sample('--out_dir=out_char', '--max_new_tokens=5', *args, cwd=wd, check=False)
    error_line(p, message)
    assert p.stderr.strip().splitlines() == [p.stderr.strip()]  # nothing but the error


def test_a_dataset_folder_out_of_sight_is_named(workdir, tmp_path):
    # run from another folder, data/tiny_char is not there: say so, not only that the vocabulary does not fit
    wd, _, _ = workdir
    p = sample(f'--out_dir={wd / "out_char"}', '--max_new_tokens=5', cwd=tmp_path, check=False)
    assert f"note: the model was trained on data/tiny_char, which is not in the current directory ({tmp_path})" in p.stdout
    assert p.returncode == 1  # GPT-2's BPE assumed: its vocabulary does not fit (or, offline, it can't be loaded)


@pytest.mark.slow
def test_compile_gives_the_same_greedy_samples(workdir, tmp_path):
    """ --compile=True compiles the model in place, so generate's calls run compiled (and agree), saying so in one
    line; from an empty compile cache, where every matmul shape is autotuned, without autotuning's timing tables. """
    wd = workdir[0]
    args = ['--out_dir=out_char', '--num_samples=1', '--max_new_tokens=20', '--top_k=1']
    eager = sample(*args, '--compile=False', cwd=wd)
    compiled = sample(*args, '--compile=True', cwd=wd, env={'TORCH_LOGS': 'guards',
                                                            'TORCHINDUCTOR_CACHE_DIR': str(tmp_path / 'inductor')})
    assert 'GUARDS:' in compiled.stderr and 'model.py:' in compiled.stderr  # dynamo compiled GPT.forward
    assert 'AUTOTUNE' not in compiled.stderr
    assert (without_lines(output(compiled), 'compiling the model...').split('Loading meta')[1]
            == output(eager).split('Loading meta')[1])


@pytest.mark.slow
def test_a_compiler_that_fails_falls_back_to_eager(workdir):
    """ --compile=True where the compiler fails (no working C++ compiler): a warning, then the samples eager
    generation gives, not a traceback. """
    wd = workdir[0]
    args = ['--out_dir=out_char', '--num_samples=2', '--max_new_tokens=20', '--seed=3']
    eager = sample(*args, cwd=wd)
    fallen = sample(*args, '--compile=True', cwd=wd, env={'CXX': '/bin/false'})
    rest = without_lines(output(fallen), 'compiling the model...', 'warning: torch.compile failed')
    assert rest.split('Loading meta')[1] == output(eager).split('Loading meta')[1]


def test_a_reader_that_stops_early_stops_it_quietly(workdir):
    """ sample.py | head: once the reader has gone, sample.py stops without an error message, as Unix tools do
    (100,000 characters: more than a pipe holds, so it writes after head has gone). """
    wd = workdir[0]
    p = subprocess.run(f'{sys.executable} {ROOT / "sample.py"} --device=cpu --out_dir=out_char --num_samples=50 '
                       f'--max_new_tokens=2000 | head -c 20', shell=True, cwd=wd, capture_output=True, text=True,
                       timeout=300, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    assert len(p.stdout) == 20 and p.stderr == ''


def test_lora_checkpoint(workdir, tmp_path):
    """ A LoRA checkpoint (adapters trained away from zero) samples what the adapted model generates. """
    wd, meta, models = workdir
    torch.manual_seed(1)
    lora = dict(rank=4, alpha=8.0, dropout=0.0, targets=('attn.c_attn', 'mlp.c_fc'))
    model = apply_lora(GPT(GPTConfig(vocab_size=meta['vocab_size'], **TINY)), **lora).eval()
    perturb_adapters(model, std=0.5)
    save_checkpoint(wd / 'out_lora', model, 'tiny_char', lora=lora)
    p = sample('--out_dir=out_lora', '--num_samples=2', '--max_new_tokens=30',
                   '--seed=5', '--start=a', cwd=wd)
    decode = lambda ids: ''.join(meta['itos'][i] for i in ids)
    expected = reference(model, [meta['stoi']['a']], decode, 5, 2, 30, temperature=0.8, top_k=200)
    assert output(p).endswith(expected)


def test_bigram_checkpoint(workdir):
    """ model_type='bigram' samples through the same script: what its table generates, decoded. """
    wd, meta, models = workdir
    torch.manual_seed(2)
    model = build_model(GPTConfig(model_type='bigram', vocab_size=meta['vocab_size'], block_size=32)).eval()
    with torch.no_grad():
        model.token_embedding_table.weight.normal_(0, 2.0)  # a peaked table, unlike the near-uniform init
    save_checkpoint(wd / 'out_bigram', model, 'tiny_char')
    p = sample('--out_dir=out_bigram', '--num_samples=2', '--max_new_tokens=50',
                   '--seed=7', '--start=a', cwd=wd)
    decode = lambda ids: ''.join(meta['itos'][i] for i in ids)
    expected = reference(model, [meta['stoi']['a']], decode, 7, 2, 50, temperature=0.8, top_k=200)
    assert output(p).endswith(expected)


def test_offline_hub_is_one_line_at_once(tmp_path):
    """ Without network (the hub's address here: a closed local port) and without HF_HUB_OFFLINE, the error
    comes straight away, not after half a minute of the hub client's retries. """
    env = {'HF_HUB_OFFLINE': '', 'HF_ENDPOINT': closed_port_url(), 'HF_HOME': str(tmp_path / 'hf')}
    p = sample('--init_from=gpt2', '--max_new_tokens=5', cwd=tmp_path, env=env, check=False)
    error_line(p, "could not fetch the 'gpt2' weights from the Hugging Face hub")
    assert 'Retrying' not in p.stdout + p.stderr


def test_quantize_int8(workdir):
    """ --quantize=int8 samples what the int8 model generates here (weights whose logits are large enough
    for int8's rounding to change some draws, so that this tells int8 from fp32). """
    wd, meta, _ = workdir
    torch.manual_seed(4)
    model = GPT(GPTConfig(vocab_size=meta['vocab_size'], **TINY)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.uniform_(-1, 1)
    save_checkpoint(wd / 'out_int8', model, 'tiny_char')
    p = sample('--out_dir=out_int8', '--quantize=int8', '--num_samples=2', '--max_new_tokens=200', '--seed=4',
               '--start=a', cwd=wd)
    args = ([meta['stoi']['a']], lambda ids: ''.join(meta['itos'][i] for i in ids), 4, 2, 200, 0.8, 200)
    expected = reference(quantize(copy.deepcopy(model), 'int8'), *args)
    assert expected != reference(model, *args)
    assert output(p).endswith(expected)


@pytest.mark.parametrize('args, message', [
    (['--quantize=int4'], "unknown quantize 'int4': use '' (none) or int8, nf4"),
    (['--out_dir=out_bigram', '--quantize=int8'], "quantize='int8' needs model_type='gpt'"),
])
def test_quantize_bad_input(workdir, args, message):
    wd, meta, _ = workdir
    if not (wd / 'out_bigram').exists():
        save_checkpoint(wd / 'out_bigram', build_model(GPTConfig(model_type='bigram', vocab_size=meta['vocab_size'],
                                                                 block_size=32)), 'tiny_char')
    error_line(sample(*args, cwd=wd, check=False), message)


def test_samples_stream_as_they_are_generated(workdir, monkeypatch, capsys):
    """ Each new token is on stdout before the next one is sampled: at every token, what sample.py printed
    so far ends with the sample decoded so far (sample.py runs in this process so that generate can watch). """
    wd, meta, _ = workdir
    decode = lambda ids: ''.join(meta['itos'][i] for i in ids)
    generate, printed, checks = model_py.LanguageModel.generate, [], []

    def watched(self, idx, max_new_tokens, *args, callback=None, **kwargs):
        assert callback is not None, "sample.py gives generate no callback: nothing streams"
        ids = idx[0].tolist()

        def check(idx_next):
            callback(idx_next)
            ids.append(idx_next[0, 0].item())
            printed.append(capsys.readouterr().out)
            checks.append(''.join(printed).endswith(decode(ids)))
        return generate(self, idx, max_new_tokens, *args, callback=check, **kwargs)

    monkeypatch.setattr(model_py.LanguageModel, 'generate', watched)
    sample_in_process(monkeypatch, wd, '--out_dir=out_char', '--num_samples=2', '--max_new_tokens=20', '--start=ab')
    assert len(checks) == 40 and all(checks)
    assert (''.join(printed) + capsys.readouterr().out).endswith(SEP)


def test_streamed_bpe_text_is_the_final_text(workdir, gpt2):
    """ A model that draws single-byte BPE tokens (lead and continuation bytes of multi-byte characters, and
    ASCII): its text is full of characters left incomplete for a token or two, and of invalid sequences.
    Streamed as they come, the text printed is still exactly the decode of the whole sample. """
    wd = workdir[0]
    byte_ids = [gpt2.encode_single_token(bytes([b])) for b in (0xE6, 0x9D, 0xB1, 0xC3, 0xA7, 0xF0, ord('a'), ord(' '))]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, **TINY)).eval()
    with torch.no_grad():  # ln_f pushes dim 0 up and only the byte tokens' rows read it: they win
        model.transformer.ln_f.bias[0] = 10.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[byte_ids, 0] = 1.0
    save_checkpoint(wd / 'out_bytes', model, 'tiny_bpe')
    prompt = 'Ça va? 東京 ☕'
    p = sample('--out_dir=out_bytes', '--num_samples=3', '--max_new_tokens=40', '--seed=9', '--top_k=8',
               '--temperature=1.0', f'--start={prompt}', cwd=wd)
    expected = reference(model, gpt2.encode(prompt), gpt2.decode, 9, 3, 40, top_k=8)
    generated = ''.join(text[len(prompt):] for text in expected.split(SEP))
    assert '\ufffd' in generated and any(ord(c) > 127 and c != '\ufffd' for c in generated)  # bad and good ones
    assert output(p).endswith(expected)


def test_use_kv_cache_false_recomputes(workdir, monkeypatch, capsys):
    """ --use_kv_cache=False (the slow reference path) reaches generate for every sample, and the samples are
    those of generate recomputing the context, with the same seed. """
    wd, meta, models = workdir
    generate, asked = model_py.LanguageModel.generate, []

    def spy(self, *args, **kwargs):
        asked.append(kwargs.get('use_kv_cache', True))
        return generate(self, *args, **kwargs)
    monkeypatch.setattr(model_py.LanguageModel, 'generate', spy)
    sample_in_process(monkeypatch, wd, '--out_dir=out_char', '--num_samples=2', '--max_new_tokens=10', '--start=ab',
                      '--seed=4', '--use_kv_cache=False')
    assert asked == [False, False]
    decode = lambda ids: ''.join(meta['itos'][i] for i in ids)
    expected = reference(models['char'], [meta['stoi'][c] for c in 'ab'], decode, 4, 2, 10, 0.8, 200,
                         use_kv_cache=False)
    assert capsys.readouterr().out.endswith(expected)


def test_a_compile_warm_up_does_not_change_the_samples(workdir, monkeypatch, capsys):
    """ --compile=True warms the model up with a generate() of its own, which draws random numbers: the samples are
    seeded after it, so they are those of the seed, as without compiling. The compiler itself is left out here
    (compile_in_place only runs the warm-up), for a fast test of the order. """
    wd, meta, models = workdir
    monkeypatch.setattr(runtime, 'compile_in_place', lambda model, warm_up: warm_up() or True)
    sample_in_process(monkeypatch, wd, '--out_dir=out_char', '--num_samples=2', '--max_new_tokens=20', '--start=ab',
                      '--seed=5', '--compile=True')
    decode = lambda ids: ''.join(meta['itos'][i] for i in ids)
    expected = reference(models['char'], [meta['stoi'][c] for c in 'ab'], decode, 5, 2, 20, 0.8, 200)
    assert capsys.readouterr().out.endswith(expected)
