# the lecture's GPT ("Let's build GPT: from scratch, in code, spelled out."), scaled to the lecture's
# small CPU hyperparameters, on character-level tiny shakespeare; its baseline is config/train_bigram_char.py.
# $ python data/shakespeare_char/prepare.py
# $ python train.py config/train_minigpt_char.py
# $ python sample.py --out_dir=out-minigpt-char

out_dir = 'out-minigpt-char'
eval_interval = 100
eval_iters = 200
log_interval = 100
always_save_checkpoint = False # only when val improves

wandb_log = False # override via command line if you like
wandb_project = 'shakespeare-char'
wandb_run_name = 'minigpt'

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 16
block_size = 32 # context of up to 32 previous characters

# the lecture's choices: ReLU feed-forward (4 * n_embd wide), biases, no dropout
n_layer = 4
n_head = 4
n_embd = 64
dropout = 0.0
bias = True
activation = 'relu'

learning_rate = 1e-3 # the lecture's hyperparameters, at a constant learning rate
max_iters = 5000
decay_lr = False
warmup_iters = 0

compile = False # a quick run: no time spent compiling
