# the lecture's baseline ("Let's build GPT: from scratch, in code, spelled out."): a bigram model on
# character-level tiny shakespeare, each character looking up the logits of the next one in a table.
# $ python data/shakespeare_char/prepare.py
# $ python train.py config/train_bigram_char.py
# $ python sample.py --out_dir=out-bigram-char
# then compare with the lecture's GPT, trained by the same loop on the same data: config/train_minigpt_char.py

out_dir = 'out-bigram-char'
eval_interval = 100
eval_iters = 200
log_interval = 100
always_save_checkpoint = False # only when val improves

wandb_log = False # override via command line if you like
wandb_project = 'shakespeare-char'
wandb_run_name = 'bigram'

dataset = 'shakespeare_char'
model_type = 'bigram'
gradient_accumulation_steps = 1
batch_size = 16
block_size = 32 # a bigram sees one character; this is how many targets each window trains on

learning_rate = 1e-3 # the lecture's hyperparameters, at a constant learning rate
max_iters = 5000
decay_lr = False
warmup_iters = 0

compile = False # nothing to fuse in a table lookup
