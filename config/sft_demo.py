# The demo's fine-tuning on conversations (bash speedrun.sh --demo): config/demo.py's model on the
# HH-RLHF and Chitchat slice that ships in assets/demo/, towards the form of a turn and its end.
#   python prepare_chat.py --input assets/demo/chat.jsonl --data_dir=data/demo_chat --block_size=128
#   python train.py config/sft_demo.py
# config/demo.py's settings first, so the architecture is the one init_from's checkpoint has; the
# lines below are fine-tuning's own.
from pathlib import Path

exec(Path(__file__).with_name("demo.py").read_text())

init_from = "out-demo/base"
out_dir = "out-demo/sft"
data_dir = "data/demo_chat"

learning_rate = 1e-3  # a third of pretraining's peak: fine-tuning moves the weights less
min_lr = 1e-4
warmup_iters = 10
weight_decay = 0.0
max_iters = 150
time_budget_hours = 0.05
eval_interval = 50
eval_iters = 10
log_interval = 10

device = "cpu"
compile = False
