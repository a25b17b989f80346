# A tiny model that trains on a CPU in minutes, on the offline OpenWebText sample:
#   python prepare.py --input ../shared/data/openwebtext_sample --data_dir=data/owt_sample
#   python train.py config/smoke.py
#   torchrun --standalone --nproc_per_node=2 train.py config/smoke.py  # same batch on 2 processes
# For checking that everything runs end to end, not for quality.

out_dir = "out-smoke"
data_dir = "data/owt_sample"

n_layer = 2
n_head = 2
n_embd = 64
block_size = 128
batch_size = 4
batch_tokens = 1024  # 2 micro-steps of 4x128 on one process, 1 on each of 2 (--nproc_per_node=2)
loss_chunk = 512

learning_rate = 3e-3  # tiny models take large steps
min_lr = 3e-4
warmup_iters = 20
max_iters = 150
time_budget_hours = 0.0  # no time limit: max_iters ends the run
eval_interval = 50
eval_iters = 10
log_interval = 10

device = "cpu"
compile = False
