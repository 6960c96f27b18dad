"""
Quantized weights by model surgery, like LoRA: quantize(model, name) swaps the Linear layers of a GPT's
Blocks (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) for quantized modules; forward is untouched.
QUANTIZERS names the kinds; each maps an nn.Linear to its quantized replacement. Their weights are buffers,
so state_dict, load_state_dict, .to(device) and torch.load(weights_only) just work.
pack(model, dtype) is the same kind of swap for CPU inference without quantizing: PackedLinear keeps the weights
in fp32 (or bf16), in oneDNN's layout, for a faster kernel (runtime.pack_for_cpu decides where).

'int8': for inference. Decoding one token reads every weight once, so fewer bytes per weight is what makes it
faster: int8 weights, one scale per output row, multiplied by aten's _weight_int8pack_mm (a quarter of fp32's
bytes) where in_features is a multiple of 16 (INT8_KERNEL_K says why), else dequantized. The lm_head, the
largest matrix at GPT-2's vocabulary, is quantized too; its float weight stays the token embedding (wte), which a
lookup reads one row at a time, so the tying of the two is undone. Compiled for inference on a CPU
(runtime.compile_for_inference, --compile=True), inductor times its own int8 GEMM against aten's kernel: here it
keeps its own for most one-row (decode) products, streaming the int8 weights 2-3x faster, and aten's for many of a
prefill's.
$ python sample.py --quantize=int8 --compile=True
$ python bench.py --mode=generate --device=cpu --dtype=float32 --quantize=int8 --compile=True

'nf4': 4-bit NormalFloat weights (QLoRA, Dettmers et al. 2023), blocks of 64 consecutive weights with one fp32 scale
each (no double quantization), through bitsandbytes. 0.5625 bytes per weight instead of 4. The weights are
dequantized one layer at a time inside the matmul, so activations and adapters stay in full precision.
QLoRA = LoRA first, then quantize: LoRALinear's base becomes an NF4Linear, the adapters train in fp32.
The tied wte/lm_head stays in full precision (it is 0.3 GB of gpt2-xl's 6 GB, and the embedding lookup
would need a 4-bit gather of its own).
$ python train.py --init_from=gpt2-xl --lora_rank=8 --quantize=nf4 ...
"""

import functools
import logging

import torch
import torch.nn as nn
from torch.nn import functional as F

from model import GPT, LORA_TARGETS, LoRALinear

NF4_BLOCK_SIZE = 64  # weights per fp32 scale, QLoRA's choice


@functools.cache  # once: nf4's forward asks for it on every call
def bitsandbytes():
    """ The bitsandbytes module, or a one-line OSError saying how to install it. """
    # without the optional `kernels` package its CPU backend warns on import; its fallback kernel works
    logging.getLogger('bitsandbytes.backends.cpu.ops').setLevel(logging.ERROR)
    try:
        import bitsandbytes
    except ImportError:
        raise OSError("quantize='nf4' needs bitsandbytes, which is not installed: "
                      "pip install 'bitsandbytes>=0.50,<0.51'") from None
    return bitsandbytes


class QuantizedLinear(nn.Module):
    """ What the quantized swaps of an nn.Linear share: its shape, a frozen bias, and the way back to a plain
    nn.Linear. A subclass keeps the weight in buffers and reconstructs it in dequantized_weight(). """

    def __init__(self, linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(torch.float32, copy=True),
                                                                  requires_grad=False)

    def dequantized(self):
        """ The plain nn.Linear computing the same function (up to rounding). """
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=self.weight.device)
        with torch.no_grad():
            linear.weight.copy_(self.dequantized_weight())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class NF4Linear(QuantizedLinear):
    """ A frozen nn.Linear stored as NF4: `weight` holds two 4-bit codes per byte, `absmax` one scale per
    block. Plain buffers, so state_dict, load_state_dict, .to(device) and torch.load(weights_only) just work. """

    def __init__(self, linear):
        super().__init__(linear)
        packed, state = bitsandbytes().functional.quantize_4bit(linear.weight.detach().float(),
                                                                blocksize=NF4_BLOCK_SIZE, quant_type='nf4')
        self.register_buffer('weight', packed)  # (out * in / 2, 1) uint8
        self.register_buffer('absmax', state.absmax)  # (out * in / 64,) fp32
        self.register_buffer('code', state.code, persistent=False)  # the 16 NF4 values, fixed

    def quant_state(self):
        bnb = bitsandbytes()
        return bnb.functional.QuantState(absmax=self.absmax, shape=torch.Size((self.out_features, self.in_features)),
                                         code=self.code, blocksize=NF4_BLOCK_SIZE, quant_type='nf4',
                                         dtype=torch.float32)

    def dequantized_weight(self):
        """ The (out, in) fp32 weight the codes stand for. """
        return bitsandbytes().functional.dequantize_4bit(self.weight, self.quant_state())

    def forward(self, x):
        # matmul_4bit dequantizes in forward and again in backward: no full-precision weight is kept
        return bitsandbytes().matmul_4bit(x, self.weight.t(), self.quant_state(), bias=self.bias)


# aten's AVX-512 CPU kernel steps through in_features 16 at a time, with no loop for a remainder, by loads that
# need 32-byte aligned bf16 rows (16-byte int8 ones): at other in_features it reads past each row and returns
# garbage or segfaults, and so does an input view that is not 32-byte aligned. Measured with torch 2.13, 1, 2, 3
# and 7 rows by in_features 1..80 and larger by out_features 1..80 and larger: right at all 3440 shapes with
# in_features a multiple of 16; otherwise a segfault at 2956 of 3687, wrong at 632, right by luck at 99. Int8Linear
# takes the dequantized path at other in_features (the source's AVX2 and ARM kernels step by 8: 16 suits them too).
INT8_KERNEL_K = 16


class Int8Linear(QuantizedLinear):
    """ y = (x @ W_int8^T) * scales + bias, W_int8 rounded from W / scales with one scale per output row
    (symmetric, absmax / 127). The matmul is aten's _weight_int8pack_mm: it reads the int8 weights,
    a quarter of fp32's bytes, and computes in bf16; elsewhere (other devices, or in_features not a multiple of
    INT8_KERNEL_K) it runs on a dequantized copy. """

    def __init__(self, linear):
        super().__init__(linear)
        w = linear.weight.detach().float()
        # the kernel takes its scales in the activations' dtype: round them to bf16 first, then the
        # weights against the rounded scales, so that the bf16 scales are not one more error
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).to(torch.bfloat16)
        self.register_buffer('weight', torch.round(w / scales.float()[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer('scales', scales)  # (out_features,)

    def dequantized_weight(self):
        """ The (out, in) fp32 weight the int8 codes stand for (the kernel's bf16 rounding aside). """
        return self.weight.float() * self.scales.float()[:, None]

    def forward(self, x):
        kind = x.device.type  # the output in the dtype nn.Linear's would have: autocast's, else the input's
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
        x2 = x.reshape(-1, self.in_features).to(self.scales.dtype)  # (N, in_features)
        if self.in_features % INT8_KERNEL_K == 0 and int8_kernel_works(str(x.device)):  # cached: once per device
            # its rows must start 32-byte aligned (see INT8_KERNEL_K). Compiled, always a fresh (aligned) buffer, which
            # inductor fuses into the cast, as data_ptr would break the graph; inductor may swap in a GEMM of its own
            if torch.compiler.is_compiling() or x2.data_ptr() % 32 or not x2.is_contiguous():
                x2 = x2.clone(memory_format=torch.contiguous_format)
            y = torch.ops.aten._weight_int8pack_mm(x2, self.weight, self.scales)
        else:
            y = F.linear(x2, self.weight.to(x2.dtype)) * self.scales
        y = y.view(*x.shape[:-1], self.out_features).to(dtype)  # (..., out_features)
        return y if self.bias is None else y + self.bias.to(dtype)


_INT8_KERNEL = {}  # device -> whether aten has _weight_int8pack_mm there


@torch.compiler.assume_constant_result  # compiled, the answer is taken as it is, not traced
def int8_kernel_works(device):
    """ Whether aten has _weight_int8pack_mm on device (CPU and MPS do; some CUDA builds don't), asked once. """
    if device not in _INT8_KERNEL:
        try:
            torch.ops.aten._weight_int8pack_mm(torch.zeros(1, 32, dtype=torch.bfloat16, device=device),
                                               torch.zeros(8, 32, dtype=torch.int8, device=device),
                                               torch.ones(8, dtype=torch.bfloat16, device=device))
            _INT8_KERNEL[device] = True
        except (NotImplementedError, RuntimeError):
            _INT8_KERNEL[device] = False
    return _INT8_KERNEL[device]


class PackedLinear(QuantizedLinear):
    """ A frozen nn.Linear for CPU inference in fp32 or bf16, its weight reordered once into oneDNN's blocked
    layout. Not fewer bytes, a faster kernel: aten's matmul of one row by a plain weight ran on one core at
    about half the memory's read speed; oneDNN's streams the packed weight from both cores (README, Efficiency
    notes). The same function as the nn.Linear, up to the order of the additions. """

    def __init__(self, linear, dtype):
        super().__init__(linear)
        self.dtype = dtype  # the activations' dtype: fp32, or bf16 under autocast
        # the layout oneDNN picks for one row at a time (decoding); prefill's many rows use it too.
        # Opaque, so not a parameter and not saved: pack a loaded model, never one to train or save
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().to(dtype), 1)
        self.register_buffer('weight', packed, persistent=False)
        if self.bias is not None:
            self.bias = nn.Parameter(self.bias.to(dtype), requires_grad=False)

    def dequantized_weight(self):
        return self.weight.to_dense().float()

    def forward(self, x):
        return torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.weight, self.bias, 'none', [], '')


def pack(model, dtype):
    """ Swap every plain nn.Linear of model (the lm_head and LoRA bases too) for a PackedLinear, in place;
    returns the model. The lm_head gets a packed copy of its weight: the token embedding (tied to it in
    a GPT) keeps the plain one for its lookups. """
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, child_name, PackedLinear(child, dtype))
    return model.requires_grad_(False)


QUANTIZERS = {'int8': Int8Linear, 'nf4': NF4Linear}  # name -> the module that replaces an nn.Linear


def check_quantize(quantize):
    """ The scripts' check of their quantize setting, before a model is loaded: a one-line ValueError. """
    if quantize not in ('', *QUANTIZERS):
        raise ValueError(f"unknown quantize '{quantize}': use '' (none) or {', '.join(QUANTIZERS)}")


def quantize(model, name):
    """ Swap the Blocks' Linear layers (the bases of LoRA adapters, where there are some) for `name`'s
    quantized modules, in place; returns the model. """
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantization '{name}': use one of {', '.join(QUANTIZERS)}")
    if not isinstance(model, GPT):
        raise ValueError(f"quantize='{name}' needs model_type='gpt': a bigram model has no Linear layers to quantize")
    for block in model.transformer.h:
        for target in LORA_TARGETS:  # every Linear of a Block
            parent, child = target.split('.')
            parent = getattr(block, parent)
            if isinstance(getattr(parent, child), LoRALinear):  # QLoRA: quantize the frozen base under the adapter
                parent, child = getattr(parent, child), 'base'
            linear = getattr(parent, child)
            if type(linear) is not nn.Linear:
                raise ValueError(f"the model is already quantized ({type(linear).__name__}): quantize it once")
            setattr(parent, child, QUANTIZERS[name](linear))
    if name == 'int8':  # inference only: the lm_head too (see the top), wte keeps the float weight
        model.lm_head = Int8Linear(model.lm_head)
        if not int8_kernel_works(str(model.lm_head.weight.device)):
            print(f"note: torch has no int8 matmul kernel on {model.lm_head.weight.device}: the int8 weights are "
                  f"dequantized for each matmul, which saves memory but is not faster")
        elif odd := sorted({m.in_features for m in model.modules() if isinstance(m, Int8Linear)
                            and m.in_features % INT8_KERNEL_K}):
            print(f"note: the int8 kernel needs in_features a multiple of {INT8_KERNEL_K}: the Linears with "
                  f"in_features {', '.join(map(str, odd))} are dequantized for each matmul, which saves memory but is "
                  f"not faster")
        model.requires_grad_(False)
    return model


def dequantize(model):
    """ Swap every quantized module back for a plain nn.Linear (for merging adapters, exporting). """
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, QuantizedLinear):
                setattr(module, child_name, child.dequantized())
    return model
