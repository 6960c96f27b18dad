"""
HellaSwag (Zellers et al. 2019) zero-shot, the pieces eval_hellaswag.py and train.py share.

Each item is a context and 4 endings, one of them right (label). A model picks the ending whose
tokens it finds most likely after the context, build-nanogpt's convention: each row is the context's
GPT-2 tokens followed by the tokens of ' ' + ending, and only the ending's tokens are scored.
  acc       the ending with the lowest summed loss (nats) over its tokens
  acc_norm  the ending with the lowest mean loss per token (long endings are not penalised)
Ties: the lowest index wins (argmin's first minimum), so a tie counts as correct only when the
label is the first of the tied endings.
Crop: the model reads a row without its last token (that one is only predicted), so a row longer
than block_size+1 tokens keeps its last block_size+1: the context loses tokens from its left and the
ending stays whole. An ending of more than block_size tokens (only with tiny block sizes) also loses
its first tokens, and its last block_size tokens are scored.
"""

import json
import os

import torch
from torch.nn import functional as F

from data_io import download, read_text

VAL_URL = 'https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl'
GPT2_VOCAB = 50257  # items are GPT-2 BPE tokens: a model with fewer ids (a character-level one) can't read them


def download_val(data_dir):
    """ The path of the validation split (10,042 items) in data_dir, downloaded there the first time. """
    os.makedirs(data_dir, exist_ok=True)
    return download(VAL_URL, os.path.join(data_dir, 'hellaswag_val.jsonl'))


def load_items(path):
    """ The items of a HellaSwag JSONL file as dicts, each checked for ctx (str), endings (4 non-blank
    str) and label (0-3); a bad line is a ValueError naming its number. Blank lines are skipped. """
    items = []
    for n, line in enumerate(read_text(path).split('\n'), 1):  # '\n' only: a JSON line may hold other breaks
        if not line.strip():
            continue
        where = f"line {n} of {path}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where} is not valid JSON ({e}): fix or delete that line, or delete the file "
                             f"to download it again") from None
        if not isinstance(item, dict):
            raise ValueError(f"{where} is a JSON {type(item).__name__}, not an object with ctx, endings and "
                             f"label: fix or delete that line")
        if 'label' not in item:
            raise ValueError(f"{where} has no label (the index of the right ending): add one, or delete the "
                             f"line (the test split has no labels; use the validation split)")
        endings, label, ctx = item.get('endings'), item['label'], item.get('ctx')
        if not isinstance(ctx, str) or not ctx.strip():
            raise ValueError(f"{where} has no ctx (the context the endings follow): fix or delete that line")
        if not (isinstance(endings, list) and len(endings) == 4 and all(isinstance(e, str) for e in endings)):
            raise ValueError(f"{where}: endings must be a list of 4 strings: fix or delete that line")
        if type(label) is not int or not 0 <= label < 4:
            raise ValueError(f"{where}: label must be an int 0-3, got {label!r}: fix or delete that line")
        for i, ending in enumerate(endings):
            if not ending.strip():  # ' ' + '' would score a lone space
                raise ValueError(f"{where}: ending {i} is empty, there are no tokens to score: "
                                 f"fix or delete that line")
        items.append(item)
    if not items:
        raise ValueError(f"{path} holds no items: point --data_file at a HellaSwag JSONL file")
    return items


def tokenize_items(items, enc):
    """ (ctx tokens, [tokens of ' ' + ending] * 4, label) per item, tokenized once with enc (tiktoken's
    GPT-2 encoding) so that a training run can score them again and again. """
    tokenized = []
    for n, item in enumerate(items, 1):
        # the text as text: a special token's name written in it (<|endoftext|>) is not that token, nor an error
        ctx, endings = enc.encode_ordinary(item['ctx']), [enc.encode_ordinary(' ' + ending) for ending in item['endings']]
        if not ctx or not all(endings):  # the first ending token needs a context token to be predicted from
            raise ValueError(f"item {n} has an empty context or an ending that is empty after tokenization: "
                             f"nothing to score; fix or drop that item")
        tokenized.append((ctx, endings, item['label']))
    return tokenized


def check_model(model, tokenizer=None):
    """ A one-line ValueError for a model that can't score GPT-2 tokens. tokenizer: its dataset's, where known
    (tokenizer.py), as a model of another tokenizer may well have a vocabulary as large as GPT-2's. """
    if tokenizer is not None and tokenizer.kind != 'gpt2':
        raise ValueError(f"the model reads {tokenizer.describe()} tokens; HellaSwag is scored in GPT-2's BPE "
                         f"tokens: use a model trained on GPT-2 BPE data, or a GPT-2")
    if model.config.vocab_size < GPT2_VOCAB:
        raise ValueError(f"the model's vocab_size is {model.config.vocab_size}, HellaSwag is scored in GPT-2's "
                         f"{GPT2_VOCAB} BPE tokens: a model of another tokenizer can't be scored; use a GPT-2 BPE one")


def render(item, block_size, device):
    """ One item as 4 right-padded rows: (idx, targets), both (4, T); targets are -1 except where the
    row's next token is an ending token, so the losses cover the ending only. """
    ctx, endings, _ = item
    rows, scored = [], []
    for ending in endings:
        row = (ctx + ending)[-(block_size + 1):]  # crop from the left: the ending stays whole where it fits
        rows.append(row)
        scored.append(min(len(ending), len(row) - 1))  # the row's first token has no prediction
    T = max(map(len, rows)) - 1  # inputs are a row without its last token
    idx = torch.zeros(4, T, dtype=torch.long)
    targets = torch.full((4, T), -1, dtype=torch.long)
    for i, (row, k) in enumerate(zip(rows, scored)):
        idx[i, :len(row) - 1] = torch.tensor(row[:-1])
        targets[i, len(row) - 1 - k:len(row) - 1] = torch.tensor(row[-k:])
    return idx.to(device), targets.to(device)


@torch.no_grad()
def score_items(model, items, ctx, device, rank=0, world_size=1, progress=False):
    """ (n_correct, n_correct_norm, n) over items[rank::world_size], items from tokenize_items; one
    forward per item. Under DDP or FSDP each rank scores its share and the caller all-reduces the three counts. """
    check_model(model)
    from tqdm import tqdm
    was_training = model.training
    model.eval()
    n_correct = n_correct_norm = n = 0
    shard = items[rank::world_size]
    # as many forwards on every rank, as FSDP's are collective (they gather the weights): a shorter shard
    # scores an item once more, uncounted
    padded = shard + items[:1] * (-(-len(items) // world_size) - len(shard))
    for i, item in enumerate(tqdm(padded, desc='hellaswag', unit='item', disable=not progress)):
        idx, targets = render(item, model.config.block_size, device)
        with ctx:
            logits, _ = model(idx, targets)  # with targets the model returns every position's logits
        losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction='none',
                                 ignore_index=-1).view(4, -1)  # (4, T), 0 where not scored
        sum_loss = losses.sum(1)  # (4,)
        mean_loss = sum_loss / (targets != -1).sum(1)  # (4,)
        if i < len(shard):  # not the padding
            label = item[2]
            n_correct += int(sum_loss.argmin().item() == label)
            n_correct_norm += int(mean_loss.argmin().item() == label)
            n += 1
    model.train(was_training)
    return n_correct, n_correct_norm, n


def n_cropped(items, block_size):
    """ How many items have a row too long for block_size (scored with their context cropped). """
    return sum(any(len(ctx) + len(e) > block_size + 1 for e in endings) for ctx, endings, _ in items)
