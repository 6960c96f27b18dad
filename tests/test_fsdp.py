"""FSDP2 (train.py --fsdp=True; runtime.shard_model, save_sharded_checkpoint, load_sharded_state): under
torchrun with gloo ranks on the CPU, FSDP trains what DDP and a single process train on the same batches
(with and without gradient accumulation, with LoRA and gradient checkpointing), holds 1/N of the weights
and of AdamW's moments per rank, and resumes bit for bit from its sharded checkpoint, also with another
number of ranks, or without FSDP at all; an FSDP run resumes a ckpt.pt; sample.py and export.py read its
checkpoint; a crash or a failed write mid-save leaves the previous checkpoint loadable; HellaSwag's ranks
run as many (collective) forwards; what rank 0 alone decides or does (a diverged loss, a failed write, the
HellaSwag download, wandb) stops every rank with its one line, and so does another rank's exit; a rank ends without the interpreter's finalization, where gloo's threads
can abort it; bad input is a one-line error.

What 'the same batches' means: train.py draws rank r's micro-batch k of iteration i from (seed, r, i, k)
alone, so two runs see the same batches when they have the same seed, number of ranks and micro-steps per
rank. A 2-rank FSDP run is therefore compared with a 2-rank DDP run (whose averaged gradient is a single
process's on the union of both ranks' batches), and a 1-rank FSDP run with a plain single process; a run
resumed with another number of ranks is compared with a DDP or plain run resumed from the same checkpoint.
The logged loss is rank 0's mean over its micro-batches, as with DDP."""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from conftest import (ROOT, all_logits, closed_port_url, error_line, free_port, make_char_dataset, run_script, run_train,
                      tiny_train_args)
from runtime import checkpoint_path, load_checkpoint

TINY = tiny_train_args(gradient_accumulation_steps=None, dropout=0.1)  # the runs set their own accumulation
ACCUMULATE = ['--gradient_accumulation_steps=4', '--eval_interval=3']  # 2 micro-steps per rank on 2 ranks
TOL = 1e-5  # fp32, FSDP against DDP or a single process: sums in another order may round differently

# Several train.py runs in one process: torchrun and the imports cost seconds per launch, a tiny run much
# less. Per run and rank it writes name.rankR.json: the loss of each `iter` line and the losses of each
# `step` line at full precision (train.py prints 4 decimals) and the numbers of elements in this rank's
# shards of the weights and of AdamW's moments.
DRIVER = f"""
import builtins, json, os, runpy, sys
import torch.distributed as dist
from torch.distributed.tensor import DTensor

# one process group for all the runs: one destroyed and made again would meet the first one's keys in
# torchrun's store
init_process_group, destroy_process_group = dist.init_process_group, dist.destroy_process_group
dist.init_process_group = lambda *a, **kw: None if dist.is_initialized() else init_process_group(*a, **kw)
dist.destroy_process_group = lambda *a, **kw: None
TRAIN = {str(ROOT / 'train.py')!r}
sys.path.insert(0, {str(ROOT)!r})
import runtime
launch_env = dict(os.environ)
for name, env, args in json.load(open(sys.argv[1])):
    os.environ.clear()  # env: the run's changes, None unsets (a run without torchrun's variables is no DDP run)
    os.environ.update({{k: v for k, v in {{**launch_env, **env}}.items() if v is not None}})
    record = {{'iters': {{}}, 'steps': {{}}}}

    def recorder(*a, **kw):  # train.py's print
        scope = sys._getframe(1).f_globals
        if a and str(a[0]).startswith('iter '):
            record['iters'][scope['iter_num']] = scope['lossf']
        if a and str(a[0]).startswith('step '):
            record['steps'][scope['iter_num']] = scope['losses']
        builtins.print(*a, **kw)
    if launch_env['RANK'] == '0':
        print(f"=== {{name}}", flush=True)
    sys.argv = [TRAIN, *args]
    scope = runpy.run_path(TRAIN, init_globals={{'print': recorder}}, run_name='__main__')
    local = lambda t: t.to_local() if isinstance(t, DTensor) else t
    record['params'] = sum(local(p).numel() for p in scope['raw_model'].parameters())
    record['whole'] = sum(p.numel() for p in scope['raw_model'].parameters())
    record['moments'] = sum(local(v).numel() for s in scope['optimizer'].state.values() for k, v in s.items()
                            if k != 'step')
    with open(f"{{name}}.rank{{launch_env['RANK']}}.json", 'w') as f:
        json.dump(record, f)
if dist.is_initialized():  # as train.py ends
    dist.destroy_process_group = destroy_process_group
    runtime.leave_process_group()
"""
PLAIN = {'RANK': None, 'LOCAL_RANK': None, 'WORLD_SIZE': None}  # a single process, not a DDP run


def launch(cwd, nproc, runs):
    """ The runs [(name, env, args)] in one torchrun launch of nproc gloo ranks; its stdout. """
    (cwd / 'runs.json').write_text(json.dumps(runs))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', 'driver.py',
           'runs.json']
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """ Three torchrun launches: {name: (rank 0's record, rank 1's or None, rank 0's stdout)}. """
    cwd = tmp_path_factory.mktemp('fsdp')
    make_char_dataset(cwd / 'data' / 'tiny_char')
    (cwd / 'driver.py').write_text(DRIVER)
    lora = ['--gradient_accumulation_steps=2', '--eval_interval=4', '--max_iters=4', '--lora_rank=4',
            '--gradient_checkpointing=True']  # one micro-step per rank: no accumulation
    out = launch(cwd, 2, [
        ('ddp', {}, [*TINY, *ACCUMULATE, '--max_iters=6', '--out_dir=ddp']),
        ('fsdp', {}, [*TINY, *ACCUMULATE, '--max_iters=6', '--out_dir=fsdp', '--fsdp=True']),
        ('fsdp_half', {}, [*TINY, *ACCUMULATE, '--max_iters=3', '--out_dir=half', '--fsdp=True']),
        ('fsdp_fp16', {}, [*TINY, *ACCUMULATE, '--max_iters=3', '--out_dir=fp16', '--fsdp=True', '--dtype=float16']),
        ('ddp_lora', {}, [*TINY, *lora, '--out_dir=ddp_lora']),
        ('fsdp_lora', {}, [*TINY, *lora, '--out_dir=fsdp_lora', '--fsdp=True'])])
    for copy in ('half_to2', 'half_to1', 'half_plain'):
        shutil.copytree(cwd / 'half', cwd / copy)
    shutil.copytree(cwd / 'fp16', cwd / 'fp16_resumed')
    out += launch(cwd, 1, [
        ('single', PLAIN, [*TINY, *ACCUMULATE, '--max_iters=3', '--out_dir=single']),
        ('fsdp1', {}, [*TINY, *ACCUMULATE, '--max_iters=3', '--out_dir=fsdp1', '--fsdp=True']),
        ('plain_from2', PLAIN, [*TINY, *ACCUMULATE, '--max_iters=6', '--out_dir=half_plain', '--init_from=resume']),
        ('fsdp1_from2', {}, [*TINY, *ACCUMULATE, '--max_iters=6', '--out_dir=half_to1', '--init_from=resume',
                             '--fsdp=True'])])
    for copy in ('fsdp1_to2', 'fsdp1_ddp'):
        shutil.copytree(cwd / 'fsdp1', cwd / copy)
    shutil.copytree(cwd / 'single', cwd / 'single_to_fsdp')
    out += launch(cwd, 2, [
        ('fsdp_resumed', {}, [*TINY, *ACCUMULATE, '--max_iters=6', '--out_dir=half_to2', '--init_from=resume',
                              '--fsdp=True']),
        ('fsdp_from1', {}, [*TINY, *ACCUMULATE, '--max_iters=6', '--out_dir=fsdp1_to2', '--init_from=resume',
                            '--fsdp=True']),
        ('ddp_from1', {}, [*TINY, *ACCUMULATE, '--max_iters=6', '--out_dir=fsdp1_ddp', '--init_from=resume']),
        ('fsdp_from_pt', {}, [*TINY, *ACCUMULATE, '--max_iters=6', '--out_dir=single_to_fsdp', '--init_from=resume',
                              '--fsdp=True']),
        ('fp16_resumed', {}, [*TINY, *ACCUMULATE, '--max_iters=4', '--out_dir=fp16_resumed', '--init_from=resume',
                              '--fsdp=True', '--dtype=float16'])])
    sections = dict(section.split('\n', 1) for section in out.split('=== ')[1:])
    records = {}
    for name in sections:
        rank = [json.loads((cwd / f'{name}.rank{r}.json').read_text()) if (cwd / f'{name}.rank{r}.json').exists()
                else None for r in (0, 1)]
        records[name] = (*rank, sections[name])
    records['cwd'] = cwd
    return records


def close(a, b, tol=TOL):
    """ Two runs' losses: the same iterations and evaluations, each within tol. """
    assert a['iters'].keys() == b['iters'].keys() and a['steps'].keys() == b['steps'].keys()
    for i in a['iters']:
        assert abs(a['iters'][i] - b['iters'][i]) <= tol, (i, a['iters'][i], b['iters'][i])
    for i in a['steps']:
        for split in ('train', 'val'):
            assert abs(a['steps'][i][split] - b['steps'][i][split]) <= tol, (i, split, a['steps'][i], b['steps'][i])


def weights(path):
    """ A checkpoint read whole into this process, a ckpt.pt or a ckpt.dcp alike. """
    return load_checkpoint(checkpoint_path(path))[1]


@pytest.mark.slow
def test_fsdp_trains_what_ddp_trains(runs):
    ddp, fsdp = runs['ddp'][0], runs['fsdp'][0]
    assert sorted(map(int, fsdp['iters'])) == list(range(6)) and sorted(map(int, fsdp['steps'])) == [0, 3, 6]
    close(ddp, fsdp)  # with accumulation: 2 micro-steps per rank, one reduce-scatter
    close(runs['ddp_lora'][0], runs['fsdp_lora'][0])  # LoRA, gradient checkpointing, one micro-step per rank
    assert 'tokens per iteration will be: 512' in runs['fsdp'][2]
    a, b = weights(runs['cwd'] / 'ddp'), weights(runs['cwd'] / 'fsdp')
    assert a['model'].keys() == b['model'].keys()
    for k in a['model']:
        assert torch.allclose(a['model'][k], b['model'][k], atol=TOL, rtol=0), k
    # the optimizer state, read back keyed by index as torch.optim writes it, is DDP's
    assert [g['params'] for g in a['optimizer']['param_groups']] == [g['params'] for g in b['optimizer']['param_groups']]
    for i, state in a['optimizer']['state'].items():
        for k in ('exp_avg', 'exp_avg_sq', 'step'):
            assert torch.allclose(state[k], b['optimizer']['state'][i][k], atol=TOL, rtol=0), (i, k)
    lora = weights(runs['cwd'] / 'fsdp_lora')
    assert lora['lora'] == dict(rank=4, alpha=16.0, dropout=0.0, targets=('attn.c_attn', 'attn.c_proj'))
    assert lora['model']['transformer.h.0.attn.c_attn.lora_B'].abs().sum() > 0


@pytest.mark.slow
def test_one_rank_fsdp_trains_what_a_single_process_trains(runs):
    close(runs['single'][0], runs['fsdp1'][0])
    assert 'model state per rank: 0.42 MiB (DDP would hold 0.42 MiB)' in runs['fsdp1'][2]


@pytest.mark.slow
def test_resume_is_bit_exact(runs):
    """ The same ranks, seeds and batches, and fp32 tensors that go through torch.distributed.checkpoint
    unchanged: the resumed run computes the same numbers, in the same order, as the uninterrupted one. """
    straight, half, resumed = runs['fsdp'][0], runs['fsdp_half'][0], runs['fsdp_resumed'][0]
    assert sorted(map(int, half['iters'])) == [0, 1, 2] and sorted(map(int, resumed['iters'])) == [3, 4, 5]
    assert {**half['iters'], **resumed['iters']} == straight['iters']
    assert resumed['steps']['6'] == straight['steps']['6']
    a, b = weights(runs['cwd'] / 'fsdp'), weights(runs['cwd'] / 'half_to2')
    assert a['iter_num'] == b['iter_num'] == 6
    for k in a['model']:
        assert torch.equal(a['model'][k], b['model'][k]), k
    for i, state in a['optimizer']['state'].items():
        for k, v in state.items():
            assert torch.equal(v, b['optimizer']['state'][i][k]), (i, k)


@pytest.mark.slow
def test_resume_with_another_number_of_ranks(runs):
    # 2 -> 1: the evaluation at the resumed iteration is the saving run's (the weights came back whole), and
    # training goes on exactly as a single process resumed from the same checkpoint without FSDP
    two_to_one, plain = runs['fsdp1_from2'][0], runs['plain_from2'][0]
    assert two_to_one['steps']['3'] == runs['fsdp'][0]['steps']['3']
    assert sorted(map(int, two_to_one['iters'])) == [3, 4, 5]
    close(two_to_one, plain)
    # 1 -> 2: as DDP resumed from the same FSDP checkpoint, and as FSDP resumed from a single process's
    # ckpt.pt at the same iteration (which trained as the 1-rank FSDP run did)
    one_to_two = runs['fsdp_from1'][0]
    assert sorted(map(int, one_to_two['iters'])) == [3, 4, 5]
    close(one_to_two, runs['ddp_from1'][0])
    close(one_to_two, runs['fsdp_from_pt'][0])
    # each run's out_dir holds its newest checkpoint only, in its own format
    cwd = runs['cwd']
    assert os.listdir(cwd / 'half_plain') == ['ckpt.pt'] and os.listdir(cwd / 'fsdp1_ddp') == ['ckpt.pt']
    assert os.listdir(cwd / 'half_to1') == ['ckpt.dcp'] and os.listdir(cwd / 'single_to_fsdp') == ['ckpt.dcp']


@pytest.mark.slow
def test_each_rank_holds_half(runs):
    rank0, rank1, out = runs['fsdp']
    line = next(line for line in out.splitlines() if line.startswith('model state per rank'))
    assert line == ('model state per rank: 0.21 MiB (DDP would hold 0.42 MiB); accumulating 2 micro-steps adds '
                    '0.10 MiB of unsharded gradients')  # 27,456 parameters: 16 bytes each on 2 ranks, 4 whole
    assert 'model state per rank: 0.06 MiB (DDP would hold 0.13 MiB)\n' in runs['fsdp_lora'][2]  # no accumulation
    whole = rank0['whole']
    assert rank0['params'] + rank1['params'] == whole  # every element on exactly one rank
    for rank in (rank0, rank1):  # dim 0 split in two: at most half a row more than half
        assert abs(rank['params'] - whole / 2) <= 32 and rank['moments'] == 2 * rank['params']
    assert runs['ddp'][0]['params'] == whole and runs['ddp'][0]['moments'] == 2 * whole
    # with LoRA the frozen base is sharded too, and the moments are the adapters' only
    lora0, lora1, _ = runs['fsdp_lora']
    assert lora0['params'] + lora1['params'] == lora0['whole'] and lora0['params'] < 0.51 * lora0['whole']
    assert lora0['moments'] + lora1['moments'] == 2 * 2 * (4 * 32 + 96 * 4 + 4 * 32 + 32 * 4)  # 2 moments, 2 blocks


@pytest.mark.slow
def test_float16_under_fsdp(runs):
    """ float16 (GPUs without bf16) trains with FSDP's gradient scaler, which skips a step on all ranks when
    any of them finds an inf in its shards; its loss scale goes into the checkpoint and comes back. """
    fp16, fp32 = runs['fsdp_fp16'][0], runs['fsdp'][0]
    assert sorted(map(int, fp16['iters'])) == [0, 1, 2]
    for i, loss in fp16['iters'].items():
        assert abs(loss - fp32['iters'][i]) < 2e-3, (i, loss, fp32['iters'][i])  # fp16 matmuls round coarsely
    scaler = weights(runs['cwd'] / 'fp16')['scaler']
    assert scaler['scale'] > 1 and set(scaler) >= {'scale', 'growth_factor', '_growth_tracker'}
    assert sorted(map(int, runs['fp16_resumed'][0]['iters'])) == [3]


@pytest.mark.slow
def test_checkpoint_layout(runs):
    cwd = runs['cwd']
    assert os.listdir(cwd / 'fsdp') == ['ckpt.dcp']  # no temporary or old folder left
    assert sorted(os.listdir(cwd / 'fsdp' / 'ckpt.dcp')) == ['.metadata', '__0_0.distcp', '__1_0.distcp']
    a, b = weights(cwd / 'ddp'), weights(cwd / 'fsdp')
    assert set(a) == set(b) == {'model', 'optimizer', 'model_args', 'model_extra', 'iter_num', 'best_val_loss',
                                'config', 'lora', 'quantize', 'scaler'}
    assert a['model_args'] == b['model_args'] and a['model_extra'] == b['model_extra']
    assert a['iter_num'] == b['iter_num'] == 6
    assert b['lora'] is None and b['quantize'] is None
    assert abs(a['best_val_loss'] - b['best_val_loss']) <= TOL
    assert b['config']['fsdp'] is True and b['config']['dataset'] == 'tiny_char'
    assert {k: v for k, v in a['config'].items() if k not in ('fsdp', 'out_dir')} == \
        {k: v for k, v in b['config'].items() if k not in ('fsdp', 'out_dir')}


@pytest.mark.slow
def test_sample_and_export_read_an_fsdp_checkpoint(runs):
    cwd = runs['cwd']
    p = run_script('sample.py', '--out_dir=fsdp', '--device=cpu', '--num_samples=2', '--max_new_tokens=20',
                   '--start=ROMEO:', cwd=cwd)
    assert 'loading the train.py checkpoint fsdp/ckpt.dcp' in p.stdout and p.stdout.count('\n---------------\n') == 2
    run_script('export.py', '--out_dir=fsdp', '--to=hf', cwd=cwd)
    from transformers import GPT2LMHeadModel
    model = load_checkpoint(checkpoint_path(cwd / 'fsdp'))[0].eval()
    idx = torch.randint(model.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hf = GPT2LMHeadModel.from_pretrained(cwd / 'hf').eval()(idx).logits
    assert torch.allclose(hf, all_logits(model, idx), atol=1e-4)


# a 1-rank FSDP model saved as the test's argv asks: 'ok', or dying in the middle (SIGKILL, as a crash or a
# killed job would), or writing into a file size limit (as a full disk would)
SAVE = f"""
import datetime, os, resource, signal, sys
sys.path.insert(0, {str(ROOT)!r})
import torch, torch.distributed as dist
import runtime
from model import GPT, GPTConfig
runtime.errors_as_one_line()
runtime.join_process_group('gloo', timeout=datetime.timedelta(seconds=60))
torch.manual_seed(0)
config = GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=1, n_embd=8)
model = runtime.shard_model(GPT(config), 'cpu', torch.float32, dist.get_world_size())
optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu', verbose=False)
iter_num, how = int(sys.argv[1]), sys.argv[2]
die = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
if how == 'die_writing':  # after the first file of the new checkpoint reached the disk
    os.fsync = die
if how == 'die_renaming':  # after the old checkpoint was moved aside, before the new one took its name
    rename = os.rename
    os.rename = lambda a, b: (rename(a, b), str(b).endswith('ckpt.dcp.old') and die())
if how == 'rank0_cannot_rename' and dist.get_rank() == 0:  # the new checkpoint, once dcp.save wrote it whole
    rename = os.rename
    os.rename = lambda a, b: rename(a, b) if not str(b).endswith('ckpt.dcp') else os.close(-1)
if how == 'disk_full':
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
checkpoint = dict(model_args=config.__dict__, iter_num=iter_num, best_val_loss=1.0, config={{}}, lora=None, scaler={{}})
runtime.save_sharded_checkpoint(checkpoint, model, optimizer, 'out')
runtime.leave_process_group()  # as train.py ends
"""


def rank_error_line(p, phrase):
    """ error_line for a process in a process group, whose excepthook torch prefixes with its rank. """
    p.stderr = re.sub(r'\[rank\d\]: ', '', p.stderr)
    return error_line(p, phrase)


def one_rank_env():
    """ What torchrun --nproc_per_node=1 sets for its process. """
    return {'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '1', 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(free_port()),
            'OMP_NUM_THREADS': '1'}


@pytest.mark.slow
def test_a_save_cut_off_leaves_the_previous_checkpoint(tmp_path):
    (tmp_path / 'save.py').write_text(SAVE)

    def save(iter_num, how='ok'):
        return subprocess.run([sys.executable, 'save.py', str(iter_num), how], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env={**os.environ, **one_rank_env()})

    def saved_iter():
        return load_checkpoint(checkpoint_path(tmp_path / 'out'))[1]['iter_num']

    assert save(1).returncode == 0 and saved_iter() == 1
    assert save(2, 'die_writing').returncode == -signal.SIGKILL
    assert sorted(os.listdir(tmp_path / 'out')) == ['ckpt.dcp', 'ckpt.dcp.tmp'] and saved_iter() == 1
    assert save(3, 'die_renaming').returncode == -signal.SIGKILL
    assert sorted(os.listdir(tmp_path / 'out')) == ['ckpt.dcp.old', 'ckpt.dcp.tmp'] and saved_iter() == 1
    p = save(4, 'disk_full')
    assert 'the previous checkpoint there, if any, is intact' in rank_error_line(p, "could not write the checkpoint to out")
    assert os.listdir(tmp_path / 'out') == ['ckpt.dcp.old'] and saved_iter() == 1
    assert save(5).returncode == 0 and saved_iter() == 5
    assert os.listdir(tmp_path / 'out') == ['ckpt.dcp']


@pytest.mark.slow
def test_a_rename_failing_on_rank0_stops_every_rank(tmp_path):
    """ Only rank 0 renames the new checkpoint into place: when that fails, rank 1 stops with the same error
    instead of going on to a collective that rank 0 never joins. """
    (tmp_path / 'save.py').write_text(SAVE)
    for p in ranks(tmp_path, 'save.py', '1', 'rank0_cannot_rename'):
        assert 'Bad file descriptor' in rank_error_line(p, "could not write the checkpoint to out")
    assert not os.path.exists(tmp_path / 'out' / 'ckpt.dcp.tmp')


def ranks(cwd, *argv, env=None, **popen):
    """ `python *argv` as two ranks of a process group, as torchrun starts them, each with its own stdout and
    stderr: [rank 0's, rank 1's] finished Popen, like CompletedProcess. """
    env = {**os.environ, **one_rank_env(), 'WORLD_SIZE': '2', 'PYTHONUNBUFFERED': '1', **(env or {})}
    procs = [subprocess.Popen([sys.executable, *map(str, argv)], cwd=cwd, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env={**env, 'RANK': str(rank), 'LOCAL_RANK': str(rank)}, **popen)
             for rank in (0, 1)]
    for p in procs:
        p.stdout, p.stderr = p.communicate(timeout=300)
    return procs


def two_ranks(cwd, *args, **popen):
    """ train.py's two ranks (ranks) on TINY with args. """
    return ranks(cwd, ROOT / 'train.py', *TINY, '--gradient_accumulation_steps=2', *args, **popen)


@pytest.mark.slow
def test_what_rank0_decides_stops_every_rank(tmp_path):
    """ Under DDP, rank 0's losses decide whether training diverged, and rank 0 alone writes ckpt.pt: when it
    stops, every rank stops with its one line, instead of going on to a collective that rank 0 never joins (a
    traceback of gloo's; under NCCL a wait for ever). """
    make_char_dataset(tmp_path / 'data' / 'tiny_char')
    (tmp_path / 'a_file').write_text('')
    cases = {  # phrase: the run's settings
        "cannot write to out_dir 'a_file/out'": ['--out_dir=a_file/out'],
        "the loss is nan at iter 1: training diverged": ['--learning_rate=1e30', '--grad_clip=0.0', '--max_iters=40',
                                                         '--out_dir=diverged'],
        "the train loss is nan at iter 2: training diverged": ['--learning_rate=1e30', '--grad_clip=0.0', '--max_iters=40',
                                                               '--eval_interval=2', '--log_interval=100', '--out_dir=diverged'],
    }
    for phrase, args in cases.items():
        for p in two_ranks(tmp_path, *args):
            rank_error_line(p, phrase)
    ok = two_ranks(tmp_path, '--max_iters=2', '--eval_interval=2', '--out_dir=out')
    assert [p.returncode for p in ok] == [0, 0] and 'iter 1: loss' in ok[0].stdout and 'iter' not in ok[1].stdout
    before = (tmp_path / 'out' / 'ckpt.pt').read_bytes()
    limit = len(before) // 2  # rank 0's write of the next checkpoint fails halfway
    for p in two_ranks(tmp_path, '--init_from=resume', '--max_iters=4', '--eval_interval=2', '--out_dir=out',
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))):
        rank_error_line(p, "could not write the checkpoint to out")
    assert os.listdir(tmp_path / 'out') == ['ckpt.pt'] and (tmp_path / 'out' / 'ckpt.pt').read_bytes() == before


# wandb, as its init fails when no one is logged in
FAKE_WANDB = """
def init(**kwargs):
    raise RuntimeError("No API key configured. Use `wandb login` to log in.")
"""


@pytest.mark.slow
def test_start_up_work_of_rank0_alone(tmp_path):
    """ Rank 0 alone downloads HellaSwag and starts wandb, and prints the start-up notes: when the download or
    wandb fails, every rank stops with its one line. """
    make_char_dataset(tmp_path / 'data' / 'gpt2_ids')
    os.remove(tmp_path / 'data' / 'gpt2_ids' / 'meta.pkl')  # no meta.pkl: GPT-2's vocabulary, as openwebtext's
    procs = two_ranks(tmp_path, '--dataset=gpt2_ids', '--hellaswag_interval=2', '--n_layer=1',
                      env={'HTTPS_PROXY': closed_port_url(), 'https_proxy': closed_port_url()})
    for p in procs:
        rank_error_line(p, "could not download https://raw.githubusercontent.com")
    for line in ('defaulting to vocab_size of GPT-2', 'downloading https://'):
        assert line in procs[0].stdout and line not in procs[1].stdout
    make_char_dataset(tmp_path / 'data' / 'tiny_char')
    (tmp_path / 'wandb.py').write_text(FAKE_WANDB)
    for p in two_ranks(tmp_path, '--wandb_log=True', env={'PYTHONPATH': str(tmp_path)}):
        rank_error_line(p, "wandb could not start (No API key configured. Use `wandb login` to log in.): run `wandb "
                           "login`, or set WANDB_MODE=offline")
    (tmp_path / 'wandb.py').write_text("raise ImportError('No module named wandb')")
    error_line(run_train(tmp_path, *TINY, '--wandb_log=True', check=False, env={'PYTHONPATH': str(tmp_path)}),
               "wandb_log=True needs wandb, which is not installed: pip install wandb")


# one rank stops with an error of its own while the other waits in a collective
PEER = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import torch, torch.distributed as dist
import runtime
runtime.errors_as_one_line()
runtime.join_process_group('gloo')
if dist.get_rank() == 1:
    raise ValueError('rank 1 could not read its data')
dist.all_reduce(torch.ones(1))
"""


def test_a_rank_that_stops_stops_the_others_with_one_line(tmp_path):
    """ A rank whose collective meets another rank's exit (gloo: 'Connection closed by peer') stops with a line
    pointing at that rank's error, not with gloo's traceback. """
    (tmp_path / 'peer.py').write_text(PEER)
    rank0, rank1 = ranks(tmp_path, 'peer.py')
    rank_error_line(rank1, 'rank 1 could not read its data')
    rank_error_line(rank0, 'another process of this run stopped (its own error says why), so this one stops too')


# a rank that leaves its process group as train.py does; then, as argv asks, ends or raises
LEAVE = f"""
import atexit, sys
sys.path.insert(0, {str(ROOT)!r})
import torch, torch.distributed as dist
import runtime
runtime.join_process_group('gloo')
class Finalized:
    def __del__(self):
        print('finalized', flush=True)
finalized = Finalized()  # a module global: the interpreter's finalization deletes it
atexit.register(print, 'a later exit handler ran', flush=True)  # as wandb.init registers one
dist.all_reduce(torch.ones(1))
runtime.leave_process_group()
if sys.argv[1] == 'raise':
    raise RuntimeError('after the run')
"""


def test_leaving_the_process_group_skips_finalization(tmp_path):
    """ After leave_process_group the process ends without the interpreter's finalization, where the gloo
    worker threads that a device mesh keeps alive can abort it, but after the other exit handlers, and an
    error raised after it still exits 1. """
    (tmp_path / 'leave.py').write_text(LEAVE)
    ends = {how: subprocess.run([sys.executable, 'leave.py', how], cwd=tmp_path, capture_output=True, text=True,
                                timeout=120, env={**os.environ, **one_rank_env()}) for how in ('end', 'raise')}
    for how, p in ends.items():
        assert p.stdout == 'a later exit handler ran\n', (how, p.stdout, p.stderr)
    assert ends['end'].returncode == 0 and ends['raise'].returncode == 1
    assert 'RuntimeError: after the run' in ends['raise'].stderr


def test_hellaswag_ranks_run_as_many_forwards():
    """ Under FSDP each forward gathers the weights from all ranks: a rank with one item fewer to score
    still runs as many forwards, or the others would wait for it forever. """
    from contextlib import nullcontext

    from conftest import tiny_gpt
    from hellaswag import score_items
    model = tiny_gpt(block_size=16, vocab_size=50257, n_layer=1, n_head=1, n_embd=8)
    forwards = []
    model.register_forward_hook(lambda *a: forwards.append(1))
    items = [([1, 2, 3], [[4], [5, 6], [7], [8, 9, 10]], i % 4) for i in range(7)]
    counted = 0
    for rank in range(3):
        forwards.clear()
        n = score_items(model, items, nullcontext(), 'cpu', rank, 3)[2]
        assert len(forwards) == 3 and n == len(items[rank::3])
        counted += n
    assert counted == len(items)


def train(cwd, *args, env=None):
    return run_train(cwd, *TINY, '--max_iters=2', *args, check=False, env=env)


def test_fsdp_without_torchrun(char_workdir):
    error_line(train(char_workdir, '--fsdp=True'), "fsdp=True shards the model across the processes that torchrun "
                                                   "starts: launch it with `torchrun --standalone")


def test_fsdp_bigram(char_workdir):
    rank_error_line(train(char_workdir, '--fsdp=True', '--model_type=bigram', env=one_rank_env()),
               "a bigram model has none (it is one vocab_size x vocab_size table): train it without --fsdp")


def test_fsdp_world_size_must_divide_accumulation(char_workdir):
    # torchrun's variables for 2 processes: the check comes before any process group is made
    error_line(train(char_workdir, '--fsdp=True', '--gradient_accumulation_steps=3',
                     env={'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '2'}),
               "gradient_accumulation_steps=3 is not divisible by the 2 processes")
