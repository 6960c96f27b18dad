"""
The set-up every script shares, in one place: the device, the precision (autocast, TF32, the
GradScaler), loading a model (a train.py checkpoint, OpenAI's GPT-2 or a local Hugging Face
directory), writing a checkpoint, the peak FLOP/s that MFU is measured against, and the one way a
script fails: library code raises ValueError or OSError with a sentence naming the problem and the
fix, and errors_as_one_line() makes the script print it as `error: ...` and exit 1.
"""

import os
import sys
import tempfile
from contextlib import nullcontext
from types import SimpleNamespace

import torch

from data_io import atomic_open, hub_reachable
from model import GPT, GPT2_SIZES, GPTConfig, apply_lora, build_model
from quantize import quantize

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def errors_as_one_line():
    """ A ValueError or OSError that reaches the top of the script prints as one line, exit code 1;
    anything else is a bug and keeps its traceback. """
    default = sys.excepthook

    def hook(kind, e, tb):
        if issubclass(kind, (ValueError, OSError)):
            print(f"error: {first_line(e)}", file=sys.stderr)
        else:
            default(kind, e, tb)
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
    kind = torch.device(device).type
    if kind == 'cuda' and not torch.cuda.is_available():
        if int(os.environ.get('RANK', 0)) == 0:  # torchrun: once, not once per process
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


def grad_scaler(rt):
    """ fp16 gradients underflow without loss scaling; bf16 and fp32 need none (the scaler is a no-op). """
    return torch.amp.GradScaler(rt.device_type, enabled=rt.dtype == 'float16')


# dense bf16/fp16 tensor-core peak FLOP/s of a GPU; the longest name that the device's name contains wins
GPU_PEAK_FLOPS = {'H200': 989e12, 'GH200': 989e12, 'H100': 989e12, 'H100 PCIe': 756e12, 'A100': 312e12,
                  'L40S': 362e12, 'L4': 121e12, 'A10': 125e12, 'RTX 4090': 165e12, 'RTX 3090': 71e12,
                  'V100': 125e12, 'T4': 65e12}
CPU_PEAK_FLOPS_PER_THREAD = 1e11  # ~ one AVX2/AVX-512 core doing fp32 FMAs at 2.5-3.5 GHz


def peak_flops(device, given=0.0):
    """ The FLOP/s MFU is measured against: `given` when set, else the device's; None for a GPU not in the table. """
    if given:
        return given
    device = torch.device(device)
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
        matches = [key for key in GPU_PEAK_FLOPS if key in name]
        return GPU_PEAK_FLOPS[max(matches, key=len)] if matches else None
    if device.type == 'mps':
        return None  # Apple GPUs: a few to ~25 TFLOP/s, depending on the chip
    return torch.get_num_threads() * CPU_PEAK_FLOPS_PER_THREAD


def format_mfu(mfu):
    """ '12.34%', or '-' while it is not measured (or the device's peak is unknown). """
    return '-' if mfu is None else f"{mfu * 100:.2f}%"


# -----------------------------------------------------------------------------
# checkpoints

def upgrade_legacy(checkpoint):
    """ The original nanoGPT's checkpoint layout, read as ours (in place): keys of a torch.compile'd model,
    the causal-mask buffers of its pre-SDPA attention, no activation (it trained with the erf GELU),
    best_val_loss as a tensor. """
    checkpoint['model'] = {k.removeprefix('_orig_mod.'): v for k, v in checkpoint['model'].items()
                           if not k.endswith('.attn.bias')}
    checkpoint['model_args'] = {'activation': 'gelu_exact', **checkpoint['model_args']}
    if 'best_val_loss' in checkpoint:
        checkpoint['best_val_loss'] = float(checkpoint['best_val_loss'])
    return checkpoint


def model_from_checkpoint(checkpoint, dropout=None):
    """ The model saved in a train.py checkpoint dict, LoRA adapters and quantized base rebuilt; dropout may change between runs. """
    upgrade_legacy(checkpoint)
    model_args = dict(checkpoint['model_args'], **({} if dropout is None else {'dropout': dropout}))
    model = build_model(GPTConfig(**model_args))
    if checkpoint.get('lora'):
        apply_lora(model, **checkpoint['lora'])
    if checkpoint.get('quantize'):  # its base was saved quantized (QLoRA): the same modules take the codes
        quantize(model, checkpoint['quantize'])
    model.load_state_dict(checkpoint['model'])
    return model


def load_checkpoint(path, device='cpu', dropout=None):
    """ (model, checkpoint dict) of a train.py ckpt.pt, ours or the original nanoGPT's. """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint {path}: train a model with train.py first, or point --out_dir "
                                f"(or --init_from) at a folder that has one")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
        return model_from_checkpoint(checkpoint, dropout), checkpoint
    except Exception as e:  # a truncated file, a foreign pickle, tensors that don't fit the model
        raise ValueError(f"cannot load {path}, it is truncated, corrupt or not a train.py checkpoint "
                         f"({type(e).__name__}: {first_line(e)}); restore a copy or train a new one") from None


def save_checkpoint(checkpoint, out_dir):
    """ out_dir/ckpt.pt, atomically: written and fsynced under a temporary name, then renamed over the old
    one, so a full disk or a crash mid-save leaves the previous checkpoint as it was. """
    path = os.path.join(out_dir, 'ckpt.pt')
    try:
        with atomic_open(path) as f:
            torch.save(checkpoint, f)
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a failed write as a RuntimeError
        raise OSError(f"could not write the checkpoint to {out_dir} ({first_line(e)}); the previous checkpoint "
                      f"there, if any, is intact: free some space or pick another --out_dir") from None


def ensure_writable(out_dir):
    """ Find out now, not at the first checkpoint an hour into a run, that out_dir can't be written. """
    try:
        os.makedirs(out_dir, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as e:
        raise OSError(f"cannot write to out_dir '{out_dir}' ({e.strerror}): choose another one with --out_dir=...") from None


def load_model(init_from, out_dir='out', device='cpu', dropout=None):
    """ (model, checkpoint or None) for init_from: 'resume' (out_dir/ckpt.pt), the folder of another
    train.py run, one of OpenAI's GPT-2 sizes or a local Hugging Face GPT-2 directory. """
    if init_from == 'resume' or os.path.isfile(os.path.join(init_from, 'ckpt.pt')):
        path = os.path.join(out_dir if init_from == 'resume' else init_from, 'ckpt.pt')
        print(f"loading the train.py checkpoint {path}")
        return load_checkpoint(path, device, dropout)
    if init_from in GPT2_SIZES or os.path.isdir(init_from):
        local_only = not os.path.isdir(init_from) and not hub_reachable()
        model = GPT.from_pretrained(init_from, {} if dropout is None else dict(dropout=dropout), local_only)
        return model.to(device), None
    raise ValueError(f"unknown init_from '{init_from}': use 'resume', the folder of a train.py run, one of "
                     f"{', '.join(GPT2_SIZES)}, or a local Hugging Face GPT-2 directory")

