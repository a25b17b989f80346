# The demo's pretraining (bash speedrun.sh --demo): config/smoke.py's tiny model on the
# TinyShakespeare that ships in assets/demo/, on a CPU in minutes: the pipeline working and the loss
# falling, not quality.
#   python prepare.py --input assets/demo/tinyshakespeare.txt --data_dir=data/demo
#   python train.py config/demo.py
out_dir = "out-demo/base"
data_dir = "data/demo"

n_layer = 2
n_head = 2
n_embd = 64
block_size = 128
batch_size = 8
batch_tokens = 1024
loss_chunk = 512

learning_rate = 3e-3  # tiny models take large steps
min_lr = 3e-4
warmup_iters = 20
max_iters = 500  # ~1.7 epochs of the 302K training tokens
time_budget_hours = 0.1  # a cap for slow or busy CPUs: whichever comes first ends the run
eval_interval = 100
eval_iters = 10
log_interval = 20

device = "cpu"
compile = False
