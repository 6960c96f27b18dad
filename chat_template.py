"""
The chat template, for instruction tuning (data/instruct/prepare.py, train.py) and chatting (chat.py).

A conversation is a list of {'role': 'system'|'user'|'assistant', 'content': str} messages: an optional
system message first, then user and assistant turns taking turns, starting with the user. render() turns
it into token ids plus a mask that is 1 exactly on the assistant's reply tokens and its <|assistant_end|>:

    <|endoftext|> [<|system_start|> system <|system_end|>]
    <|user_start|> user <|user_end|> <|assistant_start|> reply <|assistant_end|> ...

Every conversation begins with the boundary token <|endoftext|>, so that a token file of concatenated
conversations can be cut into rows that each start at one (conversation_starts). The special tokens are
tokenizer.SPECIAL_TOKENS: a trained BPE reserves them, GPT-2's BPE and characters get them appended
(tokenizer.with_special_tokens), and a model trained before grows its embedding (GPT.grow_vocab).
"""
import json
import os
from contextlib import contextmanager

import numpy as np

from data_io import as_tokens, read_meta, read_text, write_splits
from tokenizer import BPE_FILE, SPECIAL_TOKENS

BOUNDARY = '<|endoftext|>'
ROLES = ('system', 'user', 'assistant')


def chat_tokenizer(tok):
    """ tok with the chat's special tokens (those it lacks appended after its vocabulary). """
    return tok.with_special_tokens(SPECIAL_TOKENS)


def is_instruction_data(data_dir):
    """ Whether the dataset folder data_dir (a tokenizer's folder; None: GPT-2's) holds conversations that
    write_dataset wrote. Not the special tokens alone: a trained BPE reserves them in any dataset. """
    return data_dir is not None and 'bos_id' in read_meta(data_dir)


def check_chat_tokenizer(tok, data_dir, what, fix="finetune it on instructions first (data/instruct/prepare.py, "
                                                   "then train.py with that dataset)"):
    """ ValueError unless tok, the tokenizer of data_dir, is an instruction dataset's, with the chat's special tokens
    (what: where tok came from, for the message). """
    missing = [name for name in SPECIAL_TOKENS if name not in tok.special_tokens]
    if missing:
        raise ValueError(f"{what} has no chat template (its tokenizer lacks {', '.join(missing)}): {fix}")
    if not is_instruction_data(data_dir):
        raise ValueError(f"{what} has no chat template ({data_dir} holds no conversations, though its BPE has the "
                         f"chat's tokens): {fix}")


def read_records(path):
    """ The records of a local JSON (a list) or JSONL (one object a line) file; ValueError naming the bad line. """
    text = read_text(path)
    if text.lstrip().startswith('['):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON (line {e.lineno}: {e.msg}): fix it, or write one record "
                             f"a line (JSONL)") from None
    records = []
    # lines end at '\n' only: JSON strings may hold U+2028, U+2029 and U+0085 raw, which splitlines() breaks at
    for n, line in enumerate(text.split('\n'), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {n} is not JSON ({e.msg}): fix or remove that line") from None
    return records


@contextmanager
def naming_record(n, where):
    """ A ValueError about one record raised inside, prefixed with which it is: record n of where (a file, a
    dataset), as data/instruct/prepare.py and chat.py's --eval_file both report a bad record. """
    try:
        yield
    except ValueError as e:
        raise ValueError(f"record {n} of {where}: {e}; fix or remove it") from None


def from_record(record):
    """ The conversation of one dataset record: Alpaca ({instruction, input, output}) or chat ({messages}).
    ValueError (one sentence) for a record of neither shape or with an empty assistant reply. """
    if not isinstance(record, dict):
        raise ValueError(f"a record is a {type(record).__name__}, not an object with 'messages' or "
                         f"'instruction'/'output'")
    if 'messages' in record:
        messages = record['messages']
        if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get('role'), str)
                                                     and isinstance(m.get('content'), str) for m in messages):
            raise ValueError("its 'messages' is not a list of {role, content} objects with string values")
        conversation = [{'role': m['role'], 'content': m['content']} for m in messages]
    elif 'instruction' in record and 'output' in record:
        if record['instruction'] is None or record['output'] is None:  # str() would make them the text 'None'
            raise ValueError("its 'instruction' or 'output' is null")
        prompt = str(record['instruction'])
        if str(record.get('input') or '').strip():  # Alpaca's optional context goes after the instruction
            prompt += '\n\n' + str(record['input'])
        conversation = [{'role': 'user', 'content': prompt}, {'role': 'assistant', 'content': str(record['output'])}]
    else:
        raise ValueError(f"it has neither 'messages' (chat) nor 'instruction' and 'output' (Alpaca); its keys are "
                         f"{sorted(record)[:6]}")
    check_conversation(conversation)
    return conversation


def split_system(conversation):
    """ (the system message's text, the turns after it): the first message is the system message when its
    role says so, even when empty; without one, the text is '' (which opens no system block either). """
    if conversation and conversation[0]['role'] == 'system':
        return conversation[0]['content'], conversation[1:]
    return '', conversation


def check_conversation(conversation):
    """ ValueError unless: an optional system message, then user/assistant alternating from the user,
    ending with the assistant, and no empty assistant reply. """
    turns = split_system(conversation)[1]
    if not turns:
        raise ValueError("it has no user and assistant turns")
    for i, m in enumerate(turns):
        want = 'user' if i % 2 == 0 else 'assistant'
        if m['role'] != want:
            raise ValueError(f"message {i + 1} has role {m['role']!r} where {want!r} was due: turns go (system,) "
                             f"user, assistant, user, assistant...")
        if want == 'assistant' and not m['content'].strip():
            raise ValueError(f"the assistant reply of turn {i // 2 + 1} is empty")
    if turns[-1]['role'] != 'assistant':
        raise ValueError("it ends with a user message that has no assistant reply")


def message_ids(tok, role, text):
    """ Ids of one message: <|role_start|> text <|role_end|>. """
    # text only: a '<|user_end|>' typed in the text stays text (or, on characters, a ValueError naming them)
    return [tok.special_id(f"<|{role}_start|>"), *tok.encode_ordinary(text), tok.special_id(f"<|{role}_end|>")]


def render(tok, conversation):
    """ (ids, mask) of a conversation (lists of ints): mask is 1 on the assistant's replies and their
    <|assistant_end|>, 0 elsewhere. tok must have the chat's special tokens (chat_tokenizer). """
    # opened as Chat opens it, so that training and chatting see the same tokens (an empty system message: none)
    system, turns = split_system(conversation)
    ids = head_ids(tok, system)
    mask = [0] * len(ids)
    for m in turns:
        message = message_ids(tok, m['role'], m['content'])
        on = int(m['role'] == 'assistant')
        ids += message
        mask += [0, *[on] * (len(message) - 1)]
    return ids, mask


# render()'s format as a Jinja chat template, for Hugging Face's tokenizer.apply_chat_template (export.py writes it
# beside an instruction-tuned model): the same ids, and the generation prompt that opens a reply
HF_TEMPLATE = ("{{ '" + BOUNDARY + "' }}{% for m in messages %}{% if m['role'] != 'system' or m['content'] %}"
               "<|{{ m['role'] }}_start|>{{ m['content'] }}<|{{ m['role'] }}_end|>{% endif %}{% endfor %}"
               "{% if add_generation_prompt %}<|assistant_start|>{% endif %}")


def head_ids(tok, system=''):
    """ Ids that open a conversation: the boundary token, and the system message if there is one. """
    ids = [tok.special_id(BOUNDARY)]
    if system:
        ids += message_ids(tok, 'system', system)
    return ids


def prompt_ids(tok, message):
    """ Ids of one user turn that open the assistant's reply: what chat.py feeds the model each turn. """
    return message_ids(tok, 'user', message) + [tok.special_id('<|assistant_start|>')]


def conversation_starts(tokens, boundary_id, block_size):
    """ Offsets of the boundary tokens in tokens where a row of block_size inputs and their targets fits. """
    tokens = np.asarray(tokens)
    return np.flatnonzero(tokens[:max(len(tokens) - block_size, 0)] == boundary_id)


def rows_with_a_reply(starts, mask, block_size):
    """ The starts whose row has a reply token (mask 1) among its block_size targets: a row of prompt alone has
    no loss, and a batch of such rows a NaN one. A block_size shorter than a conversation's prompt leaves it out. """
    seen = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))  # seen[k]: reply tokens before offset k
    return starts[seen[starts + 1 + block_size] - seen[starts + 1] > 0]


def masked_targets(y, mask):
    """ Targets y with -1 (ignored by the loss) where mask is 0: the loss counts the replies only. """
    return y.masked_fill(mask == 0, -1)


def write_dataset(data_dir, base, splits, block_size):
    """ Render {split: conversations} with base's tokenizer plus the chat's special tokens into data_dir:
    <split>.bin (ids, then block_size filler tokens) and <split>_mask.bin (uint8, 1 where the loss counts) side
    by side, and meta.pkl with the tokenizer's definition (characters: stoi/itos; a trained BPE: bpe.json
    beside it; GPT-2: nothing), its special tokens and the boundary id (bos_id). A conversation longer than
    block_size + 1 tokens (a row and its targets) can't be trained on whole: it is skipped, and counted.
    Returns {split: (conversations kept, their tokens (not the filler), skipped as too long, skipped for characters
    outside the vocabulary)}. """
    tok = chat_tokenizer(base)
    out, arrays = {}, {}
    for split, conversations in splits.items():
        ids, mask, kept, too_long, unknown = [], [], 0, 0, 0
        for conversation in conversations:
            try:
                i, m = render(tok, conversation)
            except ValueError:  # characters outside the base vocabulary (special-token names typed in are text too)
                unknown += 1
                continue
            if len(i) > block_size + 1:
                too_long += 1
                continue
            ids += i
            mask += m
            kept += 1
        if not kept:
            raise ValueError(f"the {split} split has no conversation left to write ({too_long} longer than "
                             f"block_size={block_size}, {unknown} with characters outside the base vocabulary): "
                             f"raise --block_size or give more (or shorter) records")
        out[split] = (kept, len(ids), too_long, unknown)
        # block_size filler tokens at the end, masked out, so that a row fits from every conversation's start
        # (conversation_starts), the last ones' too: the filler follows them, and causal attention keeps it from
        # changing their predictions. Id 0 is an ordinary token (the special ones come after the base vocabulary),
        # never the boundary that would start a row in the filler
        arrays[split] = (ids + [0] * block_size, mask + [0] * block_size)
    os.makedirs(data_dir, exist_ok=True)
    meta = {'vocab_size': tok.vocab_size, 'special_tokens': list(SPECIAL_TOKENS), 'base_vocab_size': base.vocab_size,
            'bos_id': tok.special_id(BOUNDARY)}
    files = {f"{split}_mask.bin": as_tokens(mask, np.uint8).tobytes() for split, (_, mask) in arrays.items()}
    if base.kind == 'char':
        meta.update(stoi=base.stoi, itos=base.itos)
    elif base.kind == 'bpe':
        files[BPE_FILE] = base.to_json()
        meta['tokenizer'] = 'bpe'
    write_splits(data_dir, {split: ids for split, (ids, _) in arrays.items()}, tok.vocab_size, meta, files)
    if base.kind != 'bpe' and os.path.exists(os.path.join(data_dir, BPE_FILE)):
        # an earlier run's on a BPE base: load_tokenizer would read these ids through it
        os.remove(os.path.join(data_dir, BPE_FILE))
    return out


class Chat:
    """ One conversation with a model, its KV cache kept across turns: each turn feeds only its own tokens
    (the previous reply's end token, the user's message, <|assistant_start|>), never the earlier turns again.
    When the context would pass block_size, the oldest turns are dropped (the system message is kept) until
    half of what the system message leaves is free, the current turn's oldest tokens too if it alone is longer,
    and what is left is prefilled once more: the model always sees the end of the current turn. The system
    message may take at most half the context (ValueError), so that the turns have the other half. """

    def __init__(self, model, tok, system=''):
        self.model, self.tok = model, tok
        self.block_size = model.config.block_size
        self.end = tok.special_id('<|assistant_end|>')
        self.head = head_ids(tok, system)
        limit = self.block_size // 2
        if len(self.head) > limit:
            raise ValueError(f"the system message takes {len(self.head)} tokens (its text, its two markers and "
                             f"the {BOUNDARY} that opens the conversation), more than the {limit} allowed: half the "
                             f"model's context of {self.block_size} tokens, the other half kept for the conversation; "
                             f"shorten it")
        self.device = next(model.parameters()).device
        # made by the first reply, under the caller's autocast: the cache then has the keys' dtype (bf16 under bf16
        # autocast: half the memory and reads of an fp32 one), as generate's has
        self.kv_cache = None  # the keys and values of context()[:kv_cache.pos]
        self.turns = []  # ids of each turn so far (the user's message and the reply), after head

    def context(self):
        return self.head + [i for turn in self.turns for i in turn]

    def _crop(self):
        # the turns keep half the room the head leaves (at least a quarter of the context, the head taking at most
        # half), the other half free for the reply to grow into before the next crop: drop whole turns from the
        # start (keep the last one, the reply being written), then if that one alone is too long, its oldest tokens,
        # in place, so that context() stays what the model sees
        keep = max((self.block_size - len(self.head)) // 2, 1)
        while len(self.turns) > 1 and sum(map(len, self.turns)) > keep:
            self.turns.pop(0)
        del self.turns[-1][:max(len(self.turns[-1]) - keep, 0)]
        self.kv_cache.pos = 0

    def reply(self, message, max_new_tokens, temperature=1.0, top_k=None):
        """ Yield the reply's token ids to message as they come (top_k=1: greedy), up to <|assistant_end|>. """
        import torch
        from model import sample_next
        turn = prompt_ids(self.tok, message)
        self.turns.append(turn)
        if self.kv_cache is None:
            self.kv_cache = self.model.new_kv_cache(1)
        try:
            for _ in range(max_new_tokens):
                context = self.context()
                if len(context) > self.block_size:
                    self._crop()
                    context = self.context()
                # what the cache does not hold yet, by its own position: a reply stopped anywhere (Ctrl-C, inside
                # the forward too) leaves nothing fed twice or skipped
                unfed = context[self.kv_cache.pos:]
                with torch.no_grad():
                    logits, _ = self.model(torch.tensor([unfed], device=self.device), kv_cache=self.kv_cache)
                idx = sample_next(logits[:, -1, :].float(), temperature, top_k).item()
                turn.append(idx)
                if idx == self.end:
                    return
                yield idx
        finally:  # cut at max_new_tokens, or stopped by the caller (Ctrl-C): the reply still ends as the
            if turn[-1] != self.end:  # template says, fed with the next turn
                turn.append(self.end)

    def add_turn(self, message, reply):
        """ A whole turn given, not generated (the earlier turns of an evaluation record). """
        turn = message_ids(self.tok, 'user', message) + message_ids(self.tok, 'assistant', reply)
        self.turns.append(turn)
