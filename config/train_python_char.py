# a small character-level model of Python source code, CPU-friendly like train_shakespeare_char_cpu.py;
# the data is built offline from the Python standard library of the interpreter you run.
# $ python data/python_char/prepare.py
# $ python train.py config/train_python_char.py
# $ python sample.py --out_dir=out-python-char --start="def "

out_dir = 'out-python-char'
eval_interval = 500
eval_iters = 20 # windows spread evenly over each split, the same ones at every evaluation
log_interval = 50
always_save_checkpoint = False # only when val improves

wandb_log = False # override via command line if you like
wandb_project = 'python-char'
wandb_run_name = 'mini-gpt'

dataset = 'python_char'
gradient_accumulation_steps = 1
batch_size = 8 # small batches, many steps (see train_shakespeare_char_cpu.py)
block_size = 128 # context of up to 128 previous characters (a few lines of code)

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

device = 'cpu' # remove to use a GPU when there is one
compile = False # here matmuls and SDPA attention dominate: compiling costs more time than it saves
