# finetune GPT-2 on tiny shakespeare with LoRA (python data/shakespeare/prepare.py first):
# the base weights stay frozen and only small rank-8 adapters on the attention projections train,
# so gradients and AdamW state exist for the adapters only.
# $ python train.py config/finetune_shakespeare_lora.py
# $ python sample.py --out_dir=out-shakespeare-lora
# init_from may also be a local Hugging Face GPT-2 directory (GPT2LMHeadModel.save_pretrained)
import time

out_dir = 'out-shakespeare-lora'
eval_interval = 5
eval_iters = 40
wandb_log = False # feel free to turn on
wandb_project = 'shakespeare'
wandb_run_name = 'lora-' + str(time.time())

dataset = 'shakespeare'
init_from = 'gpt2' # or gpt2-medium, gpt2-large, gpt2-xl

lora_rank = 8
lora_alpha = 16.0
lora_dropout = 0.05
lora_targets = 'attn.c_attn,attn.c_proj' # add mlp.c_fc,mlp.c_proj to adapt the MLPs too

# only save checkpoints if the validation loss improves
always_save_checkpoint = False

# 1 batch_size * 32 grad_accum * 1024 tokens = 32,768 tokens/iter
batch_size = 1
gradient_accumulation_steps = 32
max_iters = 20

# adapters start at zero and are few: they take a larger learning rate than full finetuning
learning_rate = 3e-4
decay_lr = False
