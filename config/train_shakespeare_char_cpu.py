# the quick start for a machine without a GPU: a small character-level shakespeare model trained on
# the CPU in a few minutes.
# $ python data/shakespeare_char/prepare.py
# $ python train.py config/train_shakespeare_char_cpu.py
# $ python sample.py --out_dir=out-shakespeare-char-cpu

out_dir = 'out-shakespeare-char-cpu'
eval_interval = 500
eval_iters = 20 # windows spread evenly over each split, the same ones at every evaluation
log_interval = 50
always_save_checkpoint = False # only when val improves

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 8 # small batches, many steps: at this size more updates beat bigger ones
block_size = 128 # context of up to 128 previous characters

# a small GPT, sized for minutes of CPU time
n_layer = 3
n_head = 4
n_embd = 128
activation = 'gelu_exact' # the erf GELU: aten's CPU kernel for it is faster than the tanh approximation's
dropout = 0.0

learning_rate = 4e-3 # a model this small takes a high learning rate
max_iters = 2500
lr_decay_iters = 2500 # make equal to max_iters usually
min_lr = 1e-4 # decaying far below learning_rate/10 pays off in a run this short
beta2 = 0.99 # make a bit bigger because number of tokens per iter is small
warmup_iters = 100

device = 'cpu'
compile = False # here matmuls and SDPA attention dominate: compiling costs more time than it saves
