"""
Write a train.py checkpoint as a Hugging Face GPT-2 directory, loadable with
GPT2LMHeadModel.from_pretrained(dir) (or GPT.from_pretrained(dir) here):
$ python export.py --out_dir=out-shakespeare --to=hf-shakespeare
A LoRA checkpoint is merged into its base weights first; a QLoRA one into its dequantized NF4 base. HF's GPT-2 always has biases, so a
bias=False model gets zero ones, which compute the same function.
The tokenizer of the run's dataset (tokenizer.py: characters, a trained BPE or GPT-2's) is written beside
the model, so that AutoTokenizer.from_pretrained(dir) and pipeline('text-generation', model=dir) load the
directory; when it can't be (the dataset folder is not here, it doesn't fit the model), a note says why. The
dataset's own tokenizer files (meta.pkl, bpe.json) are copied too: `sample.py --init_from=<dir>` and chat.py read them. An
instruction-tuned model's tokenizer gets the chat template (apply_chat_template gives the ids of training and
chat.py), and its generate() stops at <|assistant_end|> as well as <|endoftext|>.
"""
import os
import shutil

import torch

import runtime
from chat_template import HF_TEMPLATE, is_instruction_data
from data_io import fsync_path, fsync_tree
from model import HF_ACTIVATIONS, HF_CONV1D_WEIGHTS, merge_lora
from quantize import dequantize
from tokenizer import TOKENIZER_FILES, load_tokenizer

# -----------------------------------------------------------------------------
out_dir = 'out' # directory holding the ckpt.pt (or, from an FSDP run, ckpt.dcp) written by train.py
to = '' # directory to write the Hugging Face model into (created)
force = False # replace `to` when it holds an earlier export (its config.json)
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read()) # overrides from command line or config file
# -----------------------------------------------------------------------------

runtime.errors_as_one_line()
runtime.require(to, "no output directory: pass --to=<dir> for the Hugging Face model")
to = os.path.expanduser(to) # the shell leaves --to=~/x as it is: the home folder, not a folder named '~' here
runtime.require(not os.path.exists(to) or os.path.isdir(to), f"{to} exists and is not a directory: pass another --to")
runtime.require(not (os.path.isdir(to) and os.listdir(to)) or force,
                f"{to} is not empty: pass another --to, or --force=True to replace it")
# replacing `to` deletes it: never the checkpoint being exported, nor a folder holding it
source = os.path.realpath(out_dir)
runtime.require(os.path.commonpath([source, os.path.realpath(to)]) != os.path.realpath(to),
                f"--to={to} holds the checkpoint's out_dir {out_dir}, which replacing it would delete: pass another --to")
# and nothing but an earlier export (a prepared dataset, say, is no model to replace)
runtime.require(not (os.path.isdir(to) and os.listdir(to)) or os.path.isfile(os.path.join(to, 'config.json')),
                f"{to} is not empty and holds no earlier export (no config.json), which --force would delete: "
                f"pass another --to")

model, checkpoint = runtime.load_checkpoint(runtime.checkpoint_path(out_dir)) # ckpt.pt, or an FSDP run's ckpt.dcp
cfg = model.config
runtime.require(cfg.model_type == 'gpt',
                f"cannot export a {cfg.model_type} model: GPT2LMHeadModel represents only model_type='gpt'")
if checkpoint.get('quantize'): # HF's GPT-2 has full-precision weights: what the 4-bit codes stand for
    dequantize(model)
    print(f"dequantized the {checkpoint['quantize']} base weights")
if checkpoint.get('lora'):
    merge_lora(model)
    print(f"merged the LoRA adapters (rank {checkpoint['lora']['rank']}) into the base weights")

from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402  (slow import, only once the input is good)

# the dataset's tokenizer, as transformers' PreTrainedTokenizerFast
data_dir = None
try:
    data_dir = runtime.dataset_dir(checkpoint, strict=True) # not GPT-2's BPE for another dataset's model
    tok = load_tokenizer(data_dir)
    tok.check_model(cfg.vocab_size)
    hf_tokenizer = tok.to_hf(model_max_length=cfg.block_size)
except (OSError, ValueError) as e:
    tok, hf_tokenizer = None, None
    print(f"note: no tokenizer written beside the model ({runtime.first_line(e)}); AutoTokenizer and pipeline() "
          f"won't load {to} until one is")
# its <|endoftext|>; without a tokenizer, GPT-2's when the vocabulary is GPT-2's (a character vocabulary has none)
eot = tok.special_tokens.get('<|endoftext|>') if tok else 50256 if cfg.vocab_size > 50256 else None
chat = tok is not None and is_instruction_data(data_dir) # instruction-tuned
if chat: # apply_chat_template renders as training did, and generate() stops at the end of the reply too
    hf_tokenizer.chat_template = HF_TEMPLATE
hf_config = GPT2Config(
    vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
    n_head=cfg.n_head, activation_function=next(hf for hf, ours in HF_ACTIVATIONS.items() if ours == cfg.activation),
    resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, layer_norm_epsilon=1e-5,
    bos_token_id=eot, eos_token_id=eot)
model_hf = GPT2LMHeadModel(hf_config)
if chat:
    model_hf.generation_config.eos_token_id = [eot, tok.special_id('<|assistant_end|>')]
# the parameter names are the same; HF's Conv1D weights are transposed
sd = {k: v.t() if k.endswith(HF_CONV1D_WEIGHTS) else v for k, v in model.state_dict().items()}
if not cfg.bias:
    sd.update({k: torch.zeros_like(v) for k, v in model_hf.state_dict().items() if k.endswith('.bias')})
model_hf.load_state_dict(sd)  # strict: every tensor has its counterpart

# write next to the destination and rename into place, so a failure leaves no half-written model
path = os.path.abspath(to)
tmp = os.path.join(os.path.dirname(path), f'.{os.path.basename(path)}.tmp-{os.getpid()}')
os.makedirs(tmp)
try:
    model_hf.save_pretrained(tmp)
    if hf_tokenizer is not None:
        hf_tokenizer.save_pretrained(tmp)
        for name in TOKENIZER_FILES: # the dataset's own, which sample.py and chat.py read with --init_from=<to>
            if data_dir and os.path.isfile(os.path.join(data_dir, name)):
                shutil.copy(os.path.join(data_dir, name), tmp)
    fsync_tree(tmp)  # on the disk before it takes the name: a power cut can't leave unwritten files under it
    replacing = os.path.isdir(to) and os.listdir(to)
    if replacing:  # --force: move the old one aside until the new one is in place
        os.rename(to, tmp + '-old')
    os.rename(tmp, to)  # also replaces an empty directory
    fsync_path(os.path.dirname(path))  # the renames, durable
    if replacing:
        shutil.rmtree(tmp + '-old')
except BaseException as e:
    shutil.rmtree(tmp, ignore_errors=True)
    if type(e).__name__ == 'SafetensorError':  # safetensors' error for a write that failed (a full disk)
        raise OSError(f"could not write {to} ({runtime.first_line(e)}): free some space or pass another --to") from None
    raise
print(f"wrote {to}: GPT2LMHeadModel with {model_hf.num_parameters():,} parameters, "
      f"activation_function={hf_config.activation_function}, vocab_size={cfg.vocab_size}")
if tok is not None:
    print(f"wrote its tokenizer beside it ({tok.describe()}, {tok.vocab_size:,} tokens): "
          f"AutoTokenizer.from_pretrained('{to}') loads it" + (", with its chat template" if chat else ""))
