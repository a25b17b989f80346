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
# Memory (`python bench.py --plan`, BENCHMARKS.md "Memory"; activations measured on the CPU, the rest a
# formula with 15% headroom, 0.5 GiB CUDA context and 0.5 GiB of NCCL buffers assumed): 16 plans to 8.2 GiB
# per GPU in fp16 (B 9.1, C 5.2); the largest power of two for a 16 GB V100 is 32 (A and B, eager; 64 for C),
# for a 32 GB V100 64. 32 would halve the accumulation to 2; unmeasured on the V100: preflight.py's memory
# row measures it with DDP in place.
batch_size = 16
batch_tokens = 524288

# optimizer and schedule, chosen from the recipe study (BENCHMARKS.md, "Recipe") and the papers.
# AdamW, not Muon (BENCHMARKS.md, "Recipe", the curve): on a 1.6M-parameter model, each at its best LR,
# Muon's gain fell from 0.10-0.12 nats at 0.03-0.5 tokens/parameter to 0.050 at 2.1 and, two seeds each,
# 0.011 at 8.3, where one seed alone moves up to 0.025 and WebText favours AdamW by 0.08; the gain's trend
# crosses zero near 100 tokens/parameter, far below our ~2,500 (Wen et al. 2025 expect ~1.1x there). torch's bf16
# Newton-Schulz on a V100 is unmeasured (docs/recipe.md). To try it: --optimizer=muon (muon_lr ~0.003-0.01
# for long runs, the curve's best fell with steps) after `bench.py --compare=optimizers` on the V100.
optimizer = "adamw"
# small models take a higher peak LR than GPT-3's 6e-4 for 125M (Pythia-70M used 1e-3); the study's best
# (3e-3) was at d 128 and a 1K-token batch, which does not transfer to d 320 at 0.5M tokens, so 1e-3 stays
learning_rate = 1e-3
min_lr = 1e-4  # 10% of peak at the deadline (Chinchilla's recipe)
warmup_iters = 1000  # ~0.6% of the ~170K steps the budget buys: enough for Adam's moments, little lost
# cosine, not WSD: the study split (WSD 0.05 better on held-out Wikipedia, 0.06 worse on WebText), and
# Hägele et al. 2024 find the two equal at a 20% decay; cosine needs no decay-length choice
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
