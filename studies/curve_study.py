# The Muon-against-AdamW curve (BENCHMARKS.md, "Recipe"): one model small enough that the shared
# Wikipedia's 13.5M train tokens, never repeated, reach the largest data-to-model ratio a 2-core CPU
# allows.
#   python prepare.py --input ../shared/data/wikipedia --data_dir=data/wikipedia --val_fraction 0.05
#   bash studies/study_curve.sh
# Option A's block (RMSNorm, RoPE, SwiGLU, tied, no biases), 2 layers of 32: 1,633,088 parameters
# at vocab 50,257, 1,608,224 of them the embedding, 24,864 in the blocks. 13.5M tokens are 8.3 per
# parameter, 544 per non-embedding parameter (option A's 23-hour run: ~2,500 and ~4,600).
# Chinchilla's ratios count every parameter, Kaplan's the non-embedding ones (Pearce & Song 2024);
# the curve is drawn against both.

out_dir = "out-curve/run"
data_dir = "data/wikipedia"

n_layer = 2
n_head = 1
n_embd = 32
block_size = 256
batch_size = 4
batch_tokens = 1024  # 1K-token steps, as in the first study: the ratios move by steps, not batch

learning_rate = 3e-3
min_lr = 3e-4  # 10% of the peak, as option A
warmup_iters = 10  # study_curve.sh sets 10% of each run's steps
max_iters = 52
time_budget_hours = 0.0  # equal tokens: max_iters ends the run
eval_interval = 1000000  # study_curve.sh sets a few evals a run
eval_iters = 40  # 40 x 4 x 256 = 41K held-out tokens, the same windows at every eval, in every run
log_interval = 50

device = "cpu"
dtype = "float32"  # exact, and faster than bf16 autocast on the study's CPU (BENCHMARKS.md)
compile = False
