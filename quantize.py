"""
Quantized weights by model surgery, like LoRA: quantize(model, name) swaps the Linear layers of a GPT's
Blocks (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) for quantized modules; forward is untouched.
QUANTIZERS names the kinds; each maps an nn.Linear to its quantized replacement.

'nf4': 4-bit NormalFloat weights (QLoRA, Dettmers et al. 2023), blocks of 64 consecutive weights with one fp32 scale
each (no double quantization), through bitsandbytes. 0.53 bytes per weight instead of 4. The weights are
dequantized one layer at a time inside the matmul, so activations and adapters stay in full precision.
QLoRA = LoRA first, then quantize: LoRALinear's base becomes an NF4Linear, the adapters train in fp32.
The tied wte/lm_head stays in full precision (it is 0.3 GB of gpt2-xl's 6 GB, and the embedding lookup
would need a 4-bit gather of its own).
$ python train.py --init_from=gpt2-xl --lora_rank=8 --quantize=nf4 ...
"""

import logging

import torch
import torch.nn as nn
from torch.nn import functional as F

from model import GPT, LoRALinear

QUANT_TARGETS = ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj')  # names inside a Block
NF4_BLOCK_SIZE = 64  # weights per fp32 scale, QLoRA's choice


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


class NF4Linear(nn.Module):
    """ A frozen nn.Linear stored as NF4: `weight` holds two 4-bit codes per byte, `absmax` one scale per
    block. Plain buffers, so state_dict, load_state_dict, .to(device) and torch.load(weights_only) just work. """

    def __init__(self, linear):
        super().__init__()
        bnb = bitsandbytes()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        packed, state = bnb.functional.quantize_4bit(linear.weight.detach().float(), blocksize=NF4_BLOCK_SIZE,
                                                     quant_type='nf4')
        self.register_buffer('weight', packed)  # (out * in / 2, 1) uint8
        self.register_buffer('absmax', state.absmax)  # (out * in / 64,) fp32
        self.register_buffer('code', state.code, persistent=False)  # the 16 NF4 values, fixed
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)

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

    def dequantized(self):
        """ The plain nn.Linear computing the same function (up to rounding). """
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=self.absmax.device)
        with torch.no_grad():
            linear.weight.copy_(self.dequantized_weight())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear


QUANTIZERS = {'nf4': NF4Linear}  # name -> the module that replaces an nn.Linear


def quantize(model, name):
    """ Swap the Blocks' Linear layers (the bases of LoRA adapters, where there are some) for `name`'s
    quantized modules, in place; returns the model. """
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantization '{name}': use one of {', '.join(QUANTIZERS)}")
    if not isinstance(model, GPT):
        raise ValueError(f"quantize='{name}' needs model_type='gpt': a bigram model has no Linear layers to quantize")
    for block in model.transformer.h:
        for target in QUANT_TARGETS:
            parent, child = target.split('.')
            parent = getattr(block, parent)
            if isinstance(getattr(parent, child), LoRALinear):  # QLoRA: quantize the frozen base under the adapter
                parent, child = getattr(parent, child), 'base'
            linear = getattr(parent, child)
            if type(linear) is not nn.Linear:
                raise ValueError(f"the model is already quantized ({type(linear).__name__}): quantize it once")
            setattr(parent, child, QUANTIZERS[name](linear))
    return model


def dequantize(model):
    """ Swap every quantized module back for a plain nn.Linear (for merging adapters, exporting). """
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, tuple(QUANTIZERS.values())):
                setattr(module, child_name, child.dequantized())
    return model
