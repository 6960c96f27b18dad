"""chat.py and chat_template.Chat: the KV cache kept across turns gives the logits of recomputing the whole
conversation, each token is fed once (no re-prefill of earlier turns), and cropping at block_size keeps the
conversation's start; --prompt answers once (the greedy reply of an in-process Chat); the interactive mode,
driven through stdin, answers each line and ends at EOF; a message the tokenizer can't encode (a special token's
name on a character vocabulary) is refused in one line and the chat goes on; Ctrl-C stops a reply and the chat goes
on, and where it lands inside a forward the cache stays in step with the conversation; in an --eval_file run it stops
the run; --system opens --prompt's and the interactive chat's
conversation; --temperature reaches the sampler; --eval_file scores exact match per task and shows the misses, a record's system message taken by its role even when empty (no system block,
as in training), and a bad record stops it in one line naming the file and the record; a checkpoint without a chat
template, an unknown --quantize, --system with --eval_file, a bigram model or a system message over half the context
is a one-line error; whatever is cropped, the model sees at most block_size tokens ending with the current turn;
under bf16 autocast the chat's KV cache is bf16, as generate's is."""

import codecs
import json
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest
import torch

from chat_template import BOUNDARY, Chat, head_ids, prompt_ids, render
from conftest import ROOT, error_line, make_sft_workdir, run_script, save_checkpoint, tiny_gpt
from data_io import read_meta
from model import GPTConfig, build_model
from tokenizer import load_tokenizer


@pytest.fixture
def sft_workdir(tmp_path):
    """ data/tiny_char, data/sft (its instruction set) and out-sft: a random GPT of the grown vocabulary. """
    return make_sft_workdir(tmp_path)


def chat_of(workdir, block_size=64, system=''):
    """ A Chat with the model of out-sft (block_size below its 64: cropped), in process. """
    tok = load_tokenizer(str(workdir / 'data' / 'sft'))
    model = tiny_gpt(block_size=64, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32)
    model.crop_block_size(block_size)
    return Chat(model, tok, system), model, tok


@pytest.mark.parametrize('block_size', [64, 24])
def test_kv_cache_across_turns_equals_recomputing(sft_workdir, block_size):
    chat, model, tok = chat_of(sft_workdir, block_size, system='be brief')
    fed, checked = [], []

    def check(module, args, output):  # each forward: the cached logits against the whole context recomputed
        context = chat.context()
        assert chat.kv_cache.pos == len(context)
        fed.append(args[0].size(1))
        with torch.no_grad():
            full = model.__class__.forward(model, torch.tensor([context]))[0][0, -1]
        checked.append(torch.allclose(output[0][0, -1], full, atol=1e-5))
    model.register_forward_hook(check)
    replies = [tok.decode(list(chat.reply(msg, 5, top_k=1))) for msg in ('spell the', 'say it', 'and now?')]
    assert all(checked) and len(checked) >= 3
    context = chat.context()
    assert context[0] == tok.special_id(BOUNDARY) and tok.decode(context).startswith(
        '<|endoftext|><|system_start|>be brief<|system_end|>')
    if block_size == 64:  # nothing cropped: each token went through the model once
        # (the last reply's last tokens wait for the next turn)
        assert sum(fed) == chat.kv_cache.pos < len(context)
        assert tok.decode(context).endswith(f"and now?<|user_end|><|assistant_start|>{replies[-1]}<|assistant_end|>")
    else:  # cropped: whole turns dropped from the start, the system message kept
        assert chat.kv_cache.pos <= block_size and 'spell the' not in tok.decode(context)


def test_prompt_answers_once_and_refuses_a_base_model(sft_workdir):
    p = run_script('chat.py', '--out_dir=out-sft', '--prompt=spell the', '--top_k=1', '--max_new_tokens=10',
                   '--device=cpu', '--dtype=float32', cwd=sft_workdir)
    chat, _, tok = chat_of(sft_workdir)
    assert p.stdout.splitlines()[-1] == tok.decode(list(chat.reply('spell the', 10, top_k=1)))
    save_checkpoint(sft_workdir / 'out-base', tiny_gpt(block_size=64, vocab_size=read_meta(
        sft_workdir / 'data' / 'tiny_char')['vocab_size'], n_layer=1, n_head=2, n_embd=16), dataset='tiny_char')
    p = run_script('chat.py', '--out_dir=out-base', '--prompt=hi', '--device=cpu', cwd=sft_workdir, check=False)
    error_line(p, 'has no chat template')
    # a bad setting is refused before any model is read
    p = run_script('chat.py', '--out_dir=nowhere', '--quantize=int4', cwd=sft_workdir, check=False)
    error_line(p, "unknown quantize 'int4': use '' (none) or int8, nf4")
    p = run_script('chat.py', '--out_dir=nowhere', '--eval_file=q.jsonl', '--system=hi', cwd=sft_workdir, check=False)
    error_line(p, "--eval_file takes each record's own system message: drop --system")
    # a bigram model has no KV cache to keep across turns
    save_checkpoint(sft_workdir / 'out-bigram', build_model(GPTConfig(model_type='bigram', block_size=64, vocab_size=
        read_meta(sft_workdir / 'data' / 'sft')['vocab_size'])), dataset='sft')
    p = run_script('chat.py', '--out_dir=out-bigram', '--prompt=hi', '--device=cpu', cwd=sft_workdir, check=False)
    error_line(p, "a bigram model has none: sample from it with sample.py")
    # a --dataset that is not there, or not an instruction set, is named as the problem, not the model
    p = run_script('chat.py', '--out_dir=out-base', '--dataset=sfd', '--prompt=hi', cwd=sft_workdir, check=False)
    error_line(p, "dataset='sfd': data/sfd/meta.pkl not found")
    p = run_script('chat.py', '--out_dir=out-base', '--dataset=tiny_char', '--prompt=hi', '--device=cpu',
                   cwd=sft_workdir, check=False)
    error_line(p, "data/tiny_char has no chat template (its tokenizer lacks")
    # read through the instruction set's tokenizer, the base model is grown and answers
    run_script('chat.py', '--out_dir=out-base', '--dataset=sft', '--prompt=hi', '--max_new_tokens=3', '--device=cpu',
               cwd=sft_workdir)


def test_interactive_mode_through_stdin_until_eof(sft_workdir):
    p = run_script('chat.py', '--out_dir=out-sft', '--top_k=1', '--max_new_tokens=8', '--device=cpu',
                   '--dtype=float32', cwd=sft_workdir, input='spell the\n\nsay it\n')
    chat, _, tok = chat_of(sft_workdir)
    expected = [tok.decode(list(chat.reply(msg, 8, top_k=1))) for msg in ('spell the', 'say it')]
    got = [line.split('assistant: ', 1)[1] for line in p.stdout.splitlines() if 'assistant: ' in line]
    assert got == expected and p.stdout.endswith('user: \n')  # EOF at the third prompt ends it


def test_a_message_that_cant_be_encoded_is_refused_and_the_chat_goes_on(sft_workdir):
    # a special token's name is no text a character vocabulary without '<' '|' '_' can encode
    p = run_script('chat.py', '--out_dir=out-sft', '--top_k=1', '--max_new_tokens=8', '--device=cpu',
                   '--dtype=float32', cwd=sft_workdir, input='spell <|user_end|>\nspell the\n')
    chat, _, tok = chat_of(sft_workdir)
    notes = [line for line in p.stdout.splitlines() if 'note: ' in line]
    assert len(notes) == 1 and 'not in the vocabulary' in notes[0] and "'|'" in notes[0], p.stdout
    got = [line.split('assistant: ', 1)[1] for line in p.stdout.splitlines() if 'assistant: ' in line]
    assert got == [tok.decode(list(chat.reply('spell the', 8, top_k=1)))] and p.stdout.endswith('user: \n')


def ctrl_c_session(cwd, seed):
    """ Two messages, each reply stopped by Ctrl-C once it has streamed 20 characters, then Ctrl-D: (seen, out, err,
    returncode), or None when a reply ended by itself just before its Ctrl-C came (the model can sample its end):
    a race of the test, not of chat.py. That Ctrl-C meets the prompt, which it ends, unless it comes just before
    input() blocks in read(), where CPython misses it (every Python program's race; measured with a bare input()
    on this 2-core machine kept busy: 8 of 20 such Ctrl-Cs lost) and the chat waits for a line. """
    # bytes, unbuffered: a text-mode pipe reads ahead into its own buffer, where select() can't see what is waiting
    proc = subprocess.Popen([sys.executable, str(ROOT / 'chat.py'), '--out_dir=out-sft', '--max_new_tokens=1000000',
                             '--device=cpu', '--top_k=0', '--temperature=2.0', f'--seed={seed}'], cwd=cwd,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    decoder = codecs.getincrementaldecoder('utf-8')()
    seen = ''
    def read_char():  # the output's next character ('' at its end); a chat that prints nothing for a minute fails
        char = ''
        while not char:
            if not select.select([proc.stdout], [], [], 60)[0]:
                proc.kill()
                pytest.fail(f"chat.py printed nothing for 60 s; its output so far ends: {seen[-300:]!r}")
            byte = proc.stdout.read(1)
            if not byte:
                return ''
            char = decoder.decode(byte)
        return char
    for message in ('spell the', 'say it'):
        reply = ''
        while len(reply) < 20:  # a reply that ends first (the prompt comes back) can't be stopped: ask again
            proc.stdin.write(f'{message}\n'.encode())
            proc.stdin.flush()
            start = len(seen)
            while 'assistant: ' not in seen[start:] or not (len(reply) >= 20 or '\nuser: ' in reply):
                char = read_char()
                assert char, f"chat.py ended before its reply; its output ends: {seen[-300:]!r}, {proc.stderr.read()[-300:]}"
                seen += char
                reply = seen[start:].split('assistant: ', 1)[-1] if 'assistant: ' in seen[start:] else ''
        proc.send_signal(signal.SIGINT)
        while '[stopped]' not in seen[start:]:
            char = read_char() if '\nuser: ' not in reply else ''
            if not char:  # the prompt came back, or the chat ended: the Ctrl-C came after the reply's own end
                proc.kill()
                proc.wait()
                return None
            seen += char
            reply = seen[start:].split('assistant: ', 1)[-1]
    proc.stdin.close()  # then Ctrl-D
    out, err = decoder.decode(proc.stdout.read(), final=True), proc.stderr.read().decode()
    return seen, out, err, proc.wait(timeout=60)


def test_ctrl_c_stops_a_reply_and_the_chat_goes_on(sft_workdir):
    for seed in range(3):  # another seed, another reply, when one ends by itself just before its Ctrl-C
        result = ctrl_c_session(sft_workdir, seed)
        if result is not None:
            break
    seen, out, err, returncode = result
    assert returncode == 0 and 'Traceback' not in err, err
    assert seen.count('[stopped]') == 2 and out.endswith('user: \n'), (seen[-300:], out[-300:])


def test_ctrl_c_stops_an_eval_run(sft_workdir):
    """ In an --eval_file run, Ctrl-C stops the run (one line, no score), not just the reply it lands in. """
    record = json.dumps({'instruction': 'spell the', 'output': 't h e'})
    (sft_workdir / 'q.jsonl').write_text((record + '\n') * 5000)
    proc = subprocess.Popen([sys.executable, str(ROOT / 'chat.py'), '--out_dir=out-sft', '--eval_file=q.jsonl',
                             '--max_new_tokens=60', '--device=cpu', '--dtype=float32'], cwd=sft_workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = b''
    while not re.search(rb'\| [1-9]\d*/5000', err):  # its progress bar: replies are being scored
        assert select.select([proc.stderr], [], [], 60)[0], err[-300:]
        chunk = os.read(proc.stderr.fileno(), 4096)
        assert chunk, err[-300:]
        err += chunk
    time.sleep(0.3)  # into a reply: the bar is drawn between two
    proc.send_signal(signal.SIGINT)
    try:
        out, rest = proc.communicate(timeout=60)  # not the 3.5 minutes of the whole run
    finally:
        proc.kill()
    err = (err + rest).decode()
    assert proc.returncode == -signal.SIGINT and 'Traceback' not in err, err[-3000:]
    assert re.split(r'[\r\n]', err.strip())[-1] == 'stopped (Ctrl-C)' and b'exact match' not in out


@pytest.mark.parametrize('where', ['transformer.h.1', 'lm_head'])  # before the cache has moved on, and after
def test_a_reply_stopped_inside_the_forward_leaves_the_cache_in_step(sft_workdir, where):
    """ Ctrl-C lands inside a forward: in a Block (the cache not moved on yet) or in lm_head (moved on). The next
    turns feed what the cache lacks, no more, no less: their logits are those of the whole conversation. """
    chat, model, tok = chat_of(sft_workdir)
    calls = []

    def interrupt(module, args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
    handle = model.get_submodule(where).register_forward_pre_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        list(chat.reply('spell the', 10, top_k=1))
    handle.remove()
    checked = []

    def check(module, args, output):
        context = chat.context()
        with torch.no_grad():
            full = model.__class__.forward(model, torch.tensor([context]))[0][0, -1]
        checked.append(chat.kv_cache.pos == len(context) and torch.allclose(output[0][0, -1], full, atol=1e-5))
    model.register_forward_hook(check)
    for message in ('say it', 'and now?'):
        list(chat.reply(message, 5, top_k=1))
    assert len(checked) >= 2 and all(checked)


def test_eval_file_scores_exact_match(sft_workdir):
    """ The model's own greedy reply counts, any other does not. """
    chat, _, tok = chat_of(sft_workdir)
    answer = tok.decode(list(chat.reply('spell the', 8, top_k=1)))
    (sft_workdir / 'q.jsonl').write_text(
        json.dumps({"instruction": "spell the", "output": answer}) + '\n' +
        json.dumps({"instruction": "spell the", "output": answer + 'x'}) + '\n'
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"},'
        ' {"role": "user", "content": "spell a"}, {"role": "assistant", "content": "a"}]}\n')
    p = run_script('chat.py', '--out_dir=out-sft', '--eval_file=q.jsonl', '--max_new_tokens=8', '--device=cpu',
                   '--dtype=float32', cwd=sft_workdir)
    assert p.stdout.splitlines()[-1].startswith('exact match: 1/3 = 33.3% (q.jsonl, greedy)'), p.stdout
    assert not any(line.startswith('all: ') for line in p.stdout.splitlines())  # one task: no per-task line


def test_eval_file_takes_an_empty_system_message_by_its_role(sft_workdir):
    """ An empty system message is the record's system message, not its first turn: the earlier turns are
    given as they are, and it opens no system block, in chat.py's eval as in training (render). """
    chat, _, tok = chat_of(sft_workdir)
    chat.add_turn('hi', 'ho')
    answer = tok.decode(list(chat.reply('spell a', 8, top_k=1)))
    turns = [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'ho'},
             {'role': 'user', 'content': 'spell a'}, {'role': 'assistant', 'content': answer}]
    record = [{'role': 'system', 'content': ''}, *turns]
    (sft_workdir / 'q.jsonl').write_text(json.dumps({'messages': record}) + '\n')
    p = run_script('chat.py', '--out_dir=out-sft', '--eval_file=q.jsonl', '--max_new_tokens=8', '--device=cpu',
                   '--dtype=float32', cwd=sft_workdir)
    assert p.stdout.splitlines()[-1].startswith('exact match: 1/1 = 100.0%'), p.stdout
    assert render(tok, record) == render(tok, turns)


def test_prompt_with_nf4_weights(sft_workdir):
    """ --quantize=nf4: the reply is the greedy reply of the same model with its Block Linears in NF4. """
    from quantize import quantize
    p = run_script('chat.py', '--out_dir=out-sft', '--prompt=spell the', '--top_k=1', '--max_new_tokens=10',
                   '--device=cpu', '--dtype=float32', '--quantize=nf4', cwd=sft_workdir)
    chat, model, tok = chat_of(sft_workdir)
    quantize(model, 'nf4')
    assert p.stdout.splitlines()[-1] == tok.decode(list(chat.reply('spell the', 10, top_k=1)))


def test_a_system_message_over_half_the_context_is_refused_in_one_line(sft_workdir):
    """ Up to half the context (its markers and the opening token counted) is the system message's, the rest the
    conversation's: one token more is refused before any reply, saying how many it has and how many are allowed. """
    tok = load_tokenizer(str(sft_workdir / 'data' / 'sft'))
    longest = 'e' * (32 - len(head_ids(tok, 'e')) + 1)  # out-sft's context is 64 tokens: 32 for the system message
    assert len(head_ids(tok, longest)) == 32
    chat_of(sft_workdir, system=longest)
    with pytest.raises(ValueError, match='takes 33 tokens .* more than the 32 allowed'):
        chat_of(sft_workdir, system=longest + 'e')
    p = run_script('chat.py', '--out_dir=out-sft', '--prompt=spell the', f"--system={'e' * 200}", '--device=cpu',
                   cwd=sft_workdir, check=False)
    error_line(p, 'the system message takes 203 tokens (its text, its two markers and the <|endoftext|> that opens '
                  'the conversation), more than the 32 allowed: half the model\'s context of 64 tokens')


@pytest.mark.parametrize('system_chars', [0, 3, 9])  # heads of 1, 6 and 12 tokens: up to half of block_size=24
def test_cropping_keeps_the_current_turn_within_block_size(sft_workdir, system_chars):
    """ The context fed to the model, at every forward, is the head, then the end of the current turn (the user's
    message, <|assistant_start|> and the reply so far), of at most block_size tokens: with turns to drop, a reply
    that grows past the context, and a message longer than the whole context. A crop keeps half the room the
    head leaves, so that the reply grows into the other half before the next re-prefill. """
    chat, model, tok = chat_of(sft_workdir, 24, system='e' * system_chars)
    assert len(chat.head) <= 12
    current, seen, crops = [], [], []

    def check(module, args, output):
        fed = chat.context()  # all of it in the cache now, the tokens of this forward last
        assert chat.kv_cache.pos == len(fed) <= 24 and args[0][0].tolist() == fed[len(fed) - args[0].size(1):]
        assert fed[:len(chat.head)] == chat.head
        tail = fed[len(chat.head):]
        assert tail and current[-len(tail):] == tail, (tok.decode(fed), tok.decode(current))
        if seen and args[0].size(1) == len(fed):  # fed anew after a crop: the turns keep half the room left
            assert len(tail) <= (24 - len(chat.head)) // 2  # the other half for the reply, before the next crop
            crops.append(len(fed))
        seen.append(len(fed))
    model.register_forward_hook(check)
    torch.manual_seed(0)
    for message in ('spell the', 'say it', 'the king shall not die to night for all his men'):
        current[:] = prompt_ids(tok, message)
        for idx in chat.reply(message, 30, temperature=2.0):  # hot: a long reply, its end unlikely
            current.append(idx)
    assert len(seen) > 30 and max(seen) == 24 and crops  # it did fill the context, and crop
    context = tok.decode(chat.context())
    assert 'spell the' not in context and context.endswith('<|assistant_end|>')


def test_the_kv_cache_has_the_dtype_of_the_keys(sft_workdir):
    """ Made under the caller's autocast (chat.py's rt.ctx) as generate's is: bf16 under bf16, half fp32's memory. """
    chat, model, tok = chat_of(sft_workdir)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        list(chat.reply('spell the', 2, top_k=1))
        assert chat.kv_cache.k[0].dtype == model.new_kv_cache(1).k[0].dtype == torch.bfloat16
    chat, model, tok = chat_of(sft_workdir)
    list(chat.reply('spell the', 2, top_k=1))
    assert chat.kv_cache.k[0].dtype == torch.float32


def test_export_writes_the_chat_template(sft_workdir):
    """ export.py on an instruction-tuned model: Hugging Face's apply_chat_template gives render()'s ids (no, an
    empty and a real system message, two turns), its generation prompt Chat's context, and greedy generate() the
    reply Chat gives (cut at max_new_tokens by both, or ended by <|assistant_end|>, an end of generate()'s);
    chat.py --init_from=<the export> gives the reply it gives from the checkpoint. """
    from transformers import AutoTokenizer, GPT2LMHeadModel
    p = run_script('export.py', '--out_dir=out-sft', '--to=hf', cwd=sft_workdir)
    assert p.stdout.rstrip().endswith('with its chat template')
    hf_tok = AutoTokenizer.from_pretrained(sft_workdir / 'hf')
    chat, model, tok = chat_of(sft_workdir, system='be brief')
    turns = [{'role': 'user', 'content': 'spell the'}, {'role': 'assistant', 'content': 't h e'},
             {'role': 'user', 'content': 'say it'}, {'role': 'assistant', 'content': 'it'}]
    for system in ([], [{'role': 'system', 'content': ''}], [{'role': 'system', 'content': 'be brief'}]):
        assert hf_tok.apply_chat_template(system + turns)['input_ids'] == render(tok, system + turns)[0]
    prompt = hf_tok.apply_chat_template(system + turns[:3], add_generation_prompt=True)['input_ids']
    chat.add_turn('spell the', 't h e')
    reply = chat.reply('say it', 20, top_k=1)
    ours = [next(reply)]
    assert prompt == chat.context()[:-1]  # what the first reply token was sampled after
    ours += list(reply)
    hf = GPT2LMHeadModel.from_pretrained(sft_workdir / 'hf').eval()
    assert hf.generation_config.eos_token_id == [tok.special_id(BOUNDARY), tok.special_id('<|assistant_end|>')]
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)[0, len(prompt):].tolist()
    assert theirs == ours + [tok.special_id('<|assistant_end|>')] if len(ours) < 20 else theirs == ours
    # chat.py reads the export with the dataset's own tokenizer (export.py copies it) and answers as from the checkpoint
    replies = [run_script('chat.py', source, '--prompt=spell the', '--top_k=1', '--max_new_tokens=10', '--device=cpu',
                          '--dtype=float32', cwd=sft_workdir).stdout.splitlines()[-1]
               for source in ('--out_dir=out-sft', '--init_from=hf')]
    assert replies[0] == replies[1] and replies[0]


@pytest.mark.parametrize('record, message', [
    ({'messages': [{'role': 'user', 'content': 'hi'}]},
     'record 2 of q.jsonl: it ends with a user message that has no assistant reply; fix or remove it'),
    ({'instruction': 'spell the', 'output': ''}, 'record 2 of q.jsonl: the assistant reply of turn 1 is empty'),
    ({'instruction': 'spell <|user_end|>', 'output': 'x'},
     "record 2 of q.jsonl: the text has characters not in the vocabulary of"),
    ({'messages': [{'role': 'system', 'content': 'e' * 40}, {'role': 'user', 'content': 'hi'},
                   {'role': 'assistant', 'content': 'ho'}]}, 'record 2 of q.jsonl: the system message takes 43 tokens'),
])
def test_a_bad_eval_record_is_one_line_naming_the_file_and_the_record(sft_workdir, record, message):
    (sft_workdir / 'q.jsonl').write_text(json.dumps({'instruction': 'spell the', 'output': 't h e'}) + '\n'
                                         + json.dumps(record) + '\n')
    p = run_script('chat.py', '--out_dir=out-sft', '--eval_file=q.jsonl', '--device=cpu', cwd=sft_workdir, check=False)
    error_line(p, message)


def test_eval_file_counts_each_task_and_shows_the_misses(sft_workdir):
    """ Records of two tasks: a line per task with its own exact matches, the misses shown under "some misses:",
    and an expected reply that is only the start of the model's is a miss, not a match. """
    chat, _, tok = chat_of(sft_workdir)
    answer = tok.decode(list(chat.reply('spell the', 8, top_k=1)))
    assert len(answer) >= 2
    records = [{'instruction': 'spell the', 'output': answer, 'task': 'b'},
               {'instruction': 'spell the', 'output': answer[:-1], 'task': 'b'},  # a prefix of the reply
               {'instruction': 'spell the', 'output': answer, 'task': 'a'}]
    (sft_workdir / 'q.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
    p = run_script('chat.py', '--out_dir=out-sft', '--eval_file=q.jsonl', '--max_new_tokens=8', '--device=cpu',
                   '--dtype=float32', cwd=sft_workdir)
    assert p.stdout.splitlines()[-5:] == ['a: 1/1 = 100.0%', 'b: 1/2 = 50.0%', 'some misses:',
                                          f"  'spell the': {answer!r} (expected {answer[:-1]!r})",
                                          'exact match: 2/3 = 66.7% (q.jsonl, greedy)'], p.stdout


def test_the_system_message_opens_the_prompt_and_the_interactive_chat(sft_workdir):
    """ --system: --prompt's reply, and the interactive chat's, are those of a Chat that has it. """
    chat, _, tok = chat_of(sft_workdir, system='be brief')
    expected = tok.decode(list(chat.reply('spell the', 10, top_k=1)))
    plain, _, _ = chat_of(sft_workdir)
    assert expected != tok.decode(list(plain.reply('spell the', 10, top_k=1)))  # the system message matters
    args = ['--out_dir=out-sft', '--system=be brief', '--top_k=1', '--max_new_tokens=10', '--device=cpu',
            '--dtype=float32']
    p = run_script('chat.py', *args, '--prompt=spell the', cwd=sft_workdir)
    assert p.stdout.splitlines()[-1] == expected
    p = run_script('chat.py', *args, cwd=sft_workdir, input='spell the\n')
    assert [line.split('assistant: ', 1)[1] for line in p.stdout.splitlines() if 'assistant: ' in line] == [expected]


def test_temperature_reaches_the_sampler(sft_workdir):
    """ --temperature divides the logits: near 0 every draw is the argmax, so --top_k=0 (all tokens) gives the greedy
    reply of an in-process Chat; at 1.0 a random model's reply of 10 tokens drawn from all of them is another. """
    chat, _, tok = chat_of(sft_workdir)
    greedy = tok.decode(list(chat.reply('spell the', 10, top_k=1)))
    args = ['--out_dir=out-sft', '--prompt=spell the', '--top_k=0', '--max_new_tokens=10', '--device=cpu',
            '--dtype=float32']
    replies = [run_script('chat.py', *args, f'--temperature={t}', cwd=sft_workdir).stdout.splitlines()[-1]
               for t in ('1e-4', '1.0')]
    assert replies[0] == greedy and replies[1] != greedy


@pytest.mark.parametrize('text', ['[]', '\n \n'])  # an empty JSON list, blank lines: text, but no record
def test_an_eval_file_without_records_is_one_line(sft_workdir, text):
    (sft_workdir / 'q.jsonl').write_text(text)
    p = run_script('chat.py', '--out_dir=out-sft', '--eval_file=q.jsonl', '--device=cpu', cwd=sft_workdir, check=False)
    error_line(p, 'q.jsonl has no records')
