"""
Weight-only quantization for inference: model surgery that swaps the GPT's nn.Linear modules for
quantized ones, like LoRA (model.apply_lora) swaps them for adapted ones; forward is untouched.
Decoding one token reads every weight once, so fewer bytes per weight is what makes it faster.
$ python sample.py --quantize=int8
$ python bench.py --mode=generate --device=cpu --dtype=float32 --quantize=int8

QUANTIZERS maps a name ('int8') to the module that replaces an nn.Linear. Quantized modules keep
nn.Linear's in_features/out_features, and their packed weights are buffers (in state_dict).
The lm_head is quantized too, as a module of its own: its float weight stays the token embedding
(wte), which a lookup reads one row at a time, so the tying of the two is undone for inference.
"""

import functools

import torch
import torch.nn as nn
from torch.nn import functional as F

from model import GPT


class Int8Linear(nn.Module):
    """ y = (x @ W_int8^T) * scales + bias, W_int8 rounded from W / scales with one scale per output row
    (symmetric, absmax / 127). The matmul is aten's _weight_int8pack_mm: it reads the int8 weights,
    a quarter of fp32's bytes, and computes in bf16; elsewhere it runs on a dequantized copy. """

    def __init__(self, linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()
        # the kernel takes its scales in the activations' dtype: round them to bf16 first, then the
        # weights against the rounded scales, so that the bf16 scales are not one more error
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).to(torch.bfloat16)
        self.register_buffer('weight', torch.round(w / scales.float()[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer('scales', scales)  # (out_features,)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.kernel = int8_kernel_works(str(w.device))

    def forward(self, x):
        kind = x.device.type  # the output in the dtype nn.Linear's would have: autocast's, else the input's
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
        x2 = x.reshape(-1, self.in_features).to(self.scales.dtype)  # (N, in_features)
        if self.kernel:
            y = torch.ops.aten._weight_int8pack_mm(x2, self.weight, self.scales)
        else:
            y = F.linear(x2, self.weight.to(x2.dtype)) * self.scales
        y = y.view(*x.shape[:-1], self.out_features).to(dtype)  # (..., out_features)
        return y if self.bias is None else y + self.bias.to(dtype)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


@functools.cache
def int8_kernel_works(device):
    """ Whether aten has _weight_int8pack_mm on device (CPU and MPS do; some CUDA builds don't). """
    try:
        torch.ops.aten._weight_int8pack_mm(torch.zeros(1, 32, dtype=torch.bfloat16, device=device),
                                           torch.zeros(8, 32, dtype=torch.int8, device=device),
                                           torch.ones(8, dtype=torch.bfloat16, device=device))
        return True
    except (NotImplementedError, RuntimeError):
        return False


QUANTIZERS = {'int8': Int8Linear}  # name -> the module that replaces an nn.Linear, built from it


def quantize(model, name):
    """ Swap every nn.Linear of a GPT (the lm_head and the frozen base of LoRA adapters included) for
    the quantized module named; for inference. Returns the model. """
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantization '{name}': use one of {', '.join(QUANTIZERS)}")
    if not isinstance(model, GPT):
        raise ValueError(f"quantize={name} needs model_type='gpt': a bigram model has no Linear layers to quantize")
    swap = QUANTIZERS[name]
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, child_name, swap(child))
    device = model.lm_head.weight.device
    if name == 'int8' and not int8_kernel_works(str(device)):
        print(f"note: torch has no int8 matmul kernel on {device}: the int8 weights are dequantized for "
              f"each matmul, which saves memory but is not faster")
    return model.requires_grad_(False)
