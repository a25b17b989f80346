"""
Train the GPT, on one process or on many GPUs with DDP:

    python train.py config/smoke.py                                       # one CPU process, minutes
    torchrun --standalone --nproc_per_node=8 train.py config/option_a.py  # 8 GPUs, the 23-hour run
    torchrun --standalone --nproc_per_node=8 train.py config/option_a.py --init_from=resume

Settings are the globals below; a config file and --key=value overrides change them
(configurator.py). The run ends at max_iters or at the time budget, whichever comes first, always
after a final eval and checkpoint. A checkpoint (out_dir/ckpt.pt) is written at every eval, replaced
atomically, and only while the loss is healthy; SIGTERM, SIGINT or SIGUSR1 finish the step, write
one and exit.

nanoGPT's train.py is the shape of this file:
https://github.com/karpathy/nanoGPT/blob/master/train.py
"""

import contextlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import fields
from functools import partial

_stop_signal = None  # the signal noted, if any (a leading _: not a setting)
# kill / Ctrl-C / a cluster's preemption warning
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def on_signal(signum, frame):
    # Only note it: the loop finishes the step, all ranks agree, then the checkpoint is written.
    global _stop_signal
    _stop_signal = signum


# Before anything slow (importing torch takes seconds on every rank): a signal during start-up must
# stop the run as one mid-run does, not kill the rank it lands on and with it the whole torchrun.
for _sig in STOP_SIGNALS:
    signal.signal(_sig, on_signal)


def hold(point: str) -> None:
    """Testing only: with SMALLGPT_TEST_HOLD=point:rank, that rank writes its pid to the file
    SMALLGPT_TEST_HOLD_FILE at point and waits there until the file is removed or a signal is noted:
    test_train.py signals that moment."""
    if os.environ.get("SMALLGPT_TEST_HOLD") != f"{point}:{os.environ.get('RANK', '0')}":
        return
    path = os.environ["SMALLGPT_TEST_HOLD_FILE"]
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + 60
    while os.path.exists(path) and _stop_signal is None and time.monotonic() < deadline:
        time.sleep(0.01)


import torch  # noqa: E402 (after the signal handlers)
import torch.distributed as dist  # noqa: E402

import common  # noqa: E402
import compare  # noqa: E402
import report  # noqa: E402
from common import die  # noqa: E402
from configurator import configure  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

hold("startup")

# ---------------------------------------------------------------- settings
# I/O
out_dir = "out"
data_dir = "data/openwebtext"
init_from = "scratch"  # 'scratch' (refuses to overwrite a checkpoint in out_dir)
                       # | 'resume' (continue it) | PATH
# PATH: a checkpoint (or an out_dir holding one) whose weights start this run, with a fresh
# optimizer and schedule: fine-tuning, e.g. on conversations (config/sft_smoke.py). The architecture
# settings must match it.
eval_interval = 1000  # optimizer steps between evals; each eval also writes the checkpoint
eval_iters = 100  # val batches per eval: the same batches every time, split across ranks
hellaswag_every_eval = 0  # examples; 0 = off.
                          # HellaSwag (eval.py) on the first N at each eval, logged with the loss
hellaswag_file = ""  # for hellaswag_every_eval: a local copy;
                     # "" = eval.py's download of the official file
log_interval = 50  # optimizer steps between log lines
wandb_log = False  # also send the metrics to Weights & Biases (pip install wandb)
wandb_project = "smallgpt"
wandb_run_name = "run"
# data
batch_size = 16  # micro-batch per GPU, in sequences
batch_tokens = 524288  # global tokens per optimizer step, the same on any number of GPUs
# model: every GPTConfig field (model.py has the reasons); the defaults are option A
block_size = 1024
vocab_size = 50257
n_layer = 16
n_head = 5
n_embd = 320
mlp = "swiglu"
ffn_hidden = None
ffn_multiple_of = 2
norm = "rmsnorm"
norm_eps = 1e-5
pos_emb = "rope"
rope_theta = 10000.0
bias = False
dropout = 0.0
vocab_multiple_of = 64  # embedding rows padded to a multiple of this, for fast kernels; 1 = none
loss_chunk = 4096  # tokens per chunk of the fused lm_head + cross-entropy; 0 = plain, full logits
# optimizer
optimizer = "adamw"  # 'adamw' | 'muon' (Muon for the blocks' weight matrices, AdamW for the rest:
                     # Jordan et al. 2024)
learning_rate = 1e-3  # AdamW's peak
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip the global gradient norm to this; 0 = off
muon_lr = 0.02  # Muon's peak, on its own scale (an orthogonalised update);
                # the schedule scales it as learning_rate
muon_momentum = 0.95  # Nesterov momentum, Keller Jordan's default
muon_weight_decay = 0.0  # decoupled, lr * wd per step;
                         # modded-nanogpt and nanochat train Muon without it
# learning-rate schedule, on progress = max(step / lr_decay_iters, elapsed / time budget)
lr_schedule = "cosine"  # 'cosine' | 'wsd' (warmup-stable-decay: Hu et al. 2024, MiniCPM)
warmup_iters = 1000  # steps of linear warmup from ~0 to the peak; 0 = none
min_lr = 1e-4  # reached at the end of training
decay_fraction = 0.2  # wsd: the final share of training spent decaying (20% matches cosine:
                      # Hägele et al. 2024)
max_iters = 0  # optimizer steps; 0 = no step limit (then the time budget ends the run)
lr_decay_iters = 0  # steps the schedule spans; 0 = max_iters
                    # (set it to stop early without changing the schedule)
time_budget_hours = 0.0  # wall-clock budget of the whole run, across resumes; 0 = none
# faults
divergence_steps = 10  # stop after this many bad steps in a row: a non-finite loss, or a spike
divergence_ratio = 2.0  # a loss above this multiple of its running level counts as a spike
inject_nan_at_iter = -1  # testing only: from this step on a weight is NaN,
                         # to exercise the divergence guard
# system
device = "auto"  # 'auto' (CUDA when there is a GPU) | 'cpu' | 'cuda';
                 # under torchrun each rank takes its own GPU
dtype = "auto"  # 'auto' (bf16 where supported, fp16 + GradScaler on V100, fp32 on CPU)
                # | float32 | bfloat16 | float16
compile = None  # torch.compile; None = on for GPUs of sm80 and later,
                # off below (common.compile_default) and on CPU
seed = 1337

# ---------------------------------------------------------------- setup
config = configure(globals(), sys.argv[1:], verbose=os.environ.get("RANK", "0") == "0")
ddp = "RANK" in os.environ  # launched by torchrun
rank, local_rank, world_size = ((int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
                                if ddp else (0, 0, 1))
master = rank == 0  # rank 0 logs and writes checkpoints
t_start = time.monotonic()  # the budget counts everything from here, across resumes

# Every setting's range, checked before anything runs: a 0 in the first list would divide by zero or
# stop the run at once, and a negative value would silently mean something else (negative
# warmup_iters make the learning rate negative, a negative time budget is no budget).
# `python train.py --help` shows each setting with its comment.
common.check_ranges(config, dict.fromkeys(
    ("batch_size", "batch_tokens", "block_size", "eval_interval", "eval_iters", "log_interval",
     "divergence_steps", "vocab_multiple_of", "ffn_multiple_of"), 1))
common.check_ranges(config, dict.fromkeys(
    ("max_iters", "lr_decay_iters", "time_budget_hours", "warmup_iters", "weight_decay",
     "grad_clip", "loss_chunk", "hellaswag_every_eval", "seed"), 0))
common.check_optimizer(config)
if not 0 <= min_lr <= learning_rate:
    die(f"min_lr must be between 0 and learning_rate={learning_rate}, got {min_lr}")
if not 0 < decay_fraction <= 1:
    die(f"decay_fraction (the final share of training spent decaying, wsd) must be in (0, 1], "
        f"got {decay_fraction}")
if init_from not in ("scratch", "resume") and not os.path.exists(init_from):
    die(f"init_from='{init_from}' is not 'scratch', 'resume' or an existing checkpoint (a ckpt.pt "
        f"file or the out_dir of a run holding one): pretrain first, e.g. python train.py "
        f"config/smoke.py")
if lr_schedule not in ("cosine", "wsd"):
    die(f"lr_schedule must be 'cosine' or 'wsd', got '{lr_schedule}'")
if max_iters <= 0 and time_budget_hours <= 0:
    die("nothing ends this run: set max_iters or time_budget_hours")
if compile not in (None, True, False):
    die(f"compile must be True, False or None (automatic), got {compile!r}")
device = common.resolve_device(device)
if device.startswith("cuda"):
    # each rank its own GPU; set_device below needs an index even on one process
    if ddp or device == "cuda":
        device = f"cuda:{local_rank}"
    # A build without kernels for this GPU fails later with "no kernel image is available";
    # say why now.
    major, minor = torch.cuda.get_device_capability(device)
    if not common.runs_on(major, minor, torch.cuda.get_arch_list()):
        # pip keeps an installed torch of the same version whatever its build: uninstall it first
        build = (" --index-url https://download.pytorch.org/whl/cu126" if (major, minor) < (7, 5)
                 else "")
        die(f"this torch {torch.__version__} has no kernels for "
            f"{torch.cuda.get_device_name(device)} "
            f"(sm_{major}{minor}; it has {' '.join(torch.cuda.get_arch_list())}): replace it with "
            f"a build that has, "
            f"pip uninstall -y torch && pip install "
            f"torch=={torch.__version__.split('+')[0]}{build}"
            + (" (CUDA 12.6, the last with Volta's kernels)" if build else ""))
    torch.cuda.set_device(device)
    torch.set_float32_matmul_precision("high")  # TF32 for any fp32 matmul on Ampere and later
# after set_device, so that dtype=auto asks this rank's GPU
device, device_type, dtype, autocast, _ = common.setup(device, dtype)
compile = common.compile_default(device) if compile is None else compile

# global batch -> gradient accumulation: the same tokens per optimizer step whatever the world size
tokens_per_micro = batch_size * block_size * world_size
if batch_tokens % tokens_per_micro:
    die(f"batch_tokens={batch_tokens} is not a multiple of batch_size*block_size*world_size = "
        f"{batch_size}*{block_size}*{world_size} = {tokens_per_micro}: change batch_tokens or "
        f"batch_size")
grad_accum = batch_tokens // tokens_per_micro

# data: prepare.py's folder, or prepare_chat.py's conversations (targets -1 outside the assistant's
# turns), checked whole before the first eval or checkpoint (a run that failed on its data after
# saving step 0 would refuse its own rerun: "ckpt.pt exists"); the vocabulary must fit the model's
meta = common.load_meta(data_dir)
chat = meta.get("kind") == "chat"
if chat and meta["block_size"] > block_size:
    die(f"{data_dir} holds conversations of up to {meta['block_size'] + 1} tokens, longer than "
        f"block_size={block_size} allows: prepare them again with prepare_chat.py --block_size "
        f"{block_size}")
# conversations may be short
common.check_data(data_dir, ("train", "val"), 0 if chat else block_size, vocab_size)
# every window drawn is checked against the vocabulary too (common.get_batch: the start-up scan of
# a large file samples)
get_batch = (common.get_chat_batch if chat
             else partial(common.get_batch, vocab_size=meta["vocab_size"]))
train_tokens = os.path.getsize(os.path.join(data_dir, "train.bin")) // 2  # uint16

# every rank checks, so none is left waiting for one that stopped
common.make_folder(out_dir, "--out_dir")
ckpt_path = os.path.join(out_dir, "ckpt.pt")
metrics_path = os.path.join(out_dir, "metrics.jsonl")

try:
    model_config = GPTConfig(**{f.name: config[f.name] for f in fields(GPTConfig) if f.init})
except ValueError as e:
    die(f"bad model settings: {e}")
checkpoint = None
if init_from != "scratch":  # resume, or start from a checkpoint's weights
    source = ckpt_path if init_from == "resume" else init_from
    # a one-line error when it is missing, corrupt or not ours
    checkpoint = common.load_checkpoint(source)
    # dropout and loss_chunk change how the model computes, not what it is: a resume may change them
    ours = common.model_args(model_config)
    theirs = checkpoint["model_args"]
    differ = [k for k in theirs if k not in ("dropout", "loss_chunk") and ours.get(k) != theirs[k]]
    if differ:
        die(f"{source} is another architecture "
            f"({', '.join(f'{k}={theirs[k]!r}' for k in differ)}; the settings say "
            f"{', '.join(f'{k}={ours.get(k)!r}' for k in differ)}): use the config it was trained "
            f"with")
    # checkpoints from before Muon: AdamW
    trained_with = checkpoint["config"].get("optimizer", "adamw")
    # (a checkpoint to start from lends its weights only)
    if init_from == "resume" and trained_with != optimizer:
        die(f"{ckpt_path} was trained with optimizer={trained_with}, whose state cannot continue "
            f"as {optimizer}: resume with --optimizer={trained_with}")
if init_from != "resume" and os.path.exists(ckpt_path):
    die(f"{ckpt_path} exists: continue it with --init_from=resume, or choose another --out_dir "
        f"(or delete it) to start over")

if ddp:
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")


# ---------------------------------------------------------------- model, optimizer, state
torch.manual_seed(seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
if checkpoint:
    model = common.model_from_checkpoint(
        {**checkpoint, "model_args": common.model_args(model_config)}, device)
else:
    model = GPT(model_config).to(device)
raw_model = model  # unwrapped and uncompiled: what checkpoints hold, so their names load anywhere
optimizers = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type,
                                        optimizer, muon_lr, muon_momentum,
                                        muon_weight_decay)  # [AdamW] or [Muon, AdamW]
# fp16 has 5 exponent bits: small gradients underflow unless the loss is scaled up first
# (Micikevicius et al. 2018)
scaler = torch.amp.GradScaler(device_type, enabled=dtype == "float16")
# training windows: different per rank, reproducible from the seed
data_gen = common.seeded_generator(seed, rank, 0)
torch.manual_seed(seed + rank)  # dropout: different per rank
iter_num, tokens_seen, skipped, elapsed_before, best_val_loss, val_loss = (
    0, 0, 0, 0.0, float("inf"), float("nan"))
# the step val_loss was measured at: a signal stops a run without an eval, so it may lag iter_num
val_iter = None
# measured on rank 0: the slowest recent step, the last eval and save
step_dt = eval_dt = ckpt_dt = 0.0
if init_from == "resume":
    states = checkpoint["optimizer"]
    for opt, state in zip(optimizers, [states] if isinstance(states, dict) else states,
                          strict=True):
        opt.load_state_dict(state)  # (a dict: one AdamW's, from checkpoints before Muon)
    # empty when the run was not fp16, e.g. bf16 on an H100 resumed in fp16 on a V100
    if checkpoint["scaler"]:
        scaler.load_state_dict(checkpoint["scaler"])
    iter_num, tokens_seen, elapsed_before = (checkpoint["iter_num"], checkpoint["tokens_seen"],
                                             checkpoint["elapsed"])
    best_val_loss, val_loss, skipped = (checkpoint["best_val_loss"], checkpoint["val_loss"],
                                        checkpoint["skipped"])
    # checkpoints from before val_iter: their own step, mostly true
    val_iter = checkpoint.get("val_iter", iter_num)
    # for the budget
    step_dt, eval_dt, ckpt_dt = (checkpoint["timing"][k] for k in ("step", "eval", "checkpoint"))
    rng = checkpoint["rng"]
    if rng["world_size"] == world_size:  # continue each rank's streams exactly where they were
        data_gen.set_state(rng["ranks"][rank]["data"])
        torch.set_rng_state(rng["ranks"][rank]["torch"])
        if device_type == "cuda" and "cuda" in rng["ranks"][rank]:
            torch.cuda.set_rng_state(rng["ranks"][rank]["cuda"])
    else:  # another world size: fresh streams, still distinct from every window drawn before
        data_gen = common.seeded_generator(seed, rank, iter_num)
        if master:
            print(f"resuming a {rng['world_size']}-rank run on {world_size}: data streams "
                  f"reseeded, not continued")
checkpoint = None  # free the memory
fast_model = torch.compile(raw_model) if compile else raw_model
model = common.wrap_ddp(fast_model, device_type, local_rank) if ddp else fast_model
if master:
    print(f"{raw_model.num_params():,} parameters | {world_size} x {device} | {dtype} | "
          f"compile {compile} | {grad_accum} micro-steps of {batch_size}x{block_size} per step | "
          f"{train_tokens:,} train tokens")
    if init_from not in ("scratch", "resume"):
        print(f"starting from {init_from}'s weights, with a fresh optimizer and schedule"
              + (" | conversations: the loss covers the assistant's tokens only" if chat else ""))


# metrics.jsonl: keep what led up to the checkpoint, drop what a crashed run logged after it
if master:
    kept = [r for r in common.read_metrics(metrics_path)
            if r["iter"] < iter_num or r["iter"] == iter_num and "val_loss" in r]
    kept = kept if init_from == "resume" else []
    with open(metrics_path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    if wandb_log:
        import wandb
        wandb.init(project=wandb_project, name=wandb_run_name, config=config)


def log(record: dict) -> None:
    try:
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        # a full disk: the checkpoint save would be next to fail; stop with the last one intact
        common.die_of_disk(metrics_path, e, ckpt_path)
    if wandb_log:
        wandb.log(record, step=record["iter"])


def plot_losses() -> None:
    """out_dir/loss.png: train and val loss against tokens and time, from metrics.jsonl (so
    across resumes)."""
    try:
        compare.plot({os.path.basename(os.path.normpath(out_dir)):
                      common.read_metrics(metrics_path)},
                     f"{out_dir}/loss.png", out_dir)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(f"{out_dir}/loss.png.tmp")
        common.die_of_disk(f"{out_dir}/loss.png", e, ckpt_path)


@torch.no_grad()
def write_report(status: str) -> None:
    """out_dir/report.md (report.py), with a sample from a fixed seed: its own generator, so the
    training's random streams are untouched."""
    raw_model.eval()
    start = torch.tensor([[common.EOT_TOKEN]], device=device)
    ids = raw_model.generate(start, 64, temperature=0.8, top_k=200,
                             generator=torch.Generator(device).manual_seed(seed))[0, 1:].tolist()
    raw_model.clear_kv_cache()
    raw_model.train()
    text = report.train_report(out_dir, config, status, report.hardware(device, world_size),
                               raw_model.num_params(), train_tokens,
                               enc.decode([t for t in ids if t < vocab_size]))
    try:
        report.write_atomic(f"{out_dir}/report.md", text)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(f"{out_dir}/report.md.tmp")
        common.die_of_disk(f"{out_dir}/report.md", e, ckpt_path)


@torch.no_grad()
def evaluate() -> float:
    """Mean val loss over batches 0..eval_iters-1, each drawn from its own fixed seed: the same
    windows at every eval and on any number of ranks, so curves compare.
    Rank r takes batches r, r + world_size, ...
    On conversations: the mean loss per assistant token over the first eval_iters * batch_size val
    conversations, one a row (eval.py --tasks=chat's figure when that covers the split)."""
    fast_model.eval()
    # sum of losses, batches (conversations: of losses x tokens, tokens)
    total = torch.zeros(2, device=device)
    for k in range(rank, eval_iters, world_size):
        if chat:
            batch = common.get_chat_batch(data_dir, "val", batch_size, block_size, None, device,
                                          index=k)
            if batch is None:  # past the last val conversation
                continue
            x, y = batch
        else:
            gen = common.seeded_generator(k)
            x, y = get_batch(data_dir, "val", batch_size, block_size, gen, device)
        weight = (y != -1).sum() if chat else torch.ones((), device=device)
        with autocast:
            total += torch.stack([fast_model(x, y)[1].float() * weight, weight.float()])
    if ddp:
        dist.all_reduce(total)
    fast_model.train()
    return (total[0] / total[1]).item()


def save_checkpoint() -> None:
    """Every rank hands rank 0 its random-number states; rank 0 writes the file
    (atomically: common.py)."""
    state = {"data": data_gen.get_state(), "torch": torch.get_rng_state()}
    if device_type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    ranks = [state]
    if ddp:
        ranks = [None] * world_size
        dist.all_gather_object(ranks, state)
    if master:
        common.save_checkpoint({
            "model": raw_model.state_dict(), "model_args": common.model_args(model_config),
            "tokenizer": meta.get("tokenizer", "gpt2"), "config": config, "iter_num": iter_num,
            # chat-tuned: the template its conversations were written in
            "chat_template": meta.get("chat_template"),
            # and the time this save takes (as long as the last one)
            "elapsed": elapsed() + ckpt_dt,
            "tokens_seen": tokens_seen, "best_val_loss": best_val_loss, "val_loss": val_loss,
            "val_iter": val_iter,
            "optimizer": [opt.state_dict() for opt in optimizers], "scaler": scaler.state_dict(),
            "skipped": skipped,
            "rng": {"world_size": world_size, "ranks": ranks},
            "timing": {"step": step_dt, "eval": eval_dt, "checkpoint": ckpt_dt},
        }, ckpt_path)


def elapsed() -> float:
    return elapsed_before + time.monotonic() - t_start


def out_of_memory(what: str):
    """A micro-batch too big for the GPU: one line saying so, not torch's page of
    allocator statistics."""
    return common.out_of_memory_is_one_line(
        f"{what} (micro-batches of {batch_size} x {block_size} tokens on {device})",
        "lower --batch_size; batch_tokens stays, as more accumulation steps make up the batch "
        "(`python bench.py --plan` shows what fits a GPU)")


# the tokenizer for report.md's sample, loaded now: inside the first eval of a resumed run, its
# load time would be missing from the eval time the budget reserves (the checkpoint's, from evals
# that had it)
enc = common.get_tokenizer() if master else None
# HellaSwag at each eval (opt-in): eval.py's scorer on rank 0, the same first examples every time
if hellaswag_every_eval > 0 and master:
    from eval import hellaswag_accuracy, load_hellaswag

    hellaswag_examples = load_hellaswag(hellaswag_file)

# ---------------------------------------------------------------- training loop
budget = time_budget_hours * 3600
# where this leg of the run starts, as the checkpoint recorded it
if master and init_from == "resume":
    print(f"resumed {ckpt_path}: step {iter_num}, {tokens_seen:,} tokens, "
          f"{report.hms(elapsed_before)} elapsed"
          + (f" of the {report.hms(budget)} budget" if budget else "")
          + f", val loss {val_loss:.4f} (step {val_iter})")
decay_iters = lr_decay_iters or max_iters
# the step last evaluated and saved: a fresh run evaluates and saves at once, a resumed one starts
# from its checkpoint
last_eval = saved_iter = iter_num if init_from == "resume" else None
bad_steps, loss_ema, warned_epochs = 0, None, False
window_steps, window_time = 0, 0.0  # steps and their time since the last log line
while True:
    # ---- Is this the last iteration? Every rank must agree, so rank 0's clock decides and the
    # verdict is summed across ranks along with any rank's signal. The time left must hold, with a
    # 1.5x margin: an eval and checkpoint now if one is due, one more step, and the final eval and
    # checkpoint.
    hold(f"step{iter_num}")
    due = iter_num != last_eval and (last_eval is None or iter_num % eval_interval == 0)
    time_progress = out_of_time = 0.0
    if master and budget > 0:
        # for the last step to end by; the schedule ends here too
        deadline = budget - 1.5 * (eval_dt + ckpt_dt)
        now, need = elapsed(), 1.5 * (step_dt + (eval_dt + ckpt_dt) * due)
        out_of_time = now + need > deadline
        # the last step: min_lr
        time_progress = 1.0 if now + need + 1.5 * step_dt > deadline else now / deadline
    flags = torch.tensor([_stop_signal is not None, out_of_time, time_progress],
                         dtype=torch.float64, device=device)
    if ddp:
        dist.all_reduce(flags)  # ranks other than 0 add zeros, so all hold rank 0's clock (and lr)
    got_signal, out_of_time, time_progress = flags.tolist()
    stop = ("signal" if got_signal else "time budget" if out_of_time else
            "max_iters" if 0 < max_iters <= iter_num else None)

    # ---- eval and checkpoint: at the first iteration, every eval_interval steps, and at the end (a
    # signal skips the eval: preemption leaves seconds, not minutes)
    if (due or stop) and stop != "signal" and iter_num != last_eval:
        t0 = time.monotonic()
        with out_of_memory("an eval"):
            val_loss = evaluate()
        best_val_loss = min(best_val_loss, val_loss)
        last_eval = val_iter = iter_num
        if master:
            hellaswag = {}
            if hellaswag_every_eval > 0:
                r = hellaswag_accuracy(raw_model, enc, hellaswag_examples, device, autocast,
                                       hellaswag_every_eval, batch_size)
                hellaswag = {"hellaswag_acc": r["acc"], "hellaswag_acc_norm": r["acc_norm"]}
            print(f"eval {iter_num}: val loss {val_loss:.4f} (best {best_val_loss:.4f}) | "
                  f"{tokens_seen:,} tokens"
                  + (f" | hellaswag acc_norm {hellaswag['hellaswag_acc_norm']:.4f}"
                     if hellaswag else ""))
            log({"iter": iter_num, "val_loss": val_loss, **hellaswag, "tokens": tokens_seen,
                 "elapsed": elapsed()})
            plot_losses()
            write_report(f"training: step {iter_num}")
        eval_dt = time.monotonic() - t0
    if due or stop:
        # Only a healthy model is saved: a diverging one must never replace the last good one.
        if bad_steps == 0 and math.isfinite(val_loss):
            t0 = time.monotonic()
            save_checkpoint()
            saved_iter, ckpt_dt = iter_num, time.monotonic() - t0
        elif master:  # and never claim a checkpoint that was not written
            why = "no eval yet" if val_iter is None else "the loss is not healthy"
            kept = (f"{ckpt_path} keeps step {saved_iter}" if saved_iter is not None
                    else "no checkpoint written yet")
            print(f"not saving at step {iter_num}: {why}; {kept}")
    if stop:
        break

    # ---- one optimizer step: grad_accum micro-steps, gradients synchronised only on the last one
    t0, step = time.monotonic(), iter_num
    # at the end of this step
    progress = max((iter_num + 1) / decay_iters if decay_iters else 0.0, time_progress)
    lr = common.get_lr(iter_num, progress, learning_rate, min_lr, warmup_iters, lr_schedule,
                       decay_fraction)
    for opt in optimizers:  # the schedule scales Muon's own peak alike
        for group in opt.param_groups:
            group["lr"] = lr * muon_lr / learning_rate if isinstance(opt, torch.optim.Muon) else lr
    if 0 <= inject_nan_at_iter <= iter_num:  # testing only: a NaN weight makes every later loss NaN
        with torch.no_grad():
            raw_model.transformer.ln_f.weight[0] = float("nan")
    with out_of_memory("a training step"):
        loss_sum, grad_norm, applied = common.train_step(
            model, optimizers, scaler,
            lambda: get_batch(data_dir, "train", batch_size, block_size, data_gen, device),
            grad_accum, grad_clip, autocast)
    if applied:
        iter_num += 1
        tokens_seen += batch_tokens
    else:  # counted and logged, not progress
        skipped += 1
    if ddp:
        dist.all_reduce(loss_sum)
    loss = loss_sum.item() / grad_accum / world_size
    dt = time.monotonic() - t0
    # the slowest recent step, forgetting the first (compiled) one slowly
    step_dt = max(dt, 0.99 * step_dt)
    window_steps, window_time = window_steps + 1, window_time + dt

    epochs = tokens_seen / train_tokens
    if master and epochs > 4 and not warned_epochs:
        warned_epochs = True
        print(f"warning: {epochs:.1f} epochs over {data_dir}: past ~4, repeated tokens are worth "
              f"little (Muennighoff et al. 2023); prepare more data")
    if master and (step % log_interval == 0 or not applied):
        mean_dt = window_time / window_steps
        mfu = raw_model.estimate_mfu(batch_tokens // world_size, mean_dt,
                                     torch.cuda.get_device_name(device) if device_type == "cuda"
                                     else "", dtype)
        left = [t for t in (budget - elapsed() if budget else None,
                            (max_iters - iter_num) * mean_dt if max_iters else None)
                if t is not None]
        record = {"iter": step, "loss": loss, "lr": lr, "grad_norm": grad_norm.item(),
                  "loss_scale": scaler.get_scale() if scaler.is_enabled() else None,
                  "tokens_per_s": batch_tokens / mean_dt, "mfu": mfu, "tokens": tokens_seen,
                  "epochs": epochs,
                  "elapsed": elapsed(), "time_left": min(left), "skipped": skipped}
        if optimizer == "muon":
            record["muon_lr"] = lr * muon_lr / learning_rate
        print(f"step {step}: loss {loss:.4f} | lr {lr:.2e} | grad norm {record['grad_norm']:.3f}"
              + (f" | scale {record['loss_scale']:g}" if scaler.is_enabled() else "")
              + f" | {record['tokens_per_s']:,.0f} tok/s"
              + (f" | MFU {100 * mfu:.1f}%" if mfu else "")
              + f" | {tokens_seen / 1e6:.2f}M tokens | {epochs:.2f} epochs"
                f" | {report.hms(min(left))} left"
              + (f" | {skipped} skipped" if skipped else ""))
        log(record)
        window_steps, window_time = 0, 0.0

    # ---- the divergence guard: identical on every rank, since the loss is the mean over ranks
    bad = not math.isfinite(loss) or (loss_ema is not None and loss > divergence_ratio * loss_ema)
    bad_steps = bad_steps + 1 if bad else 0
    if not bad:
        loss_ema = loss if loss_ema is None else 0.95 * loss_ema + 0.05 * loss
    if bad_steps >= divergence_steps:
        if not master:  # every rank stops here, on the same mean loss: rank 0 says why, once
            sys.exit(1)
        kept = (f"{ckpt_path} keeps the last good model (step {saved_iter})"
                if saved_iter is not None else "no good model was saved")
        die(f"training diverged: loss {loss:.4g} for {bad_steps} steps in a row at step {step}; "
            f"{kept}: lower learning_rate or raise warmup_iters, then "
            f"{'resume' if saved_iter is not None else 'start again'}")

# The run is over and saved, so a signal from here on has nothing to stop. Ignore it: while Python
# shuts down it gives each signal it handled back its default action, and SIGTERM's would turn a
# finished run into a failure.
for _sig in STOP_SIGNALS:
    signal.signal(_sig, signal.SIG_IGN)
hold("exit")
# each number with the step it is from: a signal stop skips the final eval, and may save nothing
if master:
    val = f"val loss {val_loss:.4f} (step {val_iter})" if val_iter is not None else "no eval"
    saved = (f"checkpoint {ckpt_path} (step {saved_iter})" if saved_iter is not None
             else "no checkpoint written")
    print(f"stopped ({stop}) at step {iter_num} after {report.hms(elapsed())}: {val}, "
          f"{tokens_seen:,} tokens; {saved}")
    write_report(f"stopped by a signal at step {iter_num}: continue with --init_from=resume"
                 if stop == "signal" else f"finished ({stop}) at step {iter_num}")
# leave together: a rank that tears down its gloo/NCCL threads while rank 0 still writes its report
# was seen to abort at exit (SIGABRT), failing a run that had saved
if ddp:
    dist.barrier()
    dist.destroy_process_group()
