"""data/instruct/prepare.py, run as a user runs it: local JSON and JSONL files of Alpaca and chat records become ids
and a reply mask side by side (characters, a trained BPE, GPT-2's BPE), with the tokenizer beside them so train.py
and load_tokenizer read them back (records may hold raw U+2028/U+2029/U+0085, files a byte-order mark); bad input
is one line each (a line that is not JSON, by number; a record of neither shape; an empty reply; no hub offline,
naming --data_files); too-long conversations are skipped and counted, as are records with characters outside a
character vocabulary; train.py at a shorter block_size leaves out the rows that hold no reply."""

import json
import os
import re

import numpy as np

from chat_template import BOUNDARY, conversation_starts, read_records
from conftest import (copy_prepare, error_line, make_char_dataset, run_script, run_train, step_losses, tiny_text,
                      tiny_train_args, write_jsonl)
from data_io import read_meta
from tokenizer import BPE_FILE, load_tokenizer, train_bpe

ALPACA = [{'instruction': 'spell king', 'input': '', 'output': 'k i n g'},
          {'instruction': 'say it loud', 'input': 'the king', 'output': 'THE KING'}]
CHATS = [{'messages': [{'role': 'system', 'content': 'be brief'}, {'role': 'user', 'content': 'who is there'},
                       {'role': 'assistant', 'content': 'the king'}, {'role': 'user', 'content': 'and'},
                       {'role': 'assistant', 'content': 'his men'}]},
         {'messages': [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'good night'}]}]


def setup_repo(tmp_path):
    """ The script and what it imports copied under tmp_path (it writes to data/instruct/ beside itself),
    with a character dataset data/tiny_char to take the tokenizer from. """
    copy_prepare(tmp_path, 'instruct')
    make_char_dataset(tmp_path / 'data' / 'tiny_char', tiny_text() + '\n!')
    return tmp_path


def prepare(repo, *args, check=True):
    return run_script(repo / 'data' / 'instruct' / 'prepare.py', *args, cwd=repo, check=check)


def replies(data_dir, split):
    """ The masked tokens of a split, decoded: the assistant replies, each ending in <|assistant_end|>. """
    tok = load_tokenizer(str(data_dir))
    ids = np.fromfile(data_dir / f'{split}.bin', dtype=np.uint16)
    mask = np.fromfile(data_dir / f'{split}_mask.bin', dtype=np.uint8)
    assert len(ids) == len(mask) and ids[0] == tok.special_id(BOUNDARY)
    return sorted(tok.decode(ids[mask == 1].tolist()).split('<|assistant_end|>')[:-1]), tok


def test_records_may_hold_unicode_line_separators_and_a_byte_order_mark(tmp_path):
    """ JSON strings may hold U+2028, U+2029 and U+0085 raw (json.dumps(ensure_ascii=False) writes them so): a JSONL
    line ends at '\\n' only (a '\\r' before it too); a UTF-8 byte-order mark (Notepad's) is no part of the records. """
    records = [{'instruction': 'a\u2028b', 'output': 'c\u2029d'}, {'instruction': 'e\x85f', 'output': 'g'}]
    (tmp_path / 'r.jsonl').write_text('\ufeff' + ''.join(json.dumps(r, ensure_ascii=False) + '\r\n' for r in records),
                                      encoding='utf-8')
    assert read_records(tmp_path / 'r.jsonl') == records
    (tmp_path / 'r.json').write_text('\ufeff' + json.dumps(records, ensure_ascii=False), encoding='utf-8')
    assert read_records(tmp_path / 'r.json') == records


def test_jsonl_and_json_of_both_shapes_with_characters(tmp_path):
    repo = setup_repo(tmp_path)
    write_jsonl(repo / 'a.jsonl', ALPACA)
    (repo / 'c.json').write_text(json.dumps(CHATS))
    out = prepare(repo, '--data_files=a.jsonl,c.json', '--tokenizer=data/tiny_char', '--block_size=64',
                  '--val_fraction=0.25').stdout
    data_dir = repo / 'data' / 'instruct'
    train, tok = replies(data_dir, 'train')
    val, _ = replies(data_dir, 'val')
    assert sorted(train + val) == sorted(['k i n g', 'THE KING', 'the king', 'his men', 'good night'])
    assert len(val) == 1 and 'skipped 0 longer than block_size=64' in out
    meta = read_meta(data_dir)
    assert tok.kind == 'char' and meta['vocab_size'] == meta['base_vocab_size'] + 7 == tok.vocab_size
    # Alpaca's input follows the instruction in the user's turn
    ids = np.concatenate([np.fromfile(data_dir / f'{s}.bin', dtype=np.uint16) for s in ('train', 'val')])
    assert 'say it loud\n\nthe king<|user_end|>' in tok.decode(ids.tolist())


def test_gpt2_and_trained_bpe_bases(tmp_path, gpt2):
    repo = setup_repo(tmp_path)
    write_jsonl(repo / 'a.jsonl', ALPACA + CHATS)
    prepare(repo, '--data_files=a.jsonl', '--val_fraction=0.25')
    train, tok = replies(repo / 'data' / 'instruct', 'train')
    assert tok.kind == 'gpt2' and tok.vocab_size == 50257 + 6 and len(train) == 4
    bpe_dir = repo / 'data' / 'tiny_bpe'
    bpe_dir.mkdir()
    train_bpe([tiny_text()], 400).save(str(bpe_dir / BPE_FILE))
    prepare(repo, '--data_files=a.jsonl', '--tokenizer=data/tiny_bpe', '--out_dataset=sft_bpe', '--val_fraction=0.25')
    train, tok = replies(repo / 'data' / 'sft_bpe', 'train')
    assert tok.kind == 'bpe' and (repo / 'data' / 'sft_bpe' / BPE_FILE).exists() and len(train) == 4
    # prepared again into that folder on GPT-2's BPE: the earlier run's bpe.json must not read the new ids
    prepare(repo, '--data_files=a.jsonl', '--out_dataset=sft_bpe', '--val_fraction=0.25')
    train, tok = replies(repo / 'data' / 'sft_bpe', 'train')
    assert tok.kind == 'gpt2' and not (repo / 'data' / 'sft_bpe' / BPE_FILE).exists() and len(train) == 4


def test_every_conversation_starts_a_row_and_a_one_conversation_val_split_trains(tmp_path):
    """ block_size masked filler tokens end each split: a row fits from every conversation's boundary, the last
    ones' too, and a split shorter than a row (one conversation of val) still trains at that block_size. """
    repo = setup_repo(tmp_path)
    write_jsonl(repo / 'a.jsonl', ALPACA * 4)
    prepare(repo, '--data_files=a.jsonl', '--tokenizer=data/tiny_char', '--block_size=64', '--val_fraction=0.1')
    data_dir = repo / 'data' / 'instruct'
    bos = read_meta(data_dir)['bos_id']
    for split, n_conversations in (('train', 7), ('val', 1)):
        tokens = np.fromfile(data_dir / f'{split}.bin', dtype=np.uint16)
        mask = np.fromfile(data_dir / f'{split}_mask.bin', dtype=np.uint8)
        assert not mask[-64:].any() and bos not in tokens[-64:]
        starts = conversation_starts(tokens, bos, 64)
        assert np.array_equal(starts, np.flatnonzero(tokens == bos)) and len(starts) == n_conversations
    p = run_train(repo, *tiny_train_args(dataset='instruct', block_size=64, max_iters=2, eval_interval=2))
    assert sorted(step_losses(p.stdout)) == [0, 2]


def test_rows_without_a_reply_target_are_not_drawn(tmp_path):
    """ train.py at a block_size shorter than some prompts: a row from such a conversation's start holds no
    reply among its targets and has no loss (a batch of them only, a NaN loss blamed on divergence). Those
    rows are left out, with a note; where no row has a reply, one line says to raise block_size. """
    repo = setup_repo(tmp_path)
    long = {'instruction': 'the king ' * 6, 'input': '', 'output': 'no'}
    write_jsonl(repo / 'a.jsonl', [ALPACA[0], long] * 8)
    prepare(repo, '--data_files=a.jsonl', '--tokenizer=data/tiny_char', '--block_size=64', '--val_fraction=0.25')
    p = run_train(repo, *tiny_train_args(dataset='instruct', block_size=20, batch_size=16, max_iters=2,
                                         eval_interval=2))
    notes = re.findall(r'^note: (\d+) of the (\d+) conversations of (train|val) have no reply within block_size=20', p.stdout, re.M)
    assert sorted(split for _, _, split in notes) == ['train', 'val']  # the 8 long prompts of the 16, in both splits
    assert (sum(int(a) for a, _, _ in notes), sum(int(b) for _, b, _ in notes)) == (8, 16)
    assert sorted(step_losses(p.stdout)) == [0, 2]
    error_line(run_train(repo, *tiny_train_args(dataset='instruct', block_size=8, max_iters=2), check=False),
               'no conversation of train has a reply within block_size=8: raise --block_size')


def test_too_long_conversations_are_skipped_and_counted(tmp_path):
    repo = setup_repo(tmp_path)
    write_jsonl(repo / 'a.jsonl', ALPACA * 3 + [{'instruction': 'the king ' * 20, 'output': 'no'}])
    out = prepare(repo, '--data_files=a.jsonl', '--tokenizer=data/tiny_char', '--block_size=40',
                  '--val_fraction=0.5').stdout
    assert sorted(re.findall(r'skipped (\d+) longer than block_size=40', out)) == ['0', '1']
    train, _ = replies(repo / 'data' / 'instruct', 'train')
    val, _ = replies(repo / 'data' / 'instruct', 'val')
    assert 'no' not in train + val and len(train + val) == 6


def test_bad_input_is_one_line_each(tmp_path):
    repo = setup_repo(tmp_path)
    (repo / 'bad.jsonl').write_text(json.dumps(ALPACA[0]) + '\n\n{"instruction": oops}\n')
    error_line(prepare(repo, '--data_files=bad.jsonl', check=False), 'bad.jsonl line 3 is not JSON')
    write_jsonl(repo / 'shape.jsonl', ALPACA + [{'prompt': 'x', 'completion': 'y'}])
    error_line(prepare(repo, '--data_files=shape.jsonl', check=False), "record 3 of shape.jsonl: it has neither")
    write_jsonl(repo / 'empty.jsonl', CHATS + [{'instruction': 'spell', 'output': '  '}])
    error_line(prepare(repo, '--data_files=empty.jsonl', check=False), 'assistant reply of turn 1 is empty')
    write_jsonl(repo / 'null.jsonl', ALPACA + [{'instruction': 'spell', 'output': None}])  # not the text 'None'
    error_line(prepare(repo, '--data_files=null.jsonl', check=False), "record 3 of null.jsonl: its 'instruction' or 'output' is null")
    (repo / 'latin1.jsonl').write_bytes('{"instruction": "spell König", "output": "K"}\n'.encode('latin-1'))
    error_line(prepare(repo, '--data_files=latin1.jsonl', check=False), 'latin1.jsonl is not UTF-8 text')
    error_line(prepare(repo, '--data_files=missing.jsonl', check=False), 'no file matches')
    error_line(prepare(repo, '--data_files=a.jsonl', '--tokenizer=data/nothing', check=False), 'prepare that dataset')
    error_line(prepare(repo, '--data_files=a.jsonl', '--seed=-1', check=False), 'seed must be >= 0, got -1')
    # another prepare.py's dataset (here the tokenizer's own) is not written over
    before = {f: (repo / 'data' / 'tiny_char' / f).read_bytes() for f in os.listdir(repo / 'data' / 'tiny_char')}
    write_jsonl(repo / 'a.jsonl', ALPACA)
    error_line(prepare(repo, '--data_files=a.jsonl', '--tokenizer=data/tiny_char', '--out_dataset=tiny_char',
                       check=False), "data/tiny_char holds a dataset that is not instruction data")
    assert {f: (repo / 'data' / 'tiny_char' / f).read_bytes() for f in os.listdir(repo / 'data' / 'tiny_char')} == before
    # offline (conftest sets HF_HUB_OFFLINE), the hub fails at once and names the local alternative
    error_line(prepare(repo, '--dataset=yahma/alpaca-cleaned', check=False), '--data_files=<file.jsonl>')
    assert not (repo / 'data' / 'instruct' / 'train.bin').exists()


def test_the_offline_demo_holds_its_eval_words_out_of_training(tmp_path):
    repo = setup_repo(tmp_path)
    letters = 'abcdefghijklmnopqrstuvwxyz'
    make_char_dataset(repo / 'data' / 'base', tiny_text() + f"\n{letters} {letters.upper()} - ")
    data_dir = copy_prepare(repo, 'instruct_demo')
    run_script(data_dir / 'prepare.py', '--base_dataset=base', '--heldout_words=4', cwd=repo)
    held = [json.loads(line) for line in (data_dir / 'heldout.jsonl').read_text().splitlines()]
    assert len(held) == 4 * 5 and {r['task'] for r in held} == {'spell', 'reverse', 'uppercase', 'first', 'last'}
    spell = {r['messages'][0]['content'].split()[-1]: r['messages'][1]['content'] for r in held if r['task'] == 'spell'}
    assert all(answer == '-'.join(word) for word, answer in spell.items())
    tok = load_tokenizer(str(data_dir))
    train = tok.decode(np.fromfile(data_dir / 'train.bin', dtype=np.uint16).tolist())
    val = tok.decode(np.fromfile(data_dir / 'val.bin', dtype=np.uint16).tolist())
    for word in spell:
        assert f"spell {word}<" in val and f" {word}<" not in train
    error_line(run_script(data_dir / 'prepare.py', '--base_dataset=tiny_char', cwd=repo, check=False),
               'lacks the characters')
    error_line(run_script(data_dir / 'prepare.py', '--base_dataset=typo', cwd=repo, check=False),
               'data/typo has no meta.pkl: run python data/typo/prepare.py first')
    for bad in ('--heldout_words=0', '--heldout_words=-3'):  # -3 would hold out all words but 3
        error_line(run_script(data_dir / 'prepare.py', '--base_dataset=base', bad, cwd=repo, check=False),
                   'at least 1 held-out word')
    error_line(run_script(data_dir / 'prepare.py', '--base_dataset=base', '--seed=-1', cwd=repo, check=False),
               'seed must be >= 0, got -1')


def test_records_with_characters_outside_the_vocabulary_are_skipped_and_counted(tmp_path):
    repo = setup_repo(tmp_path)
    # 'é' is not in tiny_text, nor are the characters of a special token's name typed in a reply (text, not a token)
    write_jsonl(repo / 'a.jsonl', ALPACA * 2 + [{'instruction': 'say café', 'output': 'no'},
                                                {'instruction': 'end it', 'output': 'no<|assistant_end|>'}])
    out = prepare(repo, '--data_files=a.jsonl', '--tokenizer=data/tiny_char', '--val_fraction=0.5').stdout
    assert sum(map(int, re.findall(r'(\d+) with characters outside the base vocabulary', out))) == 2
    train, _ = replies(repo / 'data' / 'instruct', 'train')
    val, _ = replies(repo / 'data' / 'instruct', 'val')
    assert sorted(train + val) == sorted(['k i n g', 'THE KING'] * 2)
