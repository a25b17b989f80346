# Option A, the default: d_model 320, 16 layers, 5 heads of 64, SwiGLU 854, RMSNorm, RoPE, tied.
# 35,763,840 parameters. Trained on OpenWebText for a 23-hour budget on 8×V100:
#   torchrun --standalone --nproc_per_node=8 train.py config/option_a.py
# Deeper-than-wide at this size: MobileLLM (Liu et al. 2024) found depth beats width below ~125M.

out_dir = "out-option-a"
data_dir = "data/openwebtext"  # made by `python prepare.py`

# model
n_layer = 16
n_head = 5  # heads of 64: the head size GPT-2 and LLaMA use, good for the attention kernels
n_embd = 320
mlp = "swiglu"  # SwiGLU beats GELU at equal parameters (Shazeer 2020)
norm = "rmsnorm"  # cheaper than LayerNorm, same quality (Zhang & Sennrich 2019)
pos_emb = "rope"  # relative positions, no learned table (Su et al. 2021)
block_size = 1024
dropout = 0.0  # single-pass-ish pretraining does not overfit; dropout only slows learning

# batch: 2^19 ≈ 0.5M tokens per optimizer step (GPT-3 small's batch); with 8 GPUs × 16 × 1024
# tokens per micro-step that is 4 accumulation steps. The same on any number of GPUs.
batch_size = 16
batch_tokens = 524288

# optimizer: small models take a higher peak LR than GPT-3's 6e-4 for 125M (Pythia-70M used 1e-3)
learning_rate = 1e-3
min_lr = 1e-4  # 10% of peak at the deadline (Chinchilla's recipe)
warmup_iters = 1000
lr_schedule = "cosine"
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

# the budget: 23 h of the 24 h allowance, leaving an hour for start-up, evals and slack.
# The schedule follows the clock: the LR reaches min_lr at the deadline however fast the GPUs are.
# Projected (BENCHMARKS.md, at an assumed 30% MFU): ~90B tokens, ~10 passes over all of OpenWebText
# (~9B tokens). Past ~4 passes repeated tokens are worth less (Muennighoff et al. 2023) but still
# not nothing, so prepare the whole of OpenWebText (`python prepare.py`) and use the whole budget.
time_budget_hours = 23.0
max_iters = 0  # no step limit: the time budget ends the run
eval_interval = 1000
eval_iters = 100
log_interval = 50
