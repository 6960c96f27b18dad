# instruction tuning of the quick-start model on the offline demo's tasks (spell, reverse, uppercase, first and
# last letter of a word), on the CPU in a few minutes; loss on the assistant's replies only.
# $ python data/shakespeare_char/prepare.py && python train.py config/train_shakespeare_char_cpu.py
# $ python data/instruct_demo/prepare.py
# $ python train.py config/finetune_instruct_demo.py
# $ python chat.py --out_dir=out-instruct-demo --eval_file=data/instruct_demo/heldout.jsonl --device=cpu

out_dir = 'out-instruct-demo'
init_from = 'out-shakespeare-char-cpu' # the base: its weights (the embedding grown for the chat's tokens)
eval_interval = 250
eval_iters = 20
log_interval = 50
always_save_checkpoint = False # only when val improves

dataset = 'instruct_demo'
gradient_accumulation_steps = 1
batch_size = 16 # rows of 128 tokens, each starting at a conversation: ~4 conversations a row
block_size = 128

learning_rate = 2e-3
max_iters = 1500
lr_decay_iters = 1500
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 50
weight_decay = 0.0 # the new special tokens' embeddings start at the mean: no pull back towards zero

device = 'cpu'
compile = False
