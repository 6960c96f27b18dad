# evaluate the base gpt2-large on OpenWebText
# n_layer=36, n_head=20, n_embd=1280
# 774M parameters (all of them, as GPT.get_num_params(non_embedding=False) counts)
batch_size = 8
eval_iters = 500 # use more iterations to get good estimate
eval_only = True
wandb_log = False
init_from = 'gpt2-large'
