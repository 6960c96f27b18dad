"""
Full definition of a GPT Language Model, all of it in this single file.
References:
1) the official GPT-2 TensorFlow implementation released by OpenAI:
https://github.com/openai/gpt-2/blob/master/src/model.py
2) huggingface/transformers PyTorch implementation:
https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py

Reading order, bottom-up: LayerNorm, CausalSelfAttention (+ KVCache), MLP, Block, GPT.
Then the extensions that work around the model: Bigram (the lecture's baseline) and LoRA.
"""

import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2 vocab_size of 50257, padded up to nearest multiple of 64 for efficiency
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # True: bias in Linears and LayerNorms, like GPT-2. False: a bit better and faster
    model_type: str = 'gpt'  # 'gpt' or 'bigram'
    activation: str = 'gelu'  # feed-forward non-linearity: 'gelu' (GPT-2), 'gelu_exact' or 'relu'

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model_type '{self.model_type}': use one of {', '.join(MODEL_TYPES)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{self.activation}': use one of {', '.join(ACTIVATIONS)}")
        small = [f"{k}={getattr(self, k)}" for k in ('block_size', 'vocab_size', 'n_layer', 'n_head', 'n_embd')
                 if getattr(self, k) < 1]
        if small:
            raise ValueError(f"{', '.join(small)}: the model's sizes must be at least 1")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                             f"pick n_embd as a multiple of n_head")


MODEL_TYPES = ('gpt', 'bigram')
# 'gelu' is GPT-2's tanh approximation (HF's gelu_new), so OpenAI weights give OpenAI's logits;
# 'gelu_exact' is the erf GELU the original nanoGPT trained with (its checkpoints load with it).
ACTIVATIONS = {'gelu': lambda: nn.GELU(approximate='tanh'), 'gelu_exact': nn.GELU, 'relu': nn.ReLU}


class LayerNorm(nn.Module):
    """ LayerNorm but with an optional bias. PyTorch doesn't support simply bias=False """

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class KVCache:
    """ Keys and values of every layer for the positions seen so far, so that generation feeds only
    the new tokens through the model. Allocated once, at its full size (GPT.new_kv_cache); passed to
    GPT.forward, the model never owns one. """

    def __init__(self, n_layer, batch_size, n_head, max_len, head_size, dtype, device):
        # a pair of tensors per layer, not one (L, ...) tensor: a compiled step writes a whole input tensor
        # in place, where slices of one shared tensor made inductor copy the cache on every step
        shape = (batch_size, n_head, max_len, head_size)  # (B, nh, max_len, hs) for each layer
        self.k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.pos = 0  # number of positions already cached

    def update(self, layer, k, v):
        """ Store the new keys/values (B, nh, T, hs) of one layer; return all of them so far. """
        end = self.pos + k.size(2)
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, nh, pos+T, hs)


def causal_mask(T, S, device):
    """ (T, S) lower-triangular mask: query t (at position S-T+t) sees keys 0..S-T+t. """
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


class CausalSelfAttention(nn.Module):
    # True: aten's flash kernel (SDPA) on a CPU in bf16/fp16 too, where forward otherwise takes the faster manual path
    sdpa_on_cpu_in_low_precision = False

    def __init__(self, config, layer_idx=0):
        super().__init__()
        # key, query, value projections for all heads, but in a batch
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # output projection
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        # regularization
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.layer_idx = layer_idx
        # flash attention makes GPU go brrrrr; False takes the manual path, the reference the tests compare to
        self.flash = True

    def forward(self, x, kv_cache=None):
        B, T, C = x.size()  # batch size, sequence length, embedding dimensionality (n_embd)
        # calculate query, key, values for all heads in batch and move head forward to be the batch dim
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head)  # (B, T, 3, nh, hs)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hs), views: one op, not nine
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, nh, S, hs), S = pos+T
        S = k.size(2)
        dropout_p = self.dropout if self.training else 0.0
        # on a CPU the manual path beats aten's flash kernel in bf16/fp16, eager or compiled, and compiled for one new
        # query (a decode step), where inductor fuses it and the cache write into one kernel, 2x faster than aten's
        # (README, Efficiency notes: "Compiled decoding on CPU")
        cpu_manual = q.device.type == 'cpu' and (
            (T == 1 and torch.compiler.is_compiling())
            or (q.dtype != torch.float32 and not self.sdpa_on_cpu_in_low_precision))
        if self.flash and not cpu_manual:
            if T == 1:  # one new query: it sees every key
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
            elif T == S:  # plain causal: no cache, or a prefill
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            else:  # several new queries after a cached prefix: SDPA's is_causal aligns top-left, we need bottom-right
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, S, x.device), dropout_p=dropout_p)
        else:
            # manual implementation of attention: (B, nh, T, hs) x (B, nh, hs, S) -> (B, nh, T, S)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(~causal_mask(T, S, x.device), float('-inf'))
            att = F.softmax(att, dim=-1)
            att = self.attn_dropout(att)
            y = att @ v  # (B, nh, T, S) x (B, nh, S, hs) -> (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side: (B, T, C)
        # output projection
        y = self.resid_dropout(self.c_proj(y))
        return y


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.act = ACTIVATIONS[config.activation]()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config, layer_idx=0):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None):
        x = x + self.attn(self.ln_1(x), kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x


def sample_next(logits, temperature=1.0, top_k=None):
    """ (B, V) logits of the last position -> (B, 1) sampled token ids, nanoGPT style. """
    if top_k == 1:  # greedy: the argmax, without a random draw over the vocabulary; a tie goes to the lowest id
        return torch.argmax(logits, dim=-1, keepdim=True)
    # in fp32, from the largest logit down: a small temperature takes fp16 logits past fp16's 65504, or any past fp32's
    # range (inf, then NaN probabilities); the softmax is the same. A temperature below fp32's smallest normal number
    # would be a denormal, which the scripts' CPUs flush to 0 (runtime.setup), and 0 / 0 is NaN: it takes that number
    logits = logits.float()
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / max(temperature, torch.finfo(torch.float32).tiny)
    if top_k is not None:  # crop the logits to only the top k options
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float('Inf')
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1)


class LanguageModel(nn.Module):
    """ What GPT and Bigram share: parameter counting, the optimizer, MFU and generation. """

    def get_num_params(self, non_embedding=True, trainable=False):
        """ The number of parameters, tied weights once (GPT leaves out its position embeddings); trainable: those
        that require grad only. A quantized or packed Linear (quantize.py) keeps its weight in a buffer: it counts
        as in x out (frozen) parameters all the same. """
        if trainable:
            return sum(p.numel() for p in self.parameters() if p.requires_grad)
        swapped = sum(m.in_features * m.out_features for m in self.modules() if hasattr(m, 'dequantized_weight'))
        return sum(p.numel() for p in self.parameters()) + swapped

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, verbose=True):
        # trainable parameters only (LoRA freezes the base), each tensor once (tied weights)
        param_dict = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        # 2D parameters (matmul weights and embeddings) decay; biases and layernorm gains don't
        decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
        nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
        optim_groups = [
            {'params': decay_params, 'weight_decay': weight_decay},
            {'params': nodecay_params, 'weight_decay': 0.0}
        ]
        num_decay_params = sum(p.numel() for p in decay_params)
        num_nodecay_params = sum(p.numel() for p in nodecay_params)
        # the fused kernel is one launch per step instead of one per tensor
        use_fused = device_type == 'cuda'
        optimizer = torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, fused=use_fused or None)
        if verbose:
            print(f"num decayed parameter tensors: {len(decay_params)}, with {num_decay_params:,} parameters")
            print(f"num non-decayed parameter tensors: {len(nodecay_params)}, with {num_nodecay_params:,} parameters")
            print(f"using fused AdamW: {use_fused}")
        return optimizer

    def flops_per_token(self):
        """ Training FLOPs per token: 2N forward, 2N backward for the activations' gradients and 2N for the
        weights', of the trainable weights only: 6N in full training, less under LoRA, whose frozen base gets no
        weight gradients (GPT adds its attention). """
        return 4 * self.get_num_params() + 2 * self.get_num_params(trainable=True)

    def estimate_mfu(self, fwdbwd_per_iter, dt, peak_flops):
        """ Model FLOPs utilization: achieved FLOP/s over peak_flops (runtime.peak_flops gives the device's);
        None when the peak is unknown, or the model has no matmuls to count. """
        if peak_flops is None or self.flops_per_token() is None:
            return None
        return self.flops_per_token() * self.config.block_size * fwdbwd_per_iter / dt / peak_flops

    def new_kv_cache(self, batch_size):
        """ A KV cache for generate, or None for a model that has no use for one. """
        return None

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, use_kv_cache=True, callback=None):
        """
        Take a conditioning sequence of indices idx (LongTensor of shape (b,t)) and complete
        the sequence max_new_tokens times, feeding the predictions back into the model each time.
        With use_kv_cache the prompt is prefilled once and then each step feeds only the newest
        token; without it every step recomputes the whole (cropped) context: the reference.
        callback, if given, is called with each new (b, 1) token as soon as it is sampled (streaming).
        Most likely you'll want to make sure to be in model.eval() mode of operation for this.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; use top_k=1 for greedy decoding")
        block_size = self.config.block_size
        b, t = idx.size()
        # the whole output at once: each step writes its token in place, no growing copy of the sequence
        out = torch.empty((b, t + max_new_tokens), dtype=idx.dtype, device=idx.device)
        out[:, :t] = idx
        kv_cache = self.new_kv_cache(b) if use_kv_cache else None
        seen = 0  # out[:, :seen] is in the cache
        for end in range(t, t + max_new_tokens):  # out[:, :end] is the sequence so far
            if kv_cache is None:
                start = max(0, end - block_size)  # if the sequence context is growing too long we must crop it
            else:
                if kv_cache.pos + end - seen > block_size:
                    # positions are absolute, so a window that slides needs fresh keys: prefill it again
                    kv_cache.pos, seen = 0, end - block_size
                start = seen
            # a copy, not a view of out: a compiled model guards on strides, and out's row stride changes with
            # max_new_tokens, so sample.py's first sample after its short warm-up compiled the prefill again
            idx_cond = out[:, start:end].clone(memory_format=torch.contiguous_format)  # (b, end - start)
            logits, _ = self(idx_cond) if kv_cache is None else self(idx_cond, kv_cache=kv_cache)
            seen = end
            idx_next = sample_next(logits[:, -1, :], temperature, top_k)
            out[:, end:end + 1] = idx_next
            if callback is not None:
                callback(idx_next)
        return out


GPT2_SIZES = {  # n_layer, n_head and n_embd of OpenAI's checkpoints
    'gpt2':         dict(n_layer=12, n_head=12, n_embd=768),   # 124M params
    'gpt2-medium':  dict(n_layer=24, n_head=16, n_embd=1024),  # 350M params
    'gpt2-large':   dict(n_layer=36, n_head=20, n_embd=1280),  # 774M params
    'gpt2-xl':      dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M params
}
# Hugging Face's GPT-2: its Conv1D modules store these weights as (in, out), transposed from nn.Linear;
# and its activation_function names for ours (export.py writes the first name of each of ours)
HF_CONV1D_WEIGHTS = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
HF_ACTIVATIONS = {'gelu_new': 'gelu', 'gelu_pytorch_tanh': 'gelu', 'gelu': 'gelu_exact', 'relu': 'relu'}


class GPT(LanguageModel):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.gradient_checkpointing = False  # recompute each Block in backward to save activation memory

        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # https://paperswithcode.com/method/weight-tying

        # init all weights
        self.apply(self._init_weights)
        # apply special scaled init to the residual projections, per GPT-2 paper
        for pn, p in self.named_parameters():
            if pn.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding=True, trainable=False):
        """
        Return the number of parameters in the model (trainable: those that require grad only).
        For non-embedding count (default), the position embeddings get subtracted.
        The token embeddings would too, except due to the parameter sharing these
        params are actually used as weights in the final layer, so we include them;
        where the lm_head has a copy of its own (int8, packed), they are lookups alone, and subtracted.
        """
        n_params = super().get_num_params(trainable=trainable)
        if non_embedding:
            embeddings = [self.transformer.wpe]
            if self.lm_head.weight is not self.transformer.wte.weight:  # untied (int8, packed): a lookup alone
                embeddings.append(self.transformer.wte)
            n_params -= sum(e.weight.numel() for e in embeddings if e.weight.requires_grad or not trainable)
        return n_params

    def flops_per_token(self):
        """ 6N for the matmuls, plus attention's scores and weighted sums (PaLM paper Appendix B). """
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        return super().flops_per_token() + 12 * L * H * Q * T

    def new_kv_cache(self, batch_size):
        """ An empty KVCache for batch_size sequences of up to block_size tokens, in the dtype the keys
        will have (autocast's when it is on). """
        cfg, like = self.config, self.transformer.wpe.weight
        kind = like.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else like.dtype
        return KVCache(cfg.n_layer, batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head, dtype, like.device)

    def forward(self, idx, targets=None, kv_cache=None):
        t = idx.size(1)
        pos0 = kv_cache.pos if kv_cache is not None else 0
        if pos0 + t > self.config.block_size:
            raise ValueError(f"Cannot forward sequence of length {pos0 + t}, block size is only "
                             f"{self.config.block_size}: crop the input to its last block_size tokens")
        pos = torch.arange(pos0, pos0 + t, dtype=torch.long, device=idx.device)  # shape (t)

        # forward the GPT model itself
        tok_emb = self.transformer.wte(idx)  # token embeddings of shape (b, t, n_embd)
        pos_emb = self.transformer.wpe(pos)  # position embeddings of shape (t, n_embd)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            if self.gradient_checkpointing and self.training and kv_cache is None:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, kv_cache)
        x = self.transformer.ln_f(x)
        if kv_cache is not None:
            kv_cache.pos += t

        if targets is not None:
            # if we are given some desired targets also calculate the loss
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        else:
            # inference-time mini-optimization: only forward the lm_head on the very last position
            logits = self.lm_head(x[:, -1:, :])  # a slice keeps the time dim (and is a view, unlike x[:, [-1]])
            loss = None

        return logits, loss

    def crop_block_size(self, block_size):
        # model surgery to decrease the block size if necessary
        # e.g. we may load the GPT2 pretrained model checkpoint (block size 1024)
        # but want to use a smaller block size for some smaller, simpler model
        if block_size > self.config.block_size:
            raise ValueError(f"cannot crop block_size to {block_size}: the model's is only {self.config.block_size}")
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    def grow_vocab(self, vocab_size):
        # model surgery to add tokens (a chat's special tokens) after the vocabulary: the new rows start at
        # the mean embedding, a token like the average one rather than noise, and the tied lm_head follows
        old = self.transformer.wte.weight
        if vocab_size < old.size(0):
            raise ValueError(f"cannot grow vocab_size to {vocab_size}: the model's is already {old.size(0)}")
        with torch.no_grad():
            new = torch.cat([old, old.mean(0, keepdim=True).expand(vocab_size - old.size(0), -1)])
        self.config.vocab_size = vocab_size
        self.lm_head.weight = nn.Parameter(new, requires_grad=old.requires_grad)
        self.transformer.wte.weight = self.lm_head.weight
        self.transformer.wte.num_embeddings = self.lm_head.out_features = vocab_size

    @classmethod
    def from_pretrained(cls, model_type, override_args=None, local_only=False):
        """ OpenAI's GPT-2 ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl') from the Hugging Face hub (or
        its local cache only, with local_only), or a directory written by GPT2LMHeadModel.save_pretrained. """
        override_args = override_args or {}  # default to empty dict
        # only dropout can be overridden see more notes below
        bad = set(override_args) - {'dropout'}
        if bad:
            raise ValueError(f"cannot override {', '.join(sorted(bad))} of a pretrained model: only dropout")
        is_local = os.path.isdir(model_type)
        if not is_local and model_type not in GPT2_SIZES:
            raise ValueError(f"unknown pretrained model '{model_type}': use one of {', '.join(GPT2_SIZES)} "
                             f"or a local Hugging Face GPT-2 directory")
        from transformers import GPT2LMHeadModel
        rank0 = int(os.environ.get('RANK', 0)) == 0  # torchrun: print once, not once per process
        if rank0:
            print(f"loading weights from pretrained gpt: {model_type}")
        try:
            model_hf = GPT2LMHeadModel.from_pretrained(model_type, dtype=torch.float32, local_files_only=local_only)
        except OSError as e:
            where = 'the directory' if is_local else 'the Hugging Face hub (no network?)'
            raise OSError(f"could not fetch the '{model_type}' weights from {where}: "
                               f"{str(e).splitlines()[0].rstrip('.')}; pass a local GPT-2 directory instead") from None
        hf = model_hf.config
        if hf.scale_attn_by_inverse_layer_idx or hf.reorder_and_upcast_attn or not hf.scale_attn_weights:
            raise ValueError(f"{model_type}: attention scaling variants of GPT2Config are not supported")
        if hf.activation_function not in HF_ACTIVATIONS:
            raise ValueError(f"{model_type}: activation_function '{hf.activation_function}' is not supported")
        # what GPT can't hold would load without an error and give other logits: refuse it
        unlike = [f"{k}={v!r} (ours: {ours!r})" for k, v, ours in [
            ('layer_norm_epsilon', hf.layer_norm_epsilon, 1e-5), ('n_inner', hf.n_inner or 4 * hf.n_embd, 4 * hf.n_embd),
            ('tie_word_embeddings', hf.tie_word_embeddings, True)] if v != ours]
        if unlike:
            raise ValueError(f"{model_type}: its GPT2Config has {', '.join(unlike)}, which this GPT does not support")
        config_args = dict(n_layer=hf.n_layer, n_head=hf.n_head, n_embd=hf.n_embd, vocab_size=hf.vocab_size,
                           block_size=hf.n_positions, bias=True, activation=HF_ACTIVATIONS[hf.activation_function])
        if 'dropout' in override_args:
            if rank0:
                print(f"overriding dropout rate to {override_args['dropout']}")
            config_args['dropout'] = override_args['dropout']
        model = GPT(GPTConfig(**config_args))
        sd = model.state_dict()
        sd_hf = model_hf.state_dict()
        sd_keys_hf = [k for k in sd_hf if not k.endswith(('.attn.masked_bias', '.attn.bias'))]  # buffers
        missing = set(sd) - set(sd_keys_hf) - {'transformer.wte.weight'}  # wte is tied to lm_head
        if missing:
            raise ValueError(f"{model_type}: keys missing from the Hugging Face state dict: {sorted(missing)[:5]}")
        with torch.no_grad():
            for k in sd_keys_hf:
                if k not in sd:
                    continue
                src = sd_hf[k].t() if k.endswith(HF_CONV1D_WEIGHTS) else sd_hf[k]
                assert src.shape == sd[k].shape, f"{k}: {tuple(src.shape)} vs {tuple(sd[k].shape)}"
                sd[k].copy_(src)
        return model


class Bigram(LanguageModel):
    """ The lecture's baseline: each token looks up the logits of the next one in a (V, V) table. """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.vocab_size)
        torch.nn.init.normal_(self.token_embedding_table.weight, mean=0.0, std=0.02)  # loss starts at ~ln(V)

    def forward(self, idx, targets=None):
        if targets is None:
            idx = idx[:, [-1]]  # only the last token's prediction is needed
        logits = self.token_embedding_table(idx)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def crop_block_size(self, block_size):
        self.config.block_size = block_size  # a bigram has no context to crop

    def flops_per_token(self):
        return None  # a table lookup, no matmul: 6N would count a (V, V) product it never does


def build_model(config):
    return Bigram(config) if config.model_type == 'bigram' else GPT(config)


# -----------------------------------------------------------------------------
# LoRA (Hu et al. 2021): model surgery that swaps chosen nn.Linear modules for a frozen copy plus a
# trainable low-rank update, like crop_block_size swaps the position table. forward is untouched.

LORA_TARGETS = ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj')  # names inside a Block


class LoRALinear(nn.Module):
    """ y = base(x) + (alpha / rank) * B(A(dropout(x))), with base frozen, A random and B zero. """

    def __init__(self, base, rank, alpha, dropout=0.0):
        super().__init__()
        self.base = base.requires_grad_(False)
        like = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **like))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **like))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear inits its weight
        self.scaling = alpha / rank
        self.lora_dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.base(x) + (self.lora_dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling

    def merged(self):
        """ The plain nn.Linear computing the same function. """
        with torch.no_grad():
            self.base.weight += (self.lora_B @ self.lora_A) * self.scaling
        return self.base.requires_grad_(True)


def apply_lora(model, rank, alpha, dropout=0.0, targets=('attn.c_attn', 'attn.c_proj')):
    """ Freeze the model and give each Linear named in targets a LoRA adapter. """
    if not isinstance(model, GPT):
        raise ValueError("LoRA needs model_type='gpt': a bigram model has no Linear layers to adapt")
    targets = tuple(dict.fromkeys(targets))  # a target named twice would wrap its adapter in another
    bad = set(targets) - set(LORA_TARGETS)
    if bad or not targets:
        raise ValueError(f"unknown lora targets {sorted(bad) or '(none)'}: choose from {', '.join(LORA_TARGETS)}")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("the model already has LoRA adapters: merge_lora(model) first")
    width = model.config.n_embd
    if not isinstance(rank, int) or not 0 < rank <= width:
        raise ValueError(f"lora_rank={rank} must be between 1 and the layer width n_embd={width}")
    model.requires_grad_(False)
    for block in model.transformer.h:
        for target in targets:
            parent, name = target.split('.')
            parent = getattr(block, parent)
            setattr(parent, name, LoRALinear(getattr(parent, name), rank, alpha, dropout))
    return model


def merge_lora(model):
    """ Fold every adapter into its base weight: the model becomes a plain GPT again. """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    return model.requires_grad_(True)
