# Supervised fine-tuning (SFT) of option A's 23-hour checkpoint on conversations, so that it answers
# in turns (on one GPU, python train.py in place of torchrun):
#   python prepare_chat.py --hub=smoltalk --hub_subset=all --data_dir=data/smoltalk
#   torchrun --standalone --nproc_per_node=8 train.py config/sft_option_a.py
#   python chat.py --out_dir=out-sft-option-a
# smoltalk's everyday-conversations subset alone (--hub_subset everyday-conversations, ~2K
# conversations) suits a small model but is over in a few steps; the whole set gives the run
# something to learn from.
# How long: docs/sft.md, "Training" (a projection from BENCHMARKS.md's, not a measurement).

init_from = "out-option-a"  # the pretrained weights; the optimizer and schedule start fresh
out_dir = "out-sft-option-a"
data_dir = "data/smoltalk"  # made by prepare_chat.py (meta.json "kind": "chat")

# option A's architecture is train.py's default; block_size must be the pretrained model's
block_size = 1024
batch_size = 16
batch_tokens = 131072  # 8 GPUs x 16 x 1024: one micro-step each; 8 on one GPU

# fine-tuning: a lower peak than pretraining's 1e-3 (the weights are already good), a short warmup,
# cosine to 10%
learning_rate = 3e-4
min_lr = 3e-5
warmup_iters = 100
lr_schedule = "cosine"
weight_decay = 0.0
max_iters = 2000
time_budget_hours = 1.0  # a cap, far above the projection; the run ends at max_iters
eval_interval = 250
eval_iters = 20  # the first 320 val conversations (20 batches of 16), one a row
log_interval = 50
