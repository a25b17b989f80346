# Supervised fine-tuning (SFT) of config/smoke.py's checkpoint on real conversations, on a CPU in a
# minute or two:
#   python train.py config/smoke.py                     # the base model, out-smoke
#   python prepare_chat.py --input ../shared/data/chat/hh_helpful_base_test.jsonl \
#       ../shared/data/chat/chitchat.jsonl --data_dir=data/chat_smoke --block_size 128
#   python train.py config/sft_smoke.py                 # the chat-tuned model, out-sft-smoke
#   python chat.py --out_dir=out-sft-smoke
# The loop, resume, DDP and time budget are train.py's own; only the data (conversations, with the
# loss on the assistant's tokens) and the start (init_from: the base model's weights, a fresh
# optimizer) differ.
# config/smoke.py's settings first, so the architecture is the one init_from's checkpoint has; the
# lines below are fine-tuning's own.
from pathlib import Path

exec(Path(__file__).with_name("smoke.py").read_text())

init_from = "out-smoke"
out_dir = "out-sft-smoke"
data_dir = "data/chat_smoke"  # made by prepare_chat.py (meta.json "kind": "chat")
batch_size = 8  # 8 x 128 = batch_tokens: one micro-step per optimizer step on one process

# fine-tuning moves the weights less: a third of smoke's peak, a short warmup, no weight decay
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 10
weight_decay = 0.0
max_iters = 100  # 102,400 tokens, ~0.2 epochs of the 465K-token train split
time_budget_hours = 0.0
eval_interval = 50
eval_iters = 10  # the first 80 val conversations, one a row
log_interval = 10

device = "cpu"
compile = False
