# The demo's fine-tuning on conversations (bash speedrun.sh --demo): config/demo.py's model on the
# HH-RLHF and Chitchat slice that ships in assets/demo/, towards the form of a turn and its end.
#   python prepare_chat.py --input assets/demo/chat.jsonl --data_dir=data/demo_chat --block_size=128
#   python train.py config/sft_demo.py
init_from = "out-demo/base"
out_dir = "out-demo/sft"
data_dir = "data/demo_chat"

# config/demo.py's architecture: init_from's checkpoint must have it
n_layer = 2
n_head = 2
n_embd = 64
block_size = 128
loss_chunk = 512
batch_size = 8
batch_tokens = 1024

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
