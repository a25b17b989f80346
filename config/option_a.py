# Option A, the default: d_model 320, 16 layers, 5 heads of 64, SwiGLU 854, RMSNorm, RoPE, tied.
# 35,763,840 parameters, for a 23-hour budget on 8×V100:
#   torchrun --standalone --nproc_per_node=8 train.py config/option_a.py
# One short reason beside each setting; the evidence is in docs/recipe.md, "Option A's settings".

out_dir = "out-option-a"
data_dir = "data/openwebtext"  # all of it (`python prepare.py`): the run makes several passes

n_layer = 16  # deeper than wide: below ~125M depth beats width (MobileLLM, Liu et al. 2024)
n_head = 5  # heads of 64: the head size GPT-2 and LLaMA use, good for the attention kernels
n_embd = 320
mlp = "swiglu"  # SwiGLU beats GELU at equal parameters (Shazeer 2020)
norm = "rmsnorm"  # cheaper than LayerNorm, same quality (Zhang & Sennrich 2019)
pos_emb = "rope"  # relative positions, no learned table (Su et al. 2021)
block_size = 1024
dropout = 0.0  # 36M parameters do not memorize 9B tokens in ~10 passes: dropout would only
              # slow learning (nanoGPT, LLaMA and Pythia pretrain without it)

batch_size = 16  # 4 accumulation steps of 16 × 1024 on 8 GPUs (BENCHMARKS.md, "Memory")
batch_tokens = 524288  # 2^19 tokens a step, GPT-3 small's

optimizer = "adamw"  # Muon's edge fades with tokens per parameter (BENCHMARKS.md, "The curve")
learning_rate = 1e-3  # small models take more than GPT-3's 6e-4 (Pythia-70M used 1e-3)
min_lr = 1e-4  # 10% of peak at the deadline (Chinchilla's recipe)
warmup_iters = 1000  # a small share of the budget's steps: enough for Adam's moments
lr_schedule = "cosine"  # as good as WSD at a 20% decay (Hägele et al. 2024), no decay to size
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

time_budget_hours = 23.0  # of the 24 h allowance: an hour for start-up, evals and slack
max_iters = 0  # no step limit: the schedule follows the clock, reaching min_lr at the deadline
eval_interval = 1000
eval_iters = 100
log_interval = 50
