"""
Chat with an instruction-tuned model (train.py on a dataset of data/instruct/prepare.py or data/instruct_demo):
the reply streams token by token and stops at the end of the assistant's turn; the conversation's KV cache is
kept across turns, so each turn feeds only its own tokens (chat_template.Chat). Ctrl-C stops a reply; Ctrl-D
(or Ctrl-C at the prompt) ends the chat.
$ python chat.py --out_dir=out-instruct-demo                             # interactive
$ python chat.py --out_dir=out-instruct-demo --prompt="spell wicked"     # one answer, then exit
$ python chat.py --out_dir=out-instruct-demo --eval_file=data/instruct_demo/heldout.jsonl   # exact match
--dataset=<instruction dataset> reads a base model through that dataset's chat tokenizer (its embedding grown
as train.py grows it): the base model's score before finetuning.
"""
import os
from collections import Counter, deque

from tqdm import tqdm

import runtime
from chat_template import Chat, check_chat_tokenizer, from_record, naming_record, read_records, split_system
from data_io import read_meta
from quantize import check_quantize
from tokenizer import TextStream, load_tokenizer

# -----------------------------------------------------------------------------
init_from = 'resume' # 'resume' (out_dir's ckpt.pt, or an FSDP run's ckpt.dcp) or the out_dir of a run
out_dir = 'out' # ignored if init_from is not 'resume'
dataset = '' # the dataset whose tokenizer the model reads; '' the one it was trained on
prompt = '' # answer this one message and exit; '' chats interactively
system = '' # a system message that opens the conversation; '' none
eval_file = '' # JSON/JSONL of Alpaca or chat records: greedy replies to each record's last turn, exact match
max_new_tokens = 256 # longest reply, in tokens
temperature = 0.8 # 1.0 = no change, < 1.0 = less random, > 1.0 = more random, in predictions
top_k = 200 # retain only the top_k most likely tokens; 0 keeps all, 1 is greedy
seed = 1337
device = 'cuda' # 'cpu', 'cuda', 'cuda:1', 'mps'; without a CUDA GPU, 'cuda' runs on the CPU
dtype = 'auto' # 'float32', 'bfloat16' or 'float16' autocast; 'auto': bf16 (else fp16) on cuda, bf16 on CPUs with native bf16, else fp32
quantize = '' # '' as saved; 'int8': int8 weights, faster decoding on CPU; 'nf4': 4-bit NF4 weights (a QLoRA checkpoint is NF4 already)
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read()) # overrides from command line or config file
# -----------------------------------------------------------------------------

runtime.errors_as_one_line()
runtime.require(max_new_tokens > 0, f"max_new_tokens must be > 0, got {max_new_tokens}")
runtime.require(top_k >= 0, f"top_k must be >= 0 (0 keeps all tokens, 1 is greedy), got {top_k}")
runtime.require(temperature > 0, f"temperature must be > 0, got {temperature}; use --top_k=1 for greedy replies")
runtime.require(not (prompt and eval_file), "give --prompt or --eval_file, not both")
runtime.require(not (system and eval_file), "--eval_file takes each record's own system message: drop --system")
runtime.require(not dataset or os.path.isfile(os.path.join('data', dataset, 'meta.pkl')),
                f"dataset='{dataset}': data/{dataset}/meta.pkl not found; name a dataset that "
                f"data/instruct/prepare.py wrote, or drop --dataset")
check_quantize(quantize)

rt = runtime.setup(device, dtype, seed)
model, checkpoint = runtime.load_model(init_from, out_dir, rt.device, dropout=0.0)
model.eval()
runtime.require(model.config.model_type == 'gpt', f"chat.py keeps a GPT's KV cache across turns; a "
                                                  f"{model.config.model_type} model has none: sample from it with sample.py")
# the chat tokenizer: the dataset's the model was finetuned on, or the one named (a base model: grown to it)
data_dir = os.path.join('data', dataset) if dataset else runtime.dataset_dir(checkpoint, init_from)
tok = load_tokenizer(data_dir)
if dataset:
    runtime.grow_vocab_for(model, read_meta(data_dir))
runtime.quantize_loaded(model, checkpoint, quantize)
if dataset:
    check_chat_tokenizer(tok, data_dir, f"data/{dataset}", "name an instruction dataset (one data/instruct/prepare.py "
                                                           "wrote)")
check_chat_tokenizer(tok, data_dir, f"the model of {out_dir if init_from == 'resume' else init_from}")
tok.check_model(model.config.vocab_size)
model.to(rt.device)
runtime.pack_for_cpu(model, rt) # on a CPU: the weights in oneDNN's layout, a faster kernel (README)
top_k = top_k or None


def stream(chat, message, show=True, greedy=False):
    """ The reply to message, printed as it comes when show; there Ctrl-C stops it (elsewhere, the run). """
    text = TextStream(tok)
    replies = chat.reply(message, max_new_tokens, temperature, 1 if greedy else top_k)
    try:
        with rt.ctx:
            for idx in replies:
                if show:
                    print(text.add(idx), end='', flush=True)
                else:
                    text.ids.append(idx) # decoded once at the end
    except KeyboardInterrupt:
        replies.close()
        if not show:
            raise
        print(text.add(final=True) + ' [stopped]', end='')
    if show:
        print(text.add(final=True), flush=True)
    return tok.decode(text.ids)


def check_message(message):
    """ Why message can't be sent, or None. """
    # the very encoding Chat uses: on characters a special token's name typed in is text, so '<' '|'... must be
    # in the vocabulary too, else the error would come mid-reply and end the chat
    try:
        tok.encode_ordinary(message)
    except ValueError as e:
        return str(e)
    return None


def eval_case(record):
    """ (a Chat holding the record's earlier turns, its last user message, the reply expected, its task); a
    ValueError for a bad record: its shape, characters outside the vocabulary, a system message too long. """
    sys_msg, turns = split_system(from_record(record))
    chat = Chat(model, tok, sys_msg)
    for user, reply in zip(turns[:-2:2], turns[1:-2:2]):
        chat.add_turn(user['content'], reply['content'])
    problem = check_message(turns[-2]['content'])  # here, not from inside the reply
    runtime.require(not problem, problem)
    return chat, turns[-2]['content'], turns[-1]['content'], str(record.get('task', 'all'))


if eval_file:
    # exact match: each record's earlier turns are given, its last reply is generated greedily; every record is
    # checked before the first reply, so that a bad one stops the run at once, not after the replies before it
    cases = deque()
    for n, record in enumerate(read_records(eval_file), 1):
        with naming_record(n, eval_file):
            cases.append(eval_case(record))
    runtime.require(cases, f"{eval_file} has no records")
    counts, correct, misses = Counter(), Counter(), []
    with tqdm(total=len(cases), desc='exact match', unit='record') as bar:
        while cases:  # popped, so that each chat's KV cache goes once its reply is scored
            chat, message, expected, task = cases.popleft()
            answer = stream(chat, message, show=False, greedy=True)
            bar.update()
            counts[task] += 1
            if answer == expected:
                correct[task] += 1
            elif len(misses) < 3:
                misses.append(f"  {message!r}: {answer!r} (expected {expected!r})")
    for task in sorted(counts) if len(counts) > 1 else []:
        print(f"{task}: {correct[task]}/{counts[task]} = {100 * correct[task] / counts[task]:.1f}%")
    n, k = sum(counts.values()), sum(correct.values())
    print('\n'.join(["some misses:", *misses]) if misses else "no misses")
    print(f"exact match: {k}/{n} = {100 * k / n:.1f}% ({eval_file}, greedy)")
elif prompt:
    problem = check_message(prompt)
    runtime.require(not problem, problem)
    stream(Chat(model, tok, system), prompt)
else:
    chat = Chat(model, tok, system)
    print(f"chatting with {out_dir if init_from == 'resume' else init_from} (context {model.config.block_size} "
          f"tokens): Ctrl-C stops a reply, Ctrl-D ends the chat")
    while True:
        try:
            message = input('\nuser: ')
        except (EOFError, KeyboardInterrupt):  # Ctrl-D, or Ctrl-C at the prompt
            print()
            break
        if not message.strip():
            continue
        problem = check_message(message)
        if problem:
            print(f"note: {problem}")
            continue
        print('assistant: ', end='', flush=True)
        stream(chat, message)
