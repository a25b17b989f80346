# Option A's 8-GPU run, rehearsed on a CPU under torchrun with 8 gloo ranks (docs/training.md,
# "Rehearsal"): every setting of config/option_a.py except those below, which a CPU cannot afford:
#   bash tests/rehearse.sh  # the whole rehearsal: budget, preemption, resume on 8 and on 4 ranks
#   torchrun --standalone --nproc_per_node=8 train.py config/option_a.py tests/rehearsal.py
# test_train.py checks that this file changes nothing else of option A's.

out_dir = "out-rehearsal"
# python prepare.py --input ../shared/data/openwebtext_sample --data_dir=data/owt_sample
data_dir = "data/owt_sample"

# the model shrinks (option A's block, heads of 64 as there): 2 layers of 64 instead of 16 of 320
n_layer = 2
n_head = 1
n_embd = 64
block_size = 256  # a quarter of option A's window: each of 8 ranks gets a quarter of a core
# the batch keeps option A's shape: 4 accumulation steps on 8 ranks (8 x 1 x 256 x 4 tokens)
batch_size = 1
batch_tokens = 8192

# the clock: a complete run, schedule and all, in minutes instead of 23 hours
time_budget_hours = 0.02  # 72 s
warmup_iters = 2
eval_interval = 4
eval_iters = 8  # one batch a rank
log_interval = 1

device = "cpu"
dtype = "float16"  # what dtype=auto picks on a V100: fp16 autocast with GradScaler
