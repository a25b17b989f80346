"""
Five minutes on the real machines that prove the long run before it starts. Launch it exactly as
the run, then launch train.py the same way:

    torchrun --standalone --nproc_per_node=8 preflight.py config/option_a.py
    python preflight.py config/smoke.py        # one process
    python preflight.py --write_reference      # refresh assets/preflight/reference.json

It takes train.py's settings (read from train.py itself, so every key and config file of the run
works here), runs one check per row, prints a go/no-go table with each check's measured figure,
writes the figures to out_dir/preflight.json, and ends with the train.py command that passed, with
any setting it had to change. It exits 1 on a no-go. docs/training.md ("Preflight") says what each
row means and its tolerance.
"""

import ast
import contextlib
import datetime
import json
import math
import os
import shlex
import sys
import time
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import common
from configurator import configure
from model import GPT, GPTConfig


def train_settings() -> dict:
    """train.py's settings and their defaults: the plain assignments above its setup section."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")) as f:
        source = f.read()
    end = source.index("# ---------------------------------------------------------------- setup")
    settings = {}
    for node in ast.parse(source[:end]).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            with contextlib.suppress(ValueError):
                settings[node.targets[0].id] = ast.literal_eval(node.value)
    return {k: v for k, v in settings.items() if not k.startswith("_")}


globals().update(train_settings())
# ---------------------------------------------------------------- preflight's own settings
write_reference = False  # write assets/preflight/reference.json (fp32 on the CPU) from the
                         # numerics check, then stop
numerics_steps = 200  # steps of the reference model (at most the reference's), compared in
                      # windows of 20
numerics_tolerance = 0.05  # nats: the largest gap allowed between a window's mean loss and the
                           # reference's
scaler_warmup = 20  # steps the fp16 GradScaler may skip while it finds its scale; a skip after
                    # them is a no-go
headroom = 0.10  # share of the GPU's memory the run must leave free (allocator fragmentation, a
                 # longer eval)
timed_steps = 5  # real steps timed for the speed row, after 2 untimed ones
inject_fault = ""  # testing only: comma-separated nan, scaler, compile, resume: break that check
                   # on purpose
PREFLIGHT_KEYS = ("write_reference", "numerics_steps", "numerics_tolerance", "scaler_warmup",
                  "headroom", "timed_steps", "inject_fault")
HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "assets", "preflight", "reference.json")
# The fixed reference model: option A's block at toy size, on TinyShakespeare's characters
# (assets/preflight/README.md).
NUMERICS_MODEL = dict(block_size=64, vocab_size=65, n_layer=2, n_head=2, n_embd=64, loss_chunk=128)
NUMERICS_BATCH, NUMERICS_LR, WINDOW = 8, 3e-3, 20

config = configure(globals(), sys.argv[1:], verbose=False)
run = SimpleNamespace(**config)  # the run's settings, as train.py reads them
faults = set(filter(None, inject_fault.split(",")))
if not (0 <= headroom < 1 and timed_steps >= 1 and numerics_tolerance > 0 and scaler_warmup >= 0):
    common.die("headroom must be in [0, 1), timed_steps at least 1, numerics_tolerance positive "
               f"and scaler_warmup 0 or more; got {headroom}, {timed_steps}, {numerics_tolerance} "
               f"and {scaler_warmup}")
if numerics_steps < WINDOW:
    common.die(f"numerics_steps must be at least {WINDOW} (one window of the comparison), got "
               f"{numerics_steps}")
if faults - {"nan", "scaler", "compile", "resume"}:
    common.die("inject_fault takes nan, scaler, compile and resume (testing only), "
               f"got '{inject_fault}'")
ddp = "RANK" in os.environ
rank, local_rank, world = ((int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
                           if ddp else (0, 0, 1))
master = rank == 0
asked_device = run.device
device = common.resolve_device(run.device)  # device=auto with no GPU under torchrun stops here,
                                            # in one line
device_type = device.split(":")[0]
if device_type == "cuda":
    device = f"cuda:{local_rank}" if ddp or device == "cuda" else device
    torch.cuda.set_device(device)
    torch.set_float32_matmul_precision("high")  # as train.py
# after set_device, so that dtype=auto asks this rank's GPU (as train.py)
device, device_type, dtype, autocast, _ = common.setup(device, run.dtype)
compile = common.compile_default(device) if run.compile is None else run.compile
changed = {}  # settings the run must change, for the command at the end


def row(check: str, status: str, figure: str, **data) -> dict:
    """status: GO, NO-GO, WARN (runs, but see the figure) or n/a (cannot be measured here)."""
    return dict(check=check, status=status, figure=figure, **data)


def sync():
    if device_type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- the checks, one a row

def check_device() -> dict:
    """Every rank on its own GPU, and a torch build with kernels for it; the CPU only when
    asked for."""
    if device_type == "cpu":
        if asked_device == "cpu":
            return row("device", "GO",
                       f"CPU, as asked (device=cpu), {world} process{'es' * (world > 1)}, {dtype}")
        return row("device", "NO-GO",
                   "no GPU: device=auto fell back to the CPU (set --device=cpu to mean it)")
    major, minor = torch.cuda.get_device_capability(device)
    props = torch.cuda.get_device_properties(device)
    mine = (str(props.uuid), torch.cuda.get_device_name(device), f"sm_{major}{minor}")
    ranks = [mine]
    if ddp:
        ranks = [None] * world
        dist.all_gather_object(ranks, mine)
    kernels = common.runs_on(major, minor, torch.cuda.get_arch_list())
    shared = len({r[0] for r in ranks}) < world
    status = "GO" if kernels and not shared else "NO-GO"
    why = "" if kernels else ("; this torch has no kernels for it "
                              f"({' '.join(torch.cuda.get_arch_list())})")
    why += "; ranks share a GPU" if shared else ""
    return row("device", status, f"{world} x {mine[1]} ({mine[2]}), one GPU a rank{why}",
               gpus=ranks)


def check_allreduce() -> dict:
    """A sum over the ranks arrives right on every rank, and its bus bandwidth
    (nccl-tests' busbw)."""
    if not ddp:
        return row("all-reduce", "n/a", "one process")
    n = (64 if device_type == "cuda" else 4) << 18  # 64 MiB of fp32 on GPUs, 4 on the CPU
    t = torch.full((n,), float(rank + 1), device=device)
    dist.all_reduce(t)
    right = bool((t == world * (world + 1) / 2).all())
    dist.barrier()
    sync()
    t0 = time.perf_counter()
    for _ in range(5):
        dist.all_reduce(t)
    sync()
    dt = (time.perf_counter() - t0) / 5
    busbw = 2 * (world - 1) / world * 4 * n / dt
    return row("all-reduce", "GO" if right else "NO-GO",
               f"{busbw / 1e9:.2f} GB/s bus bandwidth, {dist.get_backend()}, {4 * n >> 20} MiB"
               + ("" if right else "; WRONG SUM"), bus_gb_s=busbw / 1e9)


SDPA_KERNELS = {  # the aten op of each fused kernel F.scaled_dot_product_attention may dispatch to
    "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "memory-efficient",
    "_scaled_dot_product_cudnn_attention": "cuDNN",
}


class OpsRun(TorchDispatchMode):
    """The names of the aten ops that run inside it."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def check_attention() -> dict:
    """The kernel SDPA really runs, forward and backward, for training attention at the run's head
    size, length and dtype: read from the ops that ran, not guessed from the capability. None of the
    fused ones is math, which holds every T x T score."""
    head = run.n_embd // run.n_head
    shape = (1, run.n_head, run.block_size, head)
    half = common.PT_DTYPES[dtype]
    q, k, v = (torch.randn(shape, device=device, dtype=half, requires_grad=True) for _ in range(3))
    with OpsRun() as ops:
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    kernel = next((name for op, name in SDPA_KERNELS.items() if op in ops.names), "math")
    slow = device_type == "cuda" and kernel == "math"
    return row("attention", "WARN" if slow else "GO",
               f"{kernel}, head {head}, T {run.block_size}, {dtype}", kernel=kernel)


def numerics_curve(dt: str, dev: str) -> tuple[list[float], int]:
    """The reference model trained numerics_steps steps in dtype dt on dev: its loss per step, and
    the steps the GradScaler skipped after its warm-up. The same initial weights and batches
    everywhere (seeded, on the CPU)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**NUMERICS_MODEL)).to(dev)
    opts = model.configure_optimizers(0.1, NUMERICS_LR, (0.9, 0.95), dev.split(":")[0])
    # a scaler that doubles each step overflows every other one
    growth = 1 if "scaler" in faults else 2000
    scaler = torch.amp.GradScaler(dev.split(":")[0], enabled=dt == "float16",
                                  growth_interval=growth)
    gen = torch.Generator().manual_seed(0)
    data = os.path.join(HERE, "assets", "preflight")
    B, T = NUMERICS_BATCH, NUMERICS_MODEL["block_size"]
    losses, late_skips = [], 0
    for step in range(numerics_steps):
        if "nan" in faults and step == numerics_steps // 2:
            with torch.no_grad():
                model.transformer.ln_f.weight[0] = float("nan")
        loss, _, applied = common.train_step(
            model, opts, scaler, lambda: common.get_batch(data, "shakespeare", B, T, gen, dev), 1,
            1.0, common.autocast(dev.split(":")[0], dt))
        losses.append(loss.item())
        late_skips += not applied and step >= scaler_warmup
    return losses, late_skips


def windows(losses: list[float]) -> list[float]:
    return [sum(losses[i:i + WINDOW]) / WINDOW
            for i in range(0, len(losses) - WINDOW + 1, WINDOW)]


def check_numerics() -> dict:
    """The reference model in the run's dtype tracks assets/preflight/reference.json's fp32 curve
    within numerics_tolerance nats in every window of 20 steps, and the scaler skips no step after
    its warm-up."""
    if not os.path.exists(REFERENCE):
        return row("numerics", "NO-GO",
                   f"no {REFERENCE}: write it with python preflight.py --write_reference")
    with open(REFERENCE) as f:
        ref = json.load(f)
    if (ref["model"] != NUMERICS_MODEL or ref["window"] != WINDOW
            or not WINDOW <= numerics_steps <= ref["steps"]):
        return row("numerics", "NO-GO",
                   "assets/preflight/reference.json is of another model, or numerics_steps is not "
                   f"{WINDOW} to {ref['steps']}: write the reference again")
    t0 = time.perf_counter()
    losses, late_skips = numerics_curve(dtype, device)
    ours = windows(losses)
    theirs = ref["window_means"][:len(ours)]
    gap = max(abs(a - b) if math.isfinite(a) else math.inf
              for a, b in zip(ours, theirs, strict=True))
    ok = gap <= numerics_tolerance and late_skips == 0
    return row("numerics", "GO" if ok else "NO-GO",
               f"{dtype}: largest gap {gap:.3f} nats (limit {numerics_tolerance}), "
               f"step {len(losses)} at {ours[-1]:.3f} vs {theirs[-1]:.3f}, "
               f"{late_skips} skipped steps after {scaler_warmup}, "
               f"{time.perf_counter() - t0:.1f} s", gap=gap, late_skips=late_skips,
               window_means=ours)


def check_data() -> dict:
    try:
        meta = common.check_data(run.data_dir, ("train", "val"), run.block_size, run.vocab_size)
    except SystemExit as e:
        return row("data", "NO-GO", str(e.code).removeprefix("error: "))
    tokens = os.path.getsize(os.path.join(run.data_dir, "train.bin")) // 2
    return row("data", "GO", f"{run.data_dir}: {tokens:,} train tokens, "
                             f"vocab {meta['vocab_size']}", train_tokens=tokens)


# ---------------------------------------------------------------- the real model at the run's shape

def build() -> tuple[GPT, list, torch.amp.GradScaler]:
    torch.manual_seed(run.seed)
    try:
        cfg = GPTConfig(**{k: config[k] for k in common.model_args(GPTConfig())})
    except ValueError as e:
        common.die(f"bad model settings: {e}")
    model = GPT(cfg).to(device)
    opts = model.configure_optimizers(run.weight_decay, run.learning_rate, (run.beta1, run.beta2),
                                      device_type, run.optimizer, run.muon_lr, run.muon_momentum,
                                      run.muon_weight_decay)
    return model, opts, torch.amp.GradScaler(device_type, enabled=dtype == "float16")


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """As train.py wraps it."""
    if not ddp:
        return model
    return common.wrap_ddp(model, device_type, local_rank)


def batches(split: str, b: int, seed_: int):
    """Real windows when the data passed its check, else random tokens of the vocabulary."""
    gen = torch.Generator().manual_seed(seed_)
    if data_ok:
        return lambda: common.get_batch(run.data_dir, split, b, run.block_size, gen, device,
                                        run.vocab_size)
    return lambda: common.to_device(*torch.randint(0, run.vocab_size, (2, b, run.block_size),
                                                   generator=gen), device)


def check_compile(raw: GPT) -> tuple[dict, torch.nn.Module]:
    """The compiled model's loss and gradient norm on one batch match eager's; if compiling fails or
    they do not, the run goes eager (--compile=False). Returns the row and the model the later
    checks use."""
    global compile
    if not compile:
        why = ("compile=False" if config["compile"] is False else
               "off by default here, common.compile_default says why; --compile=True checks it")
        return row("compile", "n/a", f"eager ({why})"), raw
    tol = 1e-3 if dtype == "float32" else 3e-2
    x, y = batches("train", run.batch_size, run.seed)()

    def loss_and_norm(m):
        with autocast:
            loss = m(x, y)[1]
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(raw.parameters(), math.inf)
        raw.zero_grad(set_to_none=True)
        return loss.item(), norm.item()

    t0 = time.perf_counter()
    try:
        if "compile" in faults:
            raise RuntimeError("injected compile failure")
        fast = torch.compile(raw)
        got, want = loss_and_norm(fast), loss_and_norm(raw)
    except Exception as e:  # an inductor or Triton failure of any kind: the run goes eager
        compile, changed["compile"] = False, False
        return row("compile", "WARN",
                   f"failed ({type(e).__name__}: {str(e).splitlines()[0][:80]}): eager"), raw
    gaps = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(got, want, strict=True)]
    if max(gaps) > tol:
        compile, changed["compile"] = False, False
        return row("compile", "WARN",
                   f"differs from eager (loss {got[0]:.5f} vs {want[0]:.5f}): eager"), raw
    return row("compile", "GO",
               f"matches eager (loss rel. {gaps[0]:.1e}, grad norm {gaps[1]:.1e}), compiled in "
               f"{time.perf_counter() - t0:.0f} s"), fast


def step_fn(model, raw_opts, scaler, next_batch, accum: int):
    return lambda: common.train_step(model, raw_opts, scaler, next_batch, accum, run.grad_clip,
                                     autocast)


def check_speed(model, raw: GPT, opts, scaler) -> dict:
    """train.py's own step (common.train_step) at the run's micro-batch and accumulation, DDP in
    place: tokens/s, MFU against the GPU variant's peak, and what the time budget buys at that
    speed."""
    step = step_fn(model, opts, scaler, batches("train", run.batch_size, run.seed + rank),
                   grad_accum)
    for _ in range(2):  # compiles, warms the allocator and cuBLAS
        step()
    sync()
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(timed_steps):
        step()[0].item()  # train.py reads the loss back each step too
    dt = (time.perf_counter() - t0) / timed_steps
    tokens_s = run.batch_tokens / dt
    name = torch.cuda.get_device_name(device) if device_type == "cuda" else ""
    mfu = raw.estimate_mfu(run.batch_tokens // world, dt, name, dtype)
    hours = run.time_budget_hours or 23.0
    tokens = tokens_s * hours * 3600
    passes = tokens / common.OWT_TRAIN_TOKENS
    return row("speed", "GO", f"{tokens_s:,.0f} tokens/s, {dt:.2f} s/step, MFU "
                              + (f"{mfu:.1%}" if mfu else "n/a (no peak FLOP/s known here)")
                              + f" | {hours:g} h: {tokens / 1e9:.2f}B tokens, {passes:.2f} passes "
                                f"over OpenWebText", tokens_per_s=tokens_s, step_s=dt, mfu=mfu,
               projected_tokens=tokens, owt_passes=passes)


def check_memory(model, opts, scaler) -> dict:
    """The peak the real steps just reached (PyTorch's reserved memory, plus what lives outside it:
    the CUDA context, NCCL's buffers) against what the GPU exposes, and the largest micro-batch that
    leaves headroom, from the peaks of one step at two micro-batches."""
    if device_type != "cuda":
        return row("memory", "n/a",
                   "CPU: no device memory to measure (the process's RSS is not a GPU's)")
    free, total = torch.cuda.mem_get_info(device)
    outside = total - free - torch.cuda.memory_reserved(device)
    peak = torch.cuda.max_memory_reserved(device) + outside
    limit = (1 - headroom) * total

    def probe(b: int) -> int:
        torch.cuda.reset_peak_memory_stats(device)
        step_fn(model, opts, scaler, batches("train", b, run.seed), 1)()
        sync()
        return torch.cuda.max_memory_allocated(device)

    largest = "? (micro-batch 1: no second point)"
    if run.batch_size > 1:  # a second point below the run's micro-batch, which is known to fit
        half = run.batch_size // 2
        per_sample = (probe(run.batch_size) - probe(half)) / (run.batch_size - half)
        largest = run.batch_size + math.floor((limit - peak) / per_sample)
    status = "GO" if peak <= limit else "NO-GO"
    gib = 2**30
    return row("memory", status,
               f"peak {peak / gib:.2f} GiB of {total / gib:.2f} GiB at micro-batch "
               f"{run.batch_size} (outside PyTorch: {outside / gib:.2f}); largest with "
               f"{headroom:.0%} free: {largest}",
               peak_bytes=peak, capacity_bytes=total, largest_batch=largest)


def check_checkpoint(model, raw: GPT, opts, scaler) -> dict:
    """A checkpoint of the weights, optimizer and scaler written (atomically, by rank 0, as train.py
    does), read back by every rank, and one step from it bit-exactly the step taken before saving.
    Where the GPU's kernels are not deterministic the gap is set against the GPU's own step-to-step
    spread."""
    path = os.path.join(run.out_dir, "preflight-ckpt.pt")
    fixed = [batches("train", run.batch_size, run.seed + 1 + rank)() for _ in range(grad_accum)]

    def one_step() -> torch.Tensor:
        it = iter(fixed)
        step_fn(model, opts, scaler, lambda: next(it), grad_accum)()
        return torch.cat([p.detach().flatten().float() for p in raw.parameters()])

    def restore() -> None:
        saved = torch.load(path, map_location=device, weights_only=True)
        raw.load_state_dict(saved["model"])
        for opt, state in zip(opts, saved["optimizer"], strict=True):
            if "resume" not in faults:
                opt.load_state_dict(state)
        scaler.load_state_dict(saved["scaler"])

    t0 = time.perf_counter()
    if master:
        common.save_checkpoint({"model": raw.state_dict(),
                                "optimizer": [o.state_dict() for o in opts],
                                "scaler": scaler.state_dict()}, path)
    if ddp:
        dist.barrier()
    write_s, size = time.perf_counter() - t0, os.path.getsize(path)
    before = one_step()
    restore()
    gap = (before - one_step()).abs().max().item()
    spread = 0.0
    if gap:
        restore()
        again = one_step()
        restore()
        spread = (again - one_step()).abs().max().item()
    if ddp:
        dist.barrier()
    if master:
        os.remove(path)
    status = "GO" if gap == 0 else "WARN" if gap <= 2 * spread else "NO-GO"
    what = "bit-exact" if gap == 0 else f"differs by {gap:.2e} (the GPU's own spread: {spread:.2e})"
    return row("checkpoint", status,
               f"written in {write_s:.1f} s ({size / 2**20:.0f} MiB), resumed step {what}",
               write_s=write_s, resume_gap=gap)


@torch.no_grad()
def check_eval(fast: torch.nn.Module, step_s: float) -> dict:
    """One eval as train.py runs it (eval_iters batches split across the ranks), and its share of
    the budget."""
    fast.eval()
    sync()
    t0 = time.perf_counter()
    total = torch.zeros((), device=device)
    for k in range(rank, run.eval_iters, world):
        x, y = batches("val", run.batch_size, k)()
        with autocast:
            total += fast(x, y)[1].float()
    if ddp:
        dist.all_reduce(total)
    sync()
    dt = time.perf_counter() - t0
    fast.train()
    share = dt / (run.eval_interval * step_s + dt)
    return row("eval", "GO" if math.isfinite(total.item()) else "NO-GO",
               f"{dt:.1f} s per eval of {run.eval_iters} batches, {share:.1%} of the run at "
               f"eval_interval {run.eval_interval}", eval_s=dt)


# ---------------------------------------------------------------- the report

WORST = ["GO", "n/a", "WARN", "NO-GO"]


def guarded(check: str, fn, *args) -> dict:
    """fn(*args)'s row, or a NO-GO row saying what it raised: one failing check must not hide the
    others."""
    try:
        return fn(*args)
    except torch.OutOfMemoryError:
        return row(check, "NO-GO",
                   f"out of memory at micro-batch {run.batch_size}: lower --batch_size "
                   f"(batch_tokens stays; the memory row's largest is what fits)")
    except Exception as e:
        return row(check, "NO-GO",
                   f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}")


def merge(per_rank: list[list[dict]]) -> list[dict]:
    """One row a check: the worst status over the ranks, with the worst rank's figure where they
    differ."""
    rows = []
    for rank_rows in zip(*per_rank, strict=True):
        worst = max(range(len(rank_rows)), key=lambda r: WORST.index(rank_rows[r]["status"]))
        r = dict(rank_rows[0])
        if rank_rows[worst]["status"] != r["status"]:
            r |= dict(status=rank_rows[worst]["status"],
                      figure=f"rank {worst}: {rank_rows[worst]['figure']}")
        rows.append(r)
    return rows


def command() -> str:
    """The train.py command that passed: this one's arguments, less preflight's own, plus what had
    to change."""
    args = [a for a in sys.argv[1:] if a.removeprefix("--").split("=")[0] not in PREFLIGHT_KEYS
            and not any(a.startswith(f"--{k}=") for k in changed)]
    args += [f"--{k}={v}" for k, v in changed.items()]
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    launch = ["python"] if not ddp else ["torchrun", "--standalone", f"--nproc_per_node={local}"]
    if ddp and local != world:  # several nodes: launch as this was launched
        launch = ["torchrun", f"--nnodes={world // local}", f"--nproc_per_node={local}", "..."]
    return shlex.join([*launch, "train.py", *args])


def report(rows: list[dict]) -> int:
    go = all(r["status"] != "NO-GO" for r in rows)
    width = max(len(r["check"]) for r in rows)
    print(f"\npreflight: {world} x {device_type} | {dtype} | torch {torch.__version__}")
    for r in rows:
        print(f"  {r['check']:<{width}}  {r['status']:<5}  {r['figure']}")
    cmd = command()
    print(f"\n{'GO' if go else 'NO-GO'}: "
          + (f"run\n  {cmd}" if go else "fix the NO-GO rows above first"))
    path = os.path.join(run.out_dir, "preflight.json")
    common.write_json(path, dict(
        go=go, rows=rows, command=cmd, changed=changed, settings=config, world_size=world,
        device=device_type, dtype=dtype, torch=torch.__version__,
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")))
    print(f"figures in {path}")
    return 0 if go else 1


def write_reference_curve() -> None:
    if ddp:
        common.die("--write_reference runs on one process: python preflight.py --write_reference")
    losses, _ = numerics_curve("float32", "cpu")
    common.write_json(REFERENCE, dict(
        what="mean training loss per window of steps of preflight.py's reference model "
             "(NUMERICS_MODEL) on assets/preflight/shakespeare.bin, fp32 on the CPU",
        model=NUMERICS_MODEL, steps=numerics_steps, window=WINDOW, window_means=windows(losses),
        torch=torch.__version__))
    print(f"wrote {REFERENCE}: final window {windows(losses)[-1]:.4f}")


def main() -> int:
    global data_ok, grad_accum
    if write_reference:
        write_reference_curve()
        return 0
    if run.batch_tokens % (run.batch_size * run.block_size * world):
        common.die(f"batch_tokens={run.batch_tokens} is not a multiple of "
                   f"batch_size*block_size*world_size = {run.batch_size * run.block_size * world}"
                   ": change batch_tokens or batch_size")
    grad_accum = run.batch_tokens // (run.batch_size * run.block_size * world)
    common.make_folder(run.out_dir, "--out_dir")
    if ddp:
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=3))
    rows = [check_device()]
    if rows[0]["status"] == "GO":
        rows += [guarded(name, fn) for name, fn in (("all-reduce", check_allreduce),
                                                    ("attention", check_attention),
                                                    ("numerics", check_numerics),
                                                    ("data", check_data))]
        data_ok = rows[-1]["status"] == "GO"
        raw, opts, scaler = build()
        compiled, fast = check_compile(raw)
        model = wrap(fast)
        speed = guarded("speed", check_speed, model, raw, opts, scaler)
        rows += [compiled, speed]
        if "step_s" in speed:  # the real step runs: measure what depends on it
            rows += [guarded("memory", check_memory, model, opts, scaler),
                     guarded("checkpoint", check_checkpoint, model, raw, opts, scaler),
                     guarded("eval", check_eval, fast, speed["step_s"])]
        else:
            rows += [row(name, "n/a", "not run: the real step failed")
                     for name in ("memory", "checkpoint", "eval")]
    per_rank = [rows]
    if ddp:
        per_rank = [None] * world
        dist.all_gather_object(per_rank, rows)
    code = report(merge(per_rank)) if master else 0
    if ddp:
        flag = torch.tensor([code], device=device)
        dist.broadcast(flag, 0)
        code = int(flag.item())
        dist.destroy_process_group()
    return code


data_ok, grad_accum = False, 1
if __name__ == "__main__":
    sys.exit(main())
