# The recipe study (BENCHMARKS.md, "Recipe"): option A's block, small enough to compare optimizers
# and schedules on a 2-core CPU, on data that never repeats (~14M tokens of Wikipedia, 188 held-out
# articles as val):
#   python prepare.py --input ../shared/data/wikipedia --data_dir=data/wikipedia --val_fraction 0.05
#   OMP_NUM_THREADS=1 python train.py studies/recipe_study.py --out_dir=out-recipe/adamw-3e-3 \
#       --learning_rate=3e-3
# 300 steps x 1,024 tokens = 307K tokens, 2% of the data, never repeated (timings: BENCHMARKS.md).

out_dir = "out-recipe/run"
data_dir = "data/wikipedia"

n_layer = 4
n_head = 2  # heads of 64, as option A
n_embd = 128
block_size = 256
batch_size = 4
batch_tokens = 1024
loss_chunk = 1024

learning_rate = 3e-3
min_lr = 3e-4  # 10% of the peak, as option A
warmup_iters = 30  # 10% of the run
max_iters = 300
time_budget_hours = 0.0  # equal tokens: max_iters ends the run
eval_interval = 100
eval_iters = 40  # 40 x 4 x 256 = 41K held-out tokens, the same windows at every eval
log_interval = 10

device = "cpu"
dtype = "bfloat16"  # faster than fp32 on the study's CPU (AMX), the same loss (BENCHMARKS.md)
compile = False
