"""
The set-up every script shares, in one place: the device, the precision (autocast, TF32, the
GradScaler), loading a model (a train.py checkpoint, OpenAI's GPT-2 or a local Hugging Face
directory), writing a checkpoint, joining and leaving a DDP/FSDP process group, FSDP's sharding of a
model and its sharded checkpoints (ckpt.dcp, which every loader here reads too), the peak FLOP/s that
MFU is measured against, and the one way a script fails: library code raises ValueError or OSError
with a sentence naming the problem and the fix, and errors_as_one_line() makes the script print it as
`error: ...` and exit 1.
"""

import atexit
import errno
import itertools
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from types import SimpleNamespace

import torch

from data_io import atomic_open, fsync_path, fsync_tree, hub_reachable
from model import GPT, GPT2_SIZES, GPTConfig, apply_lora, build_model
from quantize import pack, quantize
from tokenizer import TOKENIZER_FILES

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


PEER_GONE = re.compile(r'Connection (closed|reset) by peer')  # gloo's, when a collective's other process has exited


def errors_as_one_line():
    """ A ValueError or OSError that reaches the top of the script prints as one line, exit code 1 (a reader of
    stdout that has gone, none; Ctrl-C, a line saying so; under torchrun, gloo's error when another process has
    exited, a line pointing at that one's); anything else is a bug and keeps its traceback. """
    default = sys.excepthook

    def hook(kind, e, tb):
        dist = sys.modules.get('torch.distributed')
        grouped = dist is not None and dist.is_available() and dist.is_initialized()
        if grouped and issubclass(kind, RuntimeError) and PEER_GONE.search(str(e)):
            # gloo's error in a collective whose other side has exited: that process printed why
            print("error: another process of this run stopped (its own error says why), so this one stops too",
                  file=sys.stderr)
        elif issubclass(kind, BrokenPipeError) and stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode):
            # stdout's reader has gone (| head): stop quietly, as Unix tools do, the exit's flush of stdout too
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        elif issubclass(kind, (ValueError, OSError)):
            print(f"error: {first_line(e)}", file=sys.stderr)
        elif issubclass(kind, KeyboardInterrupt):  # Ctrl-C: the user knows why; Python still exits as killed by it
            print("stopped (Ctrl-C)", file=sys.stderr)
        else:
            default(kind, e, tb)
        if grouped:
            # out as leave_process_group leaves, the interpreter's finalization skipped (where gloo's threads can
            # abort it), once the error is printed (torch prints it after this hook, with the rank): exit 1
            global _left
            dist.destroy_process_group()
            _left = True
    sys.excepthook = hook


def first_line(e):
    return (str(e).strip() or type(e).__name__).splitlines()[0]


def require(ok, message):
    """ The scripts' setting checks: a ValueError (one line at the top) unless ok. """
    if not ok:
        raise ValueError(message)


# -----------------------------------------------------------------------------
# device and precision

def pick_device(device):
    """ The device to run on. CUDA asked for (or defaulted to) where there is none: the CPU, said in one line. """
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ValueError(f"unknown device '{device}': use cpu, cuda, cuda:N or mps") from None
    if kind not in ('cpu', 'cuda', 'mps'):  # torch's other backends (xpu, meta...): not what these scripts run on
        raise ValueError(f"unsupported device '{device}': use cpu, cuda, cuda:N or mps")
    if kind == 'cuda' and not torch.cuda.is_available():
        if first_process():
            print(f"note: device='{device}' but torch sees no CUDA GPU here: running on the CPU")
        return 'cpu'
    if kind == 'mps' and not torch.backends.mps.is_available():
        raise ValueError(f"device='{device}' but this machine has no MPS that torch can use: use --device=cpu")
    return device


def cpu_has_native_bf16():
    """ AVX512-BF16 or AMX: bf16 matmuls run at about twice fp32's speed; without them, many times slower. """
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_dtype(dtype, device_type):
    """ 'auto': bf16 on CUDA that has it, else fp16; bf16 on CPUs with native bf16, else fp32. """
    if dtype == 'auto':
        if device_type == 'cuda':
            return 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
        return 'bfloat16' if device_type == 'cpu' and cpu_has_native_bf16() else 'float32'
    require(dtype in DTYPES, f"unknown dtype '{dtype}': use one of {', '.join(DTYPES)} or auto")
    return dtype


def setup(device, dtype, seed=None):
    """ Device, resolved dtype, autocast context and matmul flags for a script. Returns a namespace with
    device, device_type, dtype (the name 'auto' resolved to), ptdtype, ctx (autocast or nullcontext). """
    device = pick_device(device)
    device_type = torch.device(device).type
    dtype = resolve_dtype(dtype, device_type)
    ptdtype = DTYPES[dtype]
    if device_type == 'cuda':
        torch.set_float32_matmul_precision('high')  # TF32 matmuls: fp32 weights, ~8x the fp32 throughput
    else:  # x86 CPUs take a slow path for denormal floats (tiny values); flushing them to zero costs nothing
        torch.set_flush_denormal(True)
    if seed is not None:
        torch.manual_seed(seed)
    # fp32 runs without autocast; bf16/fp16 autocast keeps fp32 weights and runs matmuls in half precision
    ctx = nullcontext() if ptdtype == torch.float32 else torch.amp.autocast(device_type=device_type, dtype=ptdtype)
    return SimpleNamespace(device=device, device_type=device_type, dtype=dtype, ptdtype=ptdtype, ctx=ctx)


def pack_for_cpu(model, rt):
    """ Inference on a CPU in fp32, or bf16 where the CPU has it natively: the model's plain Linear weights
    packed for oneDNN in place (quantize.pack): decoding and prefill 1.4-1.8x faster here; elsewhere the
    model as it is. Returns the model. """
    if rt.device_type == 'cpu' and torch.backends.mkldnn.is_available() and (
            rt.ptdtype == torch.float32 or (rt.ptdtype == torch.bfloat16 and cpu_has_native_bf16())):
        pack(model, rt.ptdtype)
    return model


# inductor's settings that compile_for_inference turns on for a CPU; the last two keep autotuning's timing table
# for each new matmul shape (8 lines each, dozens on a first compile) off stderr: inductor's debugging, not the user's
CPU_INFERENCE_COMPILE = dict(freezing=True, max_autotune=True, autotune_num_choices_displayed=0,
                             max_autotune_report_choices_stats=False)


def compile_for_inference(model):
    """ model.compile() for inference. On a CPU first inductor's freezing (the weights become constants: it packs
    them for its matmuls and folds what depends on them alone) and max-autotune (for each matmul shape it times its
    own C++ GEMMs against aten's and keeps the faster): at GPT-2 124M here the decode step 1.2-1.8x faster in fp32
    than eager with packed weights, and 2.6-3.9x in int8, whose GEMM streams the int8 weights 2-3x faster than aten's
    kernel (README, Efficiency notes). Process-wide settings, as inductor does not take freezing from
    torch.compile's options (the matmuls stayed unpacked): freezing applies only where no gradients are taken,
    max-autotune to every later compile; the scripts that call this only ever run the model for inference. """
    if next(itertools.chain(model.parameters(), model.buffers())).device.type == 'cpu':
        import torch._inductor.config  # inductor's own import is lazy
        for name, value in CPU_INFERENCE_COMPILE.items():
            setattr(torch._inductor.config, name, value)
        # its autotuning calls a deprecated storage method: torch's own business, not the user's
        warnings.filterwarnings('ignore', message='TypedStorage is deprecated')
        widen_int8_gemv_on_avx2()
    model.compile()


def widen_int8_gemv_on_avx2():
    """ Gives inductor's int8-weight GEMM on AVX2 CPUs a blocking of 64 outputs (8 accumulators) for one row, the
    decode step. Its own one-row blockings keep 16 outputs in 2 registers, and a k step waits on the multiply-add
    before it: 15-17 GB/s of int8 weights here where fp32's kernel streams 27-32; 64 wide, 21-23 GB/s (README,
    Efficiency notes). Inductor's table of micro-kernels is not public: where it has changed, the kernels stay
    its own. Once per process. """
    try:
        import torch._inductor.compile_fx  # noqa: F401 (imports the codegen modules in the order they need)
        from torch._inductor.codegen import cpp_micro_gemm as mg
        configs = mg.micro_gemm_configs[mg.CppMicroGemmFP32Vec]
        if any(c.register_blocking == (1, 64, 64) and c.vec_isa_cls is mg.VecAVX2 for c in configs):
            return

        def one_row(config, m, n, k, alpha, num_threads, **kwargs):  # a static single row, whole 64 blocks
            return m == 1 and n % 64 == 0 and k % 64 == 0 and not kwargs.get('dynamic_M', False)
        configs += mg.generate_gemm_config(mg.VecAVX2, [(1, 64, 64)], input_dtype=torch.bfloat16,
                                           input2_dtype=torch.int8, output_dtype=torch.float,
                                           compute_dtype=torch.float, extra_check=one_row)
    except (ImportError, AttributeError, KeyError, TypeError):
        pass


def compile_in_place(model, warm_up):
    """ model.compile(), in place (the module's own calls, generate's too, run compiled), compiled now by warm_up()
    (a first call): a compiler that fails falls back to eager here, with a warning, instead of stopping the run
    later with a traceback. Returns whether the model runs compiled. For inference only (see compile_for_inference). """
    compile_for_inference(model)
    print("compiling the model... (a minute or two the first time; later runs reuse torch's compile cache)")
    try:
        warm_up()
        return True
    except Exception as e:
        model._compiled_call_impl = None  # what nn.Module.compile set: the module's calls run eager again
        print(f"warning: torch.compile failed, running without it ({type(e).__name__}: {first_line(e)})")
        return False


def grad_scaler(rt, sharded=False):
    """ fp16 gradients underflow without loss scaling; bf16 and fp32 need none (the scaler is a no-op).
    sharded (FSDP): each rank sees only its shards of the gradients, so an inf found on one rank must skip
    the step on all of them, which FSDP's scaler agrees on across ranks. """
    if sharded:
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
        # its found-inf flags meet the DTensor gradients as 1-element tensors, and DTensor warns on every step
        warnings.filterwarnings('ignore', message='Found a non-scalar tensor with numel=1')
        return ShardedGradScaler(rt.device_type, enabled=rt.dtype == 'float16')
    return torch.amp.GradScaler(rt.device_type, enabled=rt.dtype == 'float16')


# dense bf16 (V100, T4: fp16) tensor-core peak FLOP/s of a GPU; the longest name found in the device's name as
# whole words wins ('L4' is not an L40, 'A10' not an A10G or A100); laptop parts, far slower, get none
GPU_PEAK_FLOPS = {'H200': 989e12, 'GH200': 989e12, 'H100': 989e12, 'H100 PCIe': 756e12, 'H100 NVL': 835e12,
                  'A100': 312e12, 'L40S': 362e12, 'L4': 121e12, 'A10': 125e12, 'RTX 4090': 165e12,
                  'RTX 3090': 71e12, 'V100': 125e12, 'T4': 65e12}
CPU_PEAK_FLOPS_PER_THREAD = 1e11  # ~ one AVX2/AVX-512 core doing fp32 FMAs at 2.5-3.5 GHz; AVX512-BF16 doubles it


def peak_flops(device, given=0.0, dtype='float32'):
    """ The FLOP/s MFU is measured against: `given` when set, else the device's in dtype (autocast's); None for
    a GPU not in the table. """
    if given:
        return given
    device = torch.device(device)
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
        matches = [key for key in GPU_PEAK_FLOPS if re.search(rf'(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])', name)]
        return GPU_PEAK_FLOPS[max(matches, key=len)] if matches and 'Laptop' not in name else None
    if device.type == 'mps':
        return None  # Apple GPUs: a few to ~25 TFLOP/s, depending on the chip
    native_bf16 = dtype == 'bfloat16' and cpu_has_native_bf16()  # two bf16 products per fp32 lane
    return torch.get_num_threads() * CPU_PEAK_FLOPS_PER_THREAD * (2 if native_bf16 else 1)


def format_mfu(mfu):
    """ '12.34%', or '-' while it is not measured (or the device's peak is unknown). """
    return '-' if mfu is None else f"{mfu * 100:.2f}%"


# -----------------------------------------------------------------------------
# DDP and FSDP: the process group, and FSDP's sharding around the model

_left = False  # the group was destroyed, at the end or on an error: the exit skips the interpreter's finalization


def first_process():
    """ Whether this process prints what all of them would print alike: the only one, or torchrun's rank 0. """
    return int(os.environ.get('RANK', 0)) == 0


def on_rank0(fn):
    """ fn() in rank 0 alone (the only process outside torchrun), its one-line error (an OSError or ValueError)
    raised in every rank (raise_rank0_error). Returns what fn returned, None in the other ranks. """
    import torch.distributed as dist
    if not dist.is_initialized():
        return fn()
    result = error = None
    if dist.get_rank() == 0:
        try:
            result = fn()
        except (OSError, ValueError) as e:
            error = e
    raise_rank0_error(error)
    return result


def raise_rank0_error(error):
    """ Every rank stops with rank 0's error (an exception, or None for none), or the others would go on to their
    next collective and wait there for rank 0: forever under NCCL, a traceback of gloo's under gloo. """
    import torch.distributed as dist
    outcome = [error]
    dist.broadcast_object_list(outcome, src=0)
    if outcome[0] is not None:
        raise outcome[0]


def join_process_group(backend, **kwargs):
    """ init_process_group, and the exit handler that leave_process_group arms, registered now so that it runs
    after the handlers registered later (wandb's). """
    import torch.distributed as dist
    global _left
    if backend == 'nccl' and not dist.is_nccl_available():
        raise ValueError("backend='nccl' needs torch's CUDA build and GPUs: on CPUs use --backend=gloo")
    dist.init_process_group(backend=backend, **kwargs)
    _left = False
    atexit.unregister(_exit_unfinalized)
    atexit.register(_exit_unfinalized)


def leave_process_group():
    """ A DDP or FSDP run's end on every rank: together, each rank's collectives finished, the group destroyed,
    and then out without the interpreter's finalization. A device mesh (FSDP's) keeps the gloo group and its
    worker threads alive past destroy_process_group, and such a thread that lets go of a collective's tensors
    once finalization began dies taking the GIL and aborts the process ('terminate called without an active
    exception', exit -6, now and then after a run that finished and saved; pytorch#190489). """
    import torch.distributed as dist
    global _left
    dist.barrier()
    dist.destroy_process_group()
    _left = not dist.is_initialized()


def _exit_unfinalized():
    if _left:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1 if hasattr(sys, 'last_value') else 0)  # last_value: an error reached the top after leaving


def shard_model(model, device_type, ptdtype, world_size):
    """ FSDP2, in place: the parameters of each Block, then the rest (embeddings, ln_f, lm_head: the root)
    split in dim 0 across the world_size ranks and moved to device_type; a Block's are gathered for its
    forward and backward only, its gradients reduce-scattered back into shards. On a GPU the gathered copies
    are in ptdtype (bf16: half the traffic and memory) and gradients are reduced in fp32; on a CPU they stay
    fp32 and autocast does the rest, as without FSDP. """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    if model.config.model_type != 'gpt':
        raise ValueError(f"fsdp=True shards the Blocks of a GPT; a {model.config.model_type} model has none (it is "
                         f"one vocab_size x vocab_size table): train it without --fsdp")
    # an explicit mesh: by default FSDP puts one on the GPU of a machine that has one, --device=cpu or not
    # (pytorch#132471)
    mesh = init_device_mesh(device_type, (world_size,))
    policy = MixedPrecisionPolicy(param_dtype=ptdtype, reduce_dtype=torch.float32) if device_type == 'cuda' else \
        MixedPrecisionPolicy()
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def model_state_bytes(model):
    """ (bytes on this rank, bytes of a whole copy) of the parameters, their gradients and AdamW's two moments:
    DDP keeps the whole on every rank, FSDP a shard. Frozen parameters (LoRA's base) have neither. And the
    bytes of the whole fp32 gradient, which FSDP holds unsharded between the micro-steps of accumulation. """
    from torch.distributed.tensor import DTensor
    local = whole = gradient = 0
    for p in model.parameters():
        copies = 4 if p.requires_grad else 1  # weights, gradients, exp_avg, exp_avg_sq: all in the parameter's dtype
        local += (p.to_local() if isinstance(p, DTensor) else p).numel() * p.element_size() * copies
        whole += p.numel() * p.element_size() * copies
        gradient += p.numel() * 4 * p.requires_grad
    return local, whole, gradient


# -----------------------------------------------------------------------------
# checkpoints

# the original nanoGPT's GPTConfig fields: its scripts build GPTConfig(**model_args), so our checkpoints keep
# model_args to these and put the fields it lacks (model_type, activation) under 'model_extra'
NANOGPT_MODEL_ARGS = ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout')


def model_args_entries(config):
    """ The checkpoint entries that rebuild a model of GPTConfig config: {'model_args': ..., 'model_extra': ...}. """
    args = asdict(config)
    keys = NANOGPT_MODEL_ARGS
    if not args['activation'].startswith('gelu'):  # the original would run it with its GELU, wrong by far: a relu
        keys += ('activation',)  # model's activation in model_args makes its GPTConfig(**model_args) refuse it
    return {'model_args': {k: args.pop(k) for k in keys}, 'model_extra': args}


def upgrade_legacy(checkpoint):
    """ The original nanoGPT's checkpoint layout, read as ours (in place): keys of a torch.compile'd model,
    the causal-mask buffers of its pre-SDPA attention, best_val_loss as a tensor. model_args stays as it is, so
    that the dict saved again still loads in the original nanoGPT. """
    if 'model' in checkpoint:
        checkpoint['model'] = {k.removeprefix('_orig_mod.'): v for k, v in checkpoint['model'].items()
                               if not k.endswith('.attn.bias')}
    if 'best_val_loss' in checkpoint:
        checkpoint['best_val_loss'] = float(checkpoint['best_val_loss'])
    return checkpoint


def model_from_checkpoint(checkpoint, dropout=None):
    """ The model saved in a train.py checkpoint dict, LoRA adapters and quantized base rebuilt; dropout may change between runs.
    A dict without 'model' (the metadata of an FSDP checkpoint) gives the model with its fresh init. """
    upgrade_legacy(checkpoint)
    # the original nanoGPT's has no model_extra: it trained with the erf GELU
    model_args = {'activation': 'gelu_exact', **checkpoint['model_args'], **checkpoint.get('model_extra', {}),
                  **({} if dropout is None else {'dropout': dropout})}
    model = build_model(GPTConfig(**model_args))
    if checkpoint.get('lora'):
        apply_lora(model, **checkpoint['lora'])
    if checkpoint.get('quantize'):  # its base was saved quantized (QLoRA): the same modules take the codes
        quantize(model, checkpoint['quantize'])
    if 'model' in checkpoint:
        model.load_state_dict(checkpoint['model'])
    return model


def quantize_loaded(model, checkpoint, name):
    """ sample.py's and chat.py's --quantize=name on a loaded model, in place: a QLoRA checkpoint's base is
    quantized already, and stays so. """
    saved = (checkpoint or {}).get('quantize')
    require(not (name and saved and name != saved), f"the checkpoint's base is quantized to {saved} already (QLoRA): "
                                                    f"drop --quantize={name}, or quantize what export.py writes (in full precision)")
    if name and not saved:
        quantize(model, name)


def checkpoint_path(out_dir):
    """ The checkpoint a train.py run left in out_dir: ckpt.pt, or an FSDP run's ckpt.dcp folder (or, where a
    save was cut off between its two renames, ckpt.dcp.old); where a save of one kind was cut off before it
    removed the other, the newer one; out_dir/ckpt.pt when there is none. """
    pt, dcp = os.path.join(out_dir, 'ckpt.pt'), os.path.join(out_dir, SHARDED)
    if not os.path.isdir(dcp) and os.path.isdir(dcp + '.old'):
        dcp += '.old'
    written = {path: os.path.getmtime(last) for path, last in [(pt, pt), (dcp, os.path.join(dcp, '.metadata'))]
               if os.path.isfile(last)}  # dcp writes its .metadata last
    return max(written, key=written.get) if written else pt


def load_checkpoint(path, device='cpu', dropout=None, sharded=False):
    """ (model, checkpoint dict) of a train.py ckpt.pt, ours or the original nanoGPT's, or of an FSDP run's
    ckpt.dcp folder, read whole into this process as the same dict. sharded=True (an FSDP run resuming from
    a ckpt.dcp): the dict holds the rest, and load_sharded_state reads each rank's share of the weights and
    the optimizer state later, into the sharded model. """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint {path}: train a model with train.py first, or point --out_dir "
                                f"(or --init_from) at a folder that has one")
    try:
        if os.path.isdir(path):
            checkpoint = read_sharded_checkpoint(path, with_state=not sharded)
            return model_from_checkpoint(checkpoint, dropout).to(device), checkpoint
        checkpoint = torch.load(path, map_location=device, weights_only=True)
        return model_from_checkpoint(checkpoint, dropout), checkpoint
    except Exception as e:  # a truncated file, a foreign pickle, tensors that don't fit the model
        if isinstance(e, OSError) and e.errno != errno.EINVAL:  # no sign of damage: the file can't be read
            # (permissions), or a QLoRA one needs bitsandbytes; EINVAL is torch.load seeking past a truncated end
            raise OSError(f"cannot load {path}: {first_line(e)}") from None
        if isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(e):
            raise OSError(f"not enough memory on {device} to load {path} ({type(e).__name__}: {first_line(e)}): "
                          f"free some, or load it on another device") from None
        raise ValueError(f"cannot load {path}, it is truncated, corrupt or not a train.py checkpoint "
                         f"({type(e).__name__}: {first_line(e)}); restore a copy or train a new one") from None


def checkpoint_write_error(out_dir, e):
    """ The one-line error of a save (ckpt.pt or an FSDP run's ckpt.dcp) that failed with e. """
    return OSError(f"could not write the checkpoint to {out_dir} ({first_line(e)}); the previous checkpoint "
                   f"there, if any, is intact: free some space or pick another --out_dir")


@contextmanager
def ctrl_c_after():
    """ A Ctrl-C during the block stops the script once the block is done: torch's checkpoint writers turn the
    KeyboardInterrupt raised inside them into an error of their own, which would read as a failed write. """
    if threading.current_thread() is not threading.main_thread():  # where Python runs its signal handlers
        yield
        return
    pressed = []
    before = signal.signal(signal.SIGINT, lambda *_: pressed.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
    if pressed:
        raise KeyboardInterrupt


def save_checkpoint(checkpoint, out_dir):
    """ out_dir/ckpt.pt, atomically: written and fsynced under a temporary name, then renamed over the old
    one, so a full disk or a crash mid-save leaves the previous checkpoint as it was; a Ctrl-C, after the save. """
    path = os.path.join(out_dir, 'ckpt.pt')
    try:
        with ctrl_c_after(), atomic_open(path) as f:
            torch.save(checkpoint, f)
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a failed write as a RuntimeError
        raise checkpoint_write_error(out_dir, e) from None
    for older in (SHARDED, SHARDED + '.old'):  # an FSDP run's, which this run resumed: out_dir keeps the newest only
        shutil.rmtree(os.path.join(out_dir, older), ignore_errors=True)


# an FSDP run's checkpoint: a torch.distributed.checkpoint folder, each rank's shards in a file of their own
SHARDED = 'ckpt.dcp'


def save_sharded_checkpoint(checkpoint, model, optimizer, out_dir):
    """ An FSDP run's checkpoint, written by all ranks together: out_dir/ckpt.dcp, a torch.distributed.checkpoint
    folder of the dict train.py writes to ckpt.pt, its 'model' and 'optimizer' replaced by their sharded,
    parameter-name-keyed state dicts (each rank writes its shards; rank 0 the rest). Any number of ranks
    reads it back (load_sharded_state), one process too (load_checkpoint). Atomic: written as ckpt.dcp.tmp,
    which rank 0 renames into place once dcp.save has every rank's files on disk, so a crash mid-save leaves
    the previous checkpoint loadable (as ckpt.dcp.old for the moment between the two renames). """
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict
    path = os.path.join(out_dir, SHARDED)
    tmp, old = path + '.tmp', path + '.old'
    rank0 = dist.get_rank() == 0
    model_state, optimizer_state = get_state_dict(model, optimizer)
    if rank0:
        shutil.rmtree(tmp, ignore_errors=True)  # what a save that crashed left behind
    dist.barrier()
    error = None
    try:
        with ctrl_c_after():  # (after the renames too: a Ctrl-C leaves no ckpt.dcp.tmp)
            dcp.save(dict(checkpoint, model=model_state, optimizer=optimizer_state), checkpoint_id=tmp)
            if rank0:
                fsync_tree(tmp)  # every rank's files (dcp synced them) and the folder's entries, before the rename
                if os.path.isdir(path):
                    shutil.rmtree(old, ignore_errors=True)
                    os.rename(path, old)
                os.rename(tmp, path)
                fsync_path(out_dir)
                shutil.rmtree(old, ignore_errors=True)
                if os.path.isfile(os.path.join(out_dir, 'ckpt.pt')):  # the run without FSDP that this one resumed
                    os.remove(os.path.join(out_dir, 'ckpt.pt'))
    except (Exception, CheckpointException) as e:  # dcp raises on every rank when one rank's write failed
        error = first_line(next(iter(e.failures.values()))[0] if isinstance(e, CheckpointException) else e)
        if rank0:
            shutil.rmtree(tmp, ignore_errors=True)
    # rank 0's renames can fail alone
    raise_rank0_error(None if error is None else checkpoint_write_error(out_dir, error))


def read_sharded_checkpoint(path, with_state=True):
    """ A ckpt.dcp folder read whole into this process, as the dict of a ckpt.pt (the optimizer state keyed by
    parameter index, as torch.optim has it): what sample.py, export.py or a run without FSDP load. Without
    with_state, all but the weights and the optimizer state. """
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys
    keys = None  # all of it
    if not with_state:  # the top-level keys from the folder's index, nested ones flattened as 'config.seed'
        keys = {fqn.split('.')[0] for fqn in FileSystemReader(path).read_metadata().state_dict_metadata}
        keys -= {'model', 'optimizer'}
    try:
        with warnings.catch_warnings():  # 'torch.distributed is uninitialized, assuming ... a single process': yes
            warnings.simplefilter('ignore')
            checkpoint = _load_state_dict_from_keys(keys, checkpoint_id=path)
    except CheckpointException as e:
        raise ValueError(first_line(next(iter(e.failures.values()))[0])) from None
    checkpoint.setdefault('scaler', {})  # dcp keeps no empty dict
    if with_state:
        checkpoint['optimizer'] = optimizer_state_by_index(checkpoint['optimizer'])
    else:  # where load_sharded_state reads the rest
        checkpoint['path'] = path
    return checkpoint


def optimizer_state_by_index(state):
    """ An optimizer state dict keyed by parameter name (torch.distributed.checkpoint's) keyed by position
    in the parameter groups instead, as optimizer.state_dict() gives it; optimizer_state_by_name undoes it. """
    index = {name: i for i, name in enumerate(name for group in state['param_groups'] for name in group['params'])}
    return {'state': {index[name]: s for name, s in state['state'].items()},
            'param_groups': [dict(group, params=[index[name] for name in group['params']])
                             for group in state['param_groups']]}


def optimizer_state_by_name(state, model, optimizer):
    names = {p: name for name, p in model.named_parameters()}
    name = [names[p] for group in optimizer.param_groups for p in group['params']]
    return {'state': {name[i]: s for i, s in state['state'].items()},
            'param_groups': [dict(group, params=[name[i] for i in group['params']])
                             for group in state['param_groups']]}


def load_sharded_state(model, optimizer, checkpoint):
    """ Resume an FSDP run: each rank takes its shards of the weights and the optimizer state, however many
    ranks wrote them. From a ckpt.dcp (load_checkpoint(sharded=True)) each rank reads only its shards; from
    a ckpt.pt every rank has read the whole, its weights are in the model already (loaded before sharding),
    and the optimizer state is cut into this rank's shards here. """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_state_dict,
                                                         set_optimizer_state_dict, set_state_dict)
    if 'model' in checkpoint:
        set_optimizer_state_dict(model, optimizer, optimizer_state_by_name(checkpoint['optimizer'], model, optimizer),
                                 options=StateDictOptions(full_state_dict=True))
        return
    model_state, optimizer_state = get_state_dict(model, optimizer)  # the layout of this run's shards
    state = {'model': model_state, 'optimizer': optimizer_state}
    dcp.load(state, checkpoint_id=checkpoint['path'])
    set_state_dict(model, optimizer, model_state_dict=state['model'], optim_state_dict=state['optimizer'])


def ensure_writable(path, setting='out_dir'):
    """ Find out now, not at the first checkpoint an hour into a run, that the folder path can't be written. """
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise OSError(f"cannot write to {setting} '{path}' ({e.strerror}): choose another one with --{setting}=...") from None


def dataset_dir(checkpoint, init_from=None, strict=False):
    """ The folder of the model's tokenizer (load_tokenizer's): data/<dataset> of the run that wrote checkpoint, a
    Hugging Face directory init_from that export.py wrote with its dataset's tokenizer files, or None: OpenAI's
    GPT-2, a checkpoint older than the config it stores, or a folder not here (noted: GPT-2's BPE is assumed;
    strict: a FileNotFoundError instead). """
    if checkpoint is None and init_from and any(os.path.isfile(os.path.join(init_from, f)) for f in TOKENIZER_FILES):
        return init_from
    dataset = (checkpoint or {}).get('config', {}).get('dataset')
    if not dataset:
        return None
    path = os.path.join('data', dataset)
    if not os.path.isdir(path):  # its tokenizer is out of sight: say why before GPT-2's BPE is assumed
        where = f"the model was trained on {path}, which is not in the current directory ({os.getcwd()})"
        if strict:
            raise FileNotFoundError(f"{where}: run from the folder that holds it")
        print(f"note: {where}: assuming GPT-2's BPE; run from the folder that holds it")
        return None
    return path


def grow_vocab_for(model, meta):
    """ Instruction data (data/instruct/prepare.py) puts the chat's special tokens after the base vocabulary: a
    model of that base vocabulary (or one padded beyond it) grows its embedding by surgery to take them, the base
    ids keeping their meaning. A model of any other vocabulary is another dataset's, and is left as it is. """
    if meta.get('base_vocab_size', float('inf')) <= model.config.vocab_size < meta['vocab_size']:
        if first_process():
            print(f"growing the model's vocab_size from {model.config.vocab_size} to {meta['vocab_size']} for the chat's special tokens")
        model.grow_vocab(meta['vocab_size'])


def load_model(init_from, out_dir='out', device='cpu', dropout=None, sharded=False):
    """ (model, checkpoint or None) for init_from: 'resume' (out_dir's checkpoint), the folder of another
    train.py run, one of OpenAI's GPT-2 sizes or a local Hugging Face GPT-2 directory. sharded: an FSDP run,
    see load_checkpoint. """
    path = checkpoint_path(out_dir if init_from == 'resume' else init_from)
    if init_from == 'resume' or os.path.exists(path):
        if first_process():
            print(f"loading the train.py checkpoint {path}")
        return load_checkpoint(path, device, dropout, sharded=sharded and init_from == 'resume')
    if os.path.isdir(init_from) and not os.path.isfile(os.path.join(init_from, 'config.json')):
        raise ValueError(f"init_from='{init_from}' is a folder with no train.py checkpoint (ckpt.pt) and no Hugging "
                         f"Face GPT-2 (config.json): train there first, or point --init_from at a run's out_dir")
    if init_from in GPT2_SIZES or os.path.isdir(init_from):
        local_only = not os.path.isdir(init_from) and not hub_reachable()
        model = GPT.from_pretrained(init_from, {} if dropout is None else dict(dropout=dropout), local_only)
        return model.to(device), None
    raise ValueError(f"unknown init_from '{init_from}': use 'resume', the folder of a train.py run, one of "
                     f"{', '.join(GPT2_SIZES)}, or a local Hugging Face GPT-2 directory")

