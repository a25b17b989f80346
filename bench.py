"""
Where the training time goes, measured honestly. bench.py times real training steps, taken the way
train.py takes them (the same model code, precision setup, batch sampling, gradient accumulation,
clipping, GradScaler and AdamW), after a warm-up, and prints ms/step, tokens/s, MFU against the
device's peak, peak GPU memory and the FLOPs per token it assumed. Then the generation speed with
and without the KV cache, the data loader's cost per batch, and a projection of what 8×V100 would
do in the 23-hour budget.

    python bench.py                                     # option A's model, synthetic tokens
    python bench.py config/option_b.py --batch_size=8 --data=data/owt_sample
    python bench.py --compare                           # options A, B and C side by side
    python bench.py --compare=speedups                  # each optimisation on and off
    python bench.py --compare=base,loss_chunk=0,a+batch_size=32 --json=bench.json
    python bench.py --find_batch                        # the largest micro-batch that fits (CUDA)
    python bench.py --project                           # the 8×V100 projection alone
    python bench.py --plan                              # memory per micro-batch; what fits a V100

The variants of --compare live in one process and their timed rounds alternate (A B C, B C A,
C A B, ...), so a machine that drifts (clocks, a neighbour's job) biases no ratio. Figures from a
CPU are small, but the ratios between variants are real; every figure comes with the shapes,
thread count and versions it was measured at. BENCHMARKS.md keeps the record.
"""

import functools
import gc
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field, fields

import torch

import common
from common import (
    autocast,
    check_data,
    check_json_path,
    check_optimizer,
    check_ranges,
    compile_default,
    die,
    get_batch,
    resolve_dtype,
    setup,
    train_step,
    write_json,
)
from configurator import configure
from model import GPT, OPTIONS, GPTConfig, flops_per_token, peak_flops

# ---------------------------------------------------------------- settings
# The model: every GPTConfig field at its default (option A; model.py says why each is what it is),
# changed by config/option_*.py or --key=value. bench.py reads those configs for the model and batch
# settings; their training-only keys (schedule, budget, out_dir...) are skipped.
globals().update({f.name: f.default for f in fields(GPTConfig) if f.init})
# one optimizer step, as train.py takes it
batch_size = 16  # micro-batch per GPU
grad_accum = 1  # micro-steps per optimizer step (train.py derives it from batch_tokens:
                # 4 on 8 GPUs)
grad_clip = 1.0
optimizer = "adamw"  # or 'muon' (Muon for the blocks' matrices, AdamW for the rest), as train.py
learning_rate = 1e-3
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
muon_lr = 0.02
muon_momentum = 0.95
muon_weight_decay = 0.0
# where and how
device = "auto"  # auto: cuda when there is a GPU, else cpu; or cpu, cuda, cuda:1
dtype = "auto"  # auto: bf16 on Ampere and later, fp16 (with a GradScaler) on V100, fp32 on a CPU
compile = None  # torch.compile (default mode, see build()); None: as train.py
                # (common.compile_default)
fused_adamw = True  # the fused AdamW kernel on CUDA (False: the foreach implementation)
data = "synthetic"  # random tokens already on the device, or a folder made by prepare.py
threads = 0  # CPU threads for torch; 0 keeps torch's default
seed = 1337
# timing
warmup = 3  # untimed steps first (torch.compile compiles in the first)
iters = 10  # steps per timed round
repeats = 3  # timed rounds per variant, alternating between variants
compare = ""  # variants side by side: options | speedups | compile | precision | a,b,...
              # (see PRESETS)
gen_tokens = 256  # generation row: new tokens (0 skips it)
gen_prompt = 32  # prompt tokens for the generation row
gen_repeats = 2
loader_iters = 20  # batches timed for the data loader row (real data only)
find_batch = False  # search the largest micro-batch that fits in GPU memory, print it and stop
find_batch_max = 1024
peak_tflops = 0.0  # the device's peak for MFU; 0: from model.PEAK_FLOPS by GPU name and dtype
project = False  # print only the 8×V100 projection
plan = False  # memory per GPU by micro-batch for options A, B, C at block_size (measured on the
              # CPU), then stop
project_mfu = 0.30  # MFU assumed by the projection (a stated assumption, not a measurement)
json = ""  # also write every figure to this path

# ---------------------------------------------------------------- what --compare can run

# Each comma-separated variant is 'base' or '+'-joined parts: an option letter (its shape from
# model.OPTIONS) or KEY=VALUE for one of VARIANT_KEYS, applied over the command line's settings.
PRESETS = {
    "options": "a,b,c",
    "speedups": "base,vocab_multiple_of=1,ffn_multiple_of=8,ffn_multiple_of=64,loss_chunk=0,"
                "fused_adamw=False",
    "compile": "compile=False,compile=True",
    "precision": "dtype=float32,dtype=bfloat16,dtype=float16",
    "optimizers": "optimizer=adamw,optimizer=muon",
}
MODEL_KEYS = [f.name for f in fields(GPTConfig) if f.init]
VARIANT_KEYS = MODEL_KEYS + ["batch_size", "grad_accum", "grad_clip", "dtype", "compile",
                             "fused_adamw", "optimizer"]
# what build() reads: the variant keys and the optimizers' settings
BUILD_KEYS = VARIANT_KEYS + ["seed", "learning_rate", "weight_decay", "beta1", "beta2", "muon_lr",
                             "muon_momentum", "muon_weight_decay"]
BARE_FLAGS = {"compare": "options", "compile": "True"}  # what a bare --compare or --compile means

# The 8×V100 projection (the V100's dense fp16 tensor-core peak comes from model.PEAK_FLOPS), and
# the size of OpenWebText's train split in GPT-2 tokens (nanoGPT's prepare.py: 9,035,582,198).
# A dict, so not a --key setting.
BUDGET = dict(gpus=8, hours=23.0, owt_train_tokens=common.OWT_TRAIN_TOKENS)


def parse_variants(spec: str, settings: dict) -> list[tuple[str, dict]]:
    """[(name, settings)] for a --compare spec; one variant, 'base', when spec is empty."""
    spec = PRESETS.get(spec, spec) or "base"
    variants = []
    for item in spec.split(","):
        s, parts = dict(settings), [p.strip() for p in item.split("+")]
        for part in parts:
            if part.lower() in OPTIONS:
                s.update(OPTIONS[part.lower()])
            elif part.partition("=")[0] in VARIANT_KEYS and "=" in part:
                # the configurator's type checks and errors
                configure(s, [f"--{part}"], verbose=False)
            elif part != "base":
                die(f"--compare: '{part}' is not a preset ({', '.join(PRESETS)}), an option "
                    f"(a, b, c), 'base', or KEY=VALUE with KEY one of {', '.join(VARIANT_KEYS)}")
        variants.append(("+".join(p.upper() if p.lower() in OPTIONS else p for p in parts), s))
    return variants


def model_config(s: dict) -> GPTConfig:
    try:
        return GPTConfig(**{k: s[k] for k in MODEL_KEYS})
    except ValueError as e:
        die(f"bad model settings: {e}")


def largest_fitting(fits, start: int, limit: int) -> int:
    """The largest b in 1..limit with fits(b), for a fits() that holds up to some size and fails
    beyond it: double from start while it fits, then bisect between the last fit and the first
    failure. 0 when not even 1 fits."""
    lo, b = 0, min(max(start, 1), limit)
    while fits(b):
        lo = b
        if b == limit:
            return limit
        b = min(2 * b, limit)
    hi = b  # fits(lo) held (or lo is 0), fits(hi) failed
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def projection(mfu: float) -> list[dict]:
    """Tokens 8×V100 would train in 23 h for each option at its real shape (block 1024), from
    FLOPs per token and an assumed MFU: a projection, not a measurement."""
    peak = peak_flops("V100", "float16")
    rows = []
    for name, shape in OPTIONS.items():
        cfg = GPTConfig(**shape)
        with torch.device("meta"):  # parameters without memory: only their count is needed
            n = GPT(cfg).num_params()
        fpt = flops_per_token(cfg, n)
        tokens_per_s = BUDGET["gpus"] * peak * mfu / fpt
        tokens = tokens_per_s * BUDGET["hours"] * 3600
        rows.append(dict(option=name.upper(), params=n, flops_per_token=fpt, mfu=mfu,
                         gpus=BUDGET["gpus"], peak_flops_per_gpu=peak, tokens_per_s=tokens_per_s,
                         hours=BUDGET["hours"], tokens=tokens,
                         epochs=tokens / BUDGET["owt_train_tokens"]))
    return rows


# ---------------------------------------------------------------- the training step

@dataclass
class Run:
    """One variant: its settings, model, optimizer and timings."""
    name: str
    s: dict
    model: GPT
    step_model: torch.nn.Module  # the model, or its torch.compile wrapper
    optimizers: list[torch.optim.Optimizer]  # [AdamW] or [Muon, AdamW]
    scaler: torch.amp.GradScaler
    rng: torch.Generator
    pool: list = field(default_factory=list)  # synthetic batches, already on the device
    times: list = field(default_factory=list)  # seconds per step, one per timed round
    peak_mem: int | None = None
    loss: float = float("nan")


def device_type() -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def sync():
    if device_type() == "cuda":
        torch.cuda.synchronize()


def next_batch(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """The next micro-batch: common.get_batch on real data (pinned, asynchronous copy to the GPU),
    or one of two fixed random batches already on the device, which costs nothing."""
    B, T = run.s["batch_size"], run.s["block_size"]
    if data != "synthetic":
        return get_batch(data, "train", B, T, run.rng, device,
                         run.s["vocab_size"])  # with train.py's id check
    if not run.pool or run.pool[0][0].shape != (B, T):
        tokens = [torch.randint(0, run.s["vocab_size"], (B, T + 1), generator=run.rng)
                  for _ in range(2)]
        run.pool = [(t[:, :-1].to(device), t[:, 1:].to(device)) for t in tokens]
    run.pool.reverse()
    return run.pool[0]


def build(name: str, s: dict) -> Run:
    torch.manual_seed(s["seed"])  # the same initial weights for variants of the same shape
    model = GPT(model_config(s)).to(device)
    # configure_optimizers picks the fused AdamW kernel on CUDA (the whole update in one launch).
    # Asking for the CPU flavour gives the baseline: AdamW's foreach implementation on CUDA tensors.
    optimizers = model.configure_optimizers(
        s["weight_decay"], s["learning_rate"], (s["beta1"], s["beta2"]),
        device_type() if s["fused_adamw"] else "cpu", s["optimizer"],
        s["muon_lr"], s["muon_momentum"], s["muon_weight_decay"])
    # fp16 needs loss scaling (its gradients underflow); bf16 and fp32 do not, and a disabled
    # scaler passes everything through, so the step below is the same code for all three.
    scaler = torch.amp.GradScaler(device_type(), enabled=s["dtype"] == "float16")
    # The default mode, not max-autotune: max-autotune swaps cuBLAS GEMMs for Triton templates,
    # which need sm80-era features and lose to cuBLAS on the V100s (sm70) we train on; the default
    # mode fuses the elementwise and norm kernels around the GEMMs and leaves the GEMMs to cuBLAS.
    step_model = torch.compile(model) if s["compile"] else model
    return Run(name, s, model, step_model, optimizers, scaler,
               torch.Generator().manual_seed(s["seed"]))


def step(run: Run) -> float:
    """One optimizer step as train.py takes it (common.train_step), the loss read back: like
    train.py, one synchronisation with the GPU per step."""
    s = run.s
    loss_sum, _, _ = train_step(run.step_model, run.optimizers, run.scaler,
                                lambda: next_batch(run), s["grad_accum"], s["grad_clip"],
                                autocast(device_type(), s["dtype"]))
    return loss_sum.item() / s["grad_accum"]


def resident_bytes(run: Run) -> int:
    """Weights, buffers and optimizer state of one variant: what stays allocated between steps."""
    tensors = list(run.model.parameters()) + list(run.model.buffers())
    tensors += [t for opt in run.optimizers for state in opt.state.values() for t in state.values()
                if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors)


def timed_round(run: Run) -> None:
    """iters steps in one block, timed between synchronisations with the GPU at its ends. Peak
    memory: what this variant holds at its peak (its weights, optimizer state, gradients,
    activations), from max_memory_allocated with the other variants' resident tensors left out."""
    if device_type() == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        run.loss = step(run)
    sync()
    run.times.append((time.perf_counter() - t0) / iters)
    if device_type() == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before + resident_bytes(run)
        run.peak_mem = max(run.peak_mem or 0, peak)


def step_fits(run: Run, b: int) -> bool:
    """Whether two training steps at micro-batch b fit in GPU memory (the second holds the
    optimizer state the first allocated). Frees everything before returning."""
    run.s["batch_size"], run.pool = b, []
    try:
        for _ in range(2):
            step(run)
        sync()
        ok = True
    except torch.cuda.OutOfMemoryError:
        ok = False
        # a step cut short may leave the GradScaler mid-step (unscaled, not updated): start afresh
        run.scaler = torch.amp.GradScaler(device_type(), enabled=run.scaler.is_enabled())
    run.pool = []
    for opt in run.optimizers:
        opt.zero_grad(set_to_none=True)
    gc.collect()
    if device_type() == "cuda":
        torch.cuda.empty_cache()
    print(f"  micro-batch {b}: {'fits' if ok else 'out of memory'}")
    return ok


# ---------------------------------------------------------------- the other rows

def bench_generation(s: dict) -> dict:
    """Tokens/s of model.generate at batch 1 with and without the KV cache, alternating. The model
    has the variant's shape, with block_size raised if prompt + new tokens need it."""
    cfg = model_config(s | {"block_size": max(s["block_size"], gen_prompt + gen_tokens)})
    torch.manual_seed(s["seed"])
    model = GPT(cfg).to(device).eval()
    if s["compile"]:  # both paths run the compiled step; the warm-up below compiles it
        model.compile_generation()
    prompt = torch.randint(0, cfg.vocab_size, (1, gen_prompt),
                           generator=torch.Generator().manual_seed(seed))
    prompt = prompt.to(device)
    times = {True: [], False: []}

    def generate(n: int, use_cache: bool) -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed(seed)
        with autocast(device_type(), s["dtype"]):
            return model.generate(prompt, n, stop=(),  # never stops early
                                  generator=g, use_cache=use_cache)

    for use_cache in (True, False):
        generate(4, use_cache)  # warm-up
    for r in range(gen_repeats):
        for use_cache in ((True, False) if r % 2 == 0 else (False, True)):
            sync()
            t0 = time.perf_counter()
            out = generate(gen_tokens, use_cache)
            sync()
            times[use_cache].append(time.perf_counter() - t0)
            assert out.size(1) == gen_prompt + gen_tokens
    cached, uncached = (gen_tokens / statistics.median(times[c]) for c in (True, False))
    return dict(prompt=gen_prompt, new_tokens=gen_tokens, batch=1, block_size=cfg.block_size,
                dtype=s["dtype"], compiled=bool(s["compile"]),
                kv_cache_tokens_per_s=cached, no_cache_tokens_per_s=uncached,
                speedup=cached / uncached)


def bench_loader(s: dict, step_s: float) -> dict:
    """ms per common.get_batch call (memmap, stack, pinned copy to the GPU) at the step's shape."""
    B, T = s["batch_size"], s["block_size"]
    g = torch.Generator().manual_seed(seed)
    get_batch(data, "train", B, T, g, device, s["vocab_size"])
    sync()
    t0 = time.perf_counter()
    for _ in range(loader_iters):
        get_batch(data, "train", B, T, g, device, s["vocab_size"])
    sync()
    per_batch = (time.perf_counter() - t0) / loader_iters
    return dict(data=data, batch_size=B, block_size=T, ms_per_batch=per_batch * 1000,
                fraction_of_micro_step=per_batch / (step_s / s["grad_accum"]))


def describe_env() -> dict:
    env = dict(date=time.strftime("%Y-%m-%d %H:%M"), torch=torch.__version__,
               python=platform.python_version(), device=device, threads=torch.get_num_threads())
    if device_type() == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        env |= dict(gpu=torch.cuda.get_device_name(device), capability=f"sm{major}{minor}",
                    cuda=torch.version.cuda,
                    gpu_memory_gib=torch.cuda.get_device_properties(device).total_memory / 2**30)
    else:
        env |= dict(cpu=common.cpu_name(), cores=os.cpu_count(), load_avg_1min=os.getloadavg()[0])
    return env


def sdpa_backend(dt: str) -> str:
    """The attention kernel F.scaled_dot_product_attention will pick for training (causal, no mask).
    We never force one: PyTorch picks flash where it can run, memory-efficient attention
    elsewhere."""
    if device_type() != "cuda":
        return "CPU fused kernel"
    cap = torch.cuda.get_device_capability(device)
    if cap >= (8, 0) and dt != "float32" and torch.backends.cuda.flash_sdp_enabled():
        return "flash (sm80+, half precision)"
    if torch.backends.cuda.mem_efficient_sdp_enabled():
        return "memory-efficient" + (" (flash needs sm80+)" if cap < (8, 0)
                                     else " (flash needs bf16/fp16)")
    return "math"


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in cells]
    return "\n".join(lines)


def print_projection(rows: list[dict]) -> None:
    r0 = rows[0]
    print(f"\nprojection, not a measurement: {r0['gpus']}×V100 at "
          f"{r0['peak_flops_per_gpu'] / 1e12:.0f} TFLOP/s fp16 peak each, ASSUMED MFU "
          f"{r0['mfu']:.0%}, {r0['hours']:g} h, epochs over OpenWebText's "
          f"{BUDGET['owt_train_tokens'] / 1e9:.1f}B train tokens")
    print(table(["option", "params", "FLOPs/token", "tokens/s", "tokens in 23 h", "epochs"],
                [[r["option"], f"{r['params']:,}", f"{r['flops_per_token'] / 1e6:.1f}M",
                  f"{r['tokens_per_s'] / 1e6:.2f}M", f"{r['tokens'] / 1e9:.1f}B",
                  f"{r['epochs']:.1f}"] for r in rows]))


# ---------------------------------------------------------------- --plan: GPU memory by micro-batch

# The V100s we train on: the memory a 16 GB and a 32 GB one expose to CUDA (16,160 and 32,510 MiB,
# what torch.cuda.get_device_properties().total_memory reports, not the nominal 16 and 32 GiB), plus
# the GPU this runs beside when there is one (read from it); the CUDA context every process pays
# before its first tensor; NCCL's communicator buffers (channels x peers x NCCL_BUFFSIZE, allocated
# outside PyTorch's allocator at the first all-reduce); and the share held back for the caching
# allocator's fragmentation. The last three are assumptions (typical figures), not measurements:
# --plan says so, and preflight.py measures them with DDP on the real GPUs.
V100_GIB = {16: 16160 / 1024, 32: 32510 / 1024}  # nominal -> exposed
CUDA_CONTEXT_BYTES = 0.5 * 2**30
NCCL_BYTES = 0.5 * 2**30
FRAGMENTATION = 0.15


def saved_activation_bytes(model: GPT, B: int, T: int, dtype: str, backward: bool = True) -> int:
    """Bytes autograd saves for backward over one forward of a (B, T) micro-batch: every tensor the
    saved_tensors_hooks see, deduplicated by storage (views of one tensor count once), each
    storage's untyped nbytes. The parameters and buffers are left out (they are resident anyway);
    what stays includes autocast's half-precision weight copies and the chunked loss's fp32
    gradients, which autograd does hold. Then the backward runs for real, so the step is one
    train.py would take."""
    resident = {t.untyped_storage().data_ptr()
                for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in resident and st.nbytes() > 0:
            seen[st.data_ptr()] = st.nbytes()
        return t

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.config.vocab_size, (B, T), generator=g)
    y = torch.randint(0, model.config.vocab_size, (B, T), generator=g)
    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast("cpu", dtype):
        _, loss = model(x, y)
    if backward:
        loss.backward()
        model.zero_grad(set_to_none=True)
    return sum(seen.values())


def activation_formula(cfg: GPTConfig, B: int, T: int, dtype: str) -> dict:
    """Saved-for-backward bytes by hand, in the manner of Korthikanti et al. 2022 ("Reducing
    Activation Recomputation", sbh(34 + 5as/h) per layer for GPT-3): here per token and per layer,
    for this model.py's blocks, with a = bytes of an autocast activation (2 for fp16/bf16, 4 for
    fp32), d, heads H, ffn hidden f. Fused attention saves its logsumexp (4·H per token), never the
    T×T scores.
      norms (2):  fp32 input (4d) and rstd (4); RMSNorm also the normalised x before its gain (4d),
                  LayerNorm its mean (4)
      linears:    the inputs of c_attn and mlp.c_fc (a·d each), and attn.c_proj's (a·d) where
                  SDPA's output is laid out (B, H, T, hd) so that transpose().contiguous() copies
                  it: on the CPU with RoPE's contiguous q, k (options A, B), not with c_attn's views
                  (option C)
      attention:  c_attn's q, k, v (3a·d), the rotated q and k (2a·d, RoPE only), SDPA's output
                  (a·d) and logsumexp (4H)
      MLP:        SwiGLU: c_fc's gate and up (2a·f), silu(gate) (a·f), their product (a·f);
                  GELU: 2a·f
    plus, per token, the ids (8), the final norm and the chunked loss's fp32 grad_x (4d); and, once
    per micro-batch, the loss's fp32 weight gradient (4·V·d), learned positions' ids (8T) and under
    autocast the half-precision copies of the blocks' weights (a per weight)."""
    a = 2 if dtype in ("float16", "bfloat16") else 4
    d, H, f = cfg.n_embd, cfg.n_head, cfg.ffn_hidden
    norm = 4 * d + 8 if cfg.norm == "layernorm" else 8 * d + 4
    rope = cfg.pos_emb == "rope"
    attn = 3 * a * d + (2 * a * d if rope else 0) + a * d + 4 * H
    mlp = 4 * a * f if cfg.mlp == "swiglu" else 2 * a * f
    per_layer = 2 * norm + (3 if rope else 2) * a * d + attn + mlp
    per_token = cfg.n_layer * per_layer + 8 + norm + 4 * d
    half_weights = a * sum(block_weight_counts(cfg)) if a == 2 else 0
    fixed = 4 * cfg.padded_vocab_size * d + (0 if rope else 8 * T) + half_weights
    return dict(per_layer_token=per_layer, per_token=per_token, fixed=fixed,
                total=fixed + per_token * B * T)


def block_weight_counts(cfg: GPTConfig) -> list[int]:
    """The weight matrices of the blocks' linears (what autocast casts to half precision)."""
    d, f = cfg.n_embd, cfg.ffn_hidden
    f_in = 2 * f if cfg.mlp == "swiglu" else f
    return [3 * d * d, d * d, d * f_in, f * d] * cfg.n_layer


def logits_transient_bytes(cfg: GPTConfig, B: int, T: int, dtype: str, cpu: bool = False) -> int:
    """The chunked loss's peak on top of the saved activations (model.ChunkedCrossEntropy): one
    chunk of n = min(B·T, loss_chunk) tokens of logits, in fp32 (4 bytes) with, under autocast, the
    half-precision gradient beside it (2), and two fp32 V×d weight-gradient temporaries (the product
    and its unscaled copy). cpu: also the contiguous copy of the transposed gradient the CPU's
    matmul makes (a bytes a logit), which cuBLAS does not need. A formula from the code; test_bench
    checks it (cpu=True) against the live tensors' bytes over one call on a tiny model."""
    n = min(B * T, cfg.loss_chunk) if cfg.loss_chunk > 0 else B * T
    a = 2 if dtype in ("float16", "bfloat16") else 4
    per_logit = 4 + (a if a == 2 else 0) + (a if cpu else 0)
    return n * cfg.padded_vocab_size * per_logit + 8 * cfg.padded_vocab_size * cfg.n_embd


def state_bytes(n_params: int, optimizer: str, n_muon: int = 0) -> dict:
    """Per GPU, beside the activations: fp32 weights (4), gradients (4), AdamW's two moments (8;
    Muon's momentum, 4, for the n_muon parameters it takes). DDP's gradient buckets add nothing:
    train.py's gradient_as_bucket_view makes the gradients views into them."""
    opt = 8 * (n_params - n_muon) + 4 * n_muon if optimizer == "muon" else 8 * n_params
    return dict(weights=4 * n_params, grads=4 * n_params, optimizer=opt, ddp_buckets=0,
                total=8 * n_params + opt)


def plan_total(state: int, act_fixed: float, act_per_sample: float, transient, B: int) -> float:
    """Bytes one GPU needs at micro-batch B, headroom included: (state + activations + the loss's
    transient) × (1 + FRAGMENTATION) + the CUDA context and NCCL's buffers."""
    held = (state + act_fixed + act_per_sample * B + transient(B)) * (1 + FRAGMENTATION)
    return held + CUDA_CONTEXT_BYTES + NCCL_BYTES


def largest_planned(fits_bytes: float, total_at) -> tuple[int, int]:
    """(largest power of two, largest integer) micro-batch whose planned total
    fits in fits_bytes."""
    best = largest_fitting(lambda b: total_at(b) <= fits_bytes, 1, 4096)
    pow2 = 1 << (best.bit_length() - 1) if best else 0
    return pow2, best


def memory_plan(options: list[str], T: int, dtypes=("bfloat16", "float32"), batches=(1, 2),
                shape_kw: dict | None = None, capacities: dict | None = None) -> list[dict]:
    """For each option and dtype: saved activations measured at micro-batches 1 and 2 (block T, on
    the CPU, one real forward and backward each), the straight line through them, the formula beside
    it, the optimizer state, and the largest micro-batch each GPU holds with headroom: capacities,
    {name: GiB exposed}, V100_GIB's by default."""
    capacities = capacities or V100_GIB
    rows = []
    for name in options:
        cfg = GPTConfig(**(OPTIONS[name] | dict(block_size=T) | (shape_kw or {})))
        torch.manual_seed(0)
        model = GPT(cfg)
        n_params = sum(p.numel() for p in model.parameters())  # padded rows too: they are allocated
        n_muon = sum(p.numel() for n, p in model.named_parameters()
                     if p.dim() == 2 and n.startswith("transformer.h."))
        for dt in dtypes:
            measured = {B: saved_activation_bytes(model, B, T, dt) for B in batches}
            b0, b1 = batches[0], batches[-1]
            per_sample = (measured[b1] - measured[b0]) / (b1 - b0)
            fixed = measured[b0] - per_sample * b0
            formula = {B: activation_formula(cfg, B, T, dt)["total"] for B in batches}
            row = dict(option=name.upper(), dtype=dt, block_size=T, params=n_params,
                       measured=measured, formula=formula, act_per_sample=per_sample,
                       act_fixed=fixed, ratio=measured[b1] / formula[b1])
            for opt in ("adamw", "muon"):
                state = state_bytes(n_params, opt, n_muon)["total"]

                total_at = functools.partial(
                    plan_total, state, fixed, per_sample,
                    functools.partial(logits_transient_bytes, cfg, T=T, dtype=dt))
                row[f"state_{opt}"] = state
                for gpu, gib in capacities.items():
                    row[f"fit{gpu}_{opt}"] = largest_planned(gib * 2**30, total_at)
                row[f"total_at_16_{opt}"] = total_at(16)
            rows.append(row)
    return rows


def print_plan(rows: list[dict], capacities: dict | None = None) -> None:
    gb = 2**30
    capacities = capacities or V100_GIB
    names = {gpu: f"{gpu} GB V100" if gpu in V100_GIB else gpu for gpu in capacities}
    T = rows[0]["block_size"]
    print(f"\nmemory per GPU at block {T}: saved-for-backward activations measured on the CPU "
          "(one real forward and backward at micro-batches "
          f"{' and '.join(str(b) for b in rows[0]['measured'])}, "
          "torch.autograd.graph.saved_tensors_hooks, storages deduplicated), extrapolated linearly "
          "in the micro-batch; bf16 autocast's bytes are fp16 autocast's on a V100 (same 2-byte "
          "activations)")
    print(table(["option", "dtype", "params", "act fixed", "act/sample", "measured B=1",
                 "formula B=1", "measured B=2", "formula B=2", "meas/formula"],
                [[r["option"], r["dtype"], f"{r['params']:,}", f"{r['act_fixed'] / gb:.3f} GiB",
                  f"{r['act_per_sample'] / gb:.3f} GiB"]
                 + [f"{r[k][b] / gb:.3f} GiB" for b in r["measured"]
                    for k in ("measured", "formula")]
                 + [f"{r['ratio']:.3f}"] for r in rows]))
    exposed = ", ".join(f"{names[g]} {gib:.2f} GiB" for g, gib in capacities.items())
    print(f"\nlargest micro-batch per GPU (power of two / any integer), of the memory each "
          f"exposes ({exposed}): (state + activations + the chunked loss's transient) × "
          f"{1 + FRAGMENTATION:.2f} (allocator headroom, assumed) + "
          f"{CUDA_CONTEXT_BYTES / gb:.1f} GiB (CUDA context, assumed) + "
          f"{NCCL_BYTES / gb:.1f} GiB (NCCL's buffers, assumed); state = fp32 weights 4 + grads 4 "
          "(DDP's buckets themselves) + AdamW 8 (Muon 4 for its matrices) bytes per parameter")
    print(table(["option", "dtype", "state AdamW", "state Muon", "total at 16 (AdamW)"]
                + [f"{names[g]} {o}" for o in ("AdamW", "Muon") for g in capacities],
                [[r["option"], r["dtype"], f"{r['state_adamw'] / gb:.2f} GiB",
                  f"{r['state_muon'] / gb:.2f} GiB", f"{r['total_at_16_adamw'] / gb:.2f} GiB"]
                 + [f"{r[f'fit{g}_{o}'][0]} / {r[f'fit{g}_{o}'][1]}"
                    for o in ("adamw", "muon") for g in capacities]
                 for r in rows]))
    print("fp16 is the V100's precision (no bf16 tensor cores); fp32 for comparison. option_a.py's "
          "batch_size 16 on 8 GPUs: batch_tokens 524,288 / (16 × 1024 × 8) = 4 accumulation steps; "
          "micro-batch 32 would be 2.")


# ---------------------------------------------------------------- main

def check_settings(config: dict) -> None:
    """Settings that would crash mid-run (a median of no rounds) or print nonsense (a projection of
    0 tokens) are refused before any work."""
    check_ranges(config, {"batch_size": 1, "grad_accum": 1, "iters": 1, "repeats": 1, "warmup": 0,
                          "gen_tokens": 0, "gen_prompt": 1, "gen_repeats": 1, "loader_iters": 1,
                          "find_batch_max": 1, "threads": 0, "peak_tflops": 0,
                          "weight_decay": 0, "grad_clip": 0})
    check_optimizer(config)
    if not 0 < project_mfu <= 1:
        die(f"--project_mfu is a fraction of the peak, in (0, 1] (0.3 = 30%), got {project_mfu}")
    # --project and --find_batch each do one job and stop: what they would skip is refused, not
    # ignored (a --compare that times nothing reads as if it had)
    if project and (compare or find_batch):
        skipped = "compare" if compare else "find_batch"
        die(f"--project prints the 8×V100 projection alone and would ignore --{skipped}: "
            "drop one of them")
    if json:
        check_json_path(json)


def plan_mode(config: dict) -> None:
    """--plan: the memory plan of every option, always on the CPU: its bytes saved for backward
    are a GPU's (the same tensors, the same dtypes)."""
    capacities = dict(V100_GIB)
    if torch.cuda.is_available():  # and the GPU here, as much as it exposes
        capacities[torch.cuda.get_device_name()] = torch.cuda.mem_get_info()[1] / 2**30
    rows = memory_plan(list(OPTIONS), config["block_size"], capacities=capacities)
    print(f"\nbench.py --plan {time.strftime('%Y-%m-%d %H:%M')}: torch {torch.__version__}, CPU")
    print_plan(rows, capacities)
    if json:
        write_json(json, dict(plan=rows))


def project_mode(proj: dict) -> None:
    """--project: the 8×V100 projection alone."""
    print_projection(proj)
    if json:
        write_json(json, dict(projection=proj))


def checked_variants(config: dict) -> list[tuple[str, dict]]:
    """The variants --compare names, each checked and resolved (dtype, compile) for this device, and
    the data checked, before any timing."""
    variants = parse_variants(compare, {k: config[k] for k in BUILD_KEYS})
    for name, s in variants:
        # --compare=batch_size=0 skips the checks above
        if s["batch_size"] < 1 or s["grad_accum"] < 1:
            die(f"batch_size and grad_accum must be at least 1, got {s['batch_size']} and "
                f"{s['grad_accum']} in {name}")
        s["dtype"] = resolve_dtype(s["dtype"], device_type())
        if s["optimizer"] not in ("adamw", "muon"):
            die(f"optimizer must be 'adamw' or 'muon', got '{s['optimizer']}' in {name}")
        if s["compile"] not in (None, True, False):
            die(f"compile must be True, False or None (automatic), got {s['compile']!r} in {name}")
        s["compile"] = compile_default(device) if s["compile"] is None else s["compile"]
    if data != "synthetic":  # one-line errors for missing or damaged data, before any timing
        check_data(data, ("train",), max(s["block_size"] for _, s in variants),
                   min(s["vocab_size"] for _, s in variants))
    if any(s["compile"] for _, s in variants):
        # each compiled variant adds a cache entry on GPT.forward's code; keep them all compiled
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit,
                                                     8 * len(variants))
    return variants


def find_batch_mode(variants: list[tuple[str, dict]], env: dict, config: dict) -> None:
    """--find_batch: the largest micro-batch of one variant that fits in GPU memory."""
    if device_type() != "cuda":
        die("--find_batch searches GPU memory: it needs a CUDA device (--device=cuda)")
    if len(variants) > 1:
        die(f"--find_batch searches one variant's micro-batch, and --compare={compare} gives "
            f"{len(variants)}: give one (e.g. --compare={variants[0][0]}), or none for the "
            f"settings as they are")
    name, s = variants[0]
    run = build(name, s)
    print(f"largest micro-batch of {name} at block {s['block_size']}, {s['dtype']}, "
          f"compile {'on' if s['compile'] else 'off'}:")
    best = largest_fitting(lambda b: step_fits(run, b), s["batch_size"], find_batch_max)
    print(f"largest micro-batch that fits: {best} (time it, and powers of two below it, with "
          f"--compare=batch_size=N,... to find the fastest)")
    if json:
        found = dict(variant=name, largest=best)
        write_json(json, dict(env=env, settings=config, find_batch=found))


def time_variants(variants: list[tuple[str, dict]]) -> list:
    """Each variant built, warmed up, then timed in alternating rounds."""
    runs = [build(name, s) for name, s in variants]
    s0 = runs[0].s
    shapes = sorted({(r.s["batch_size"], r.s["block_size"], r.s["grad_accum"]) for r in runs})
    print("shape: " + "; ".join(f"micro-batch {B} × block {T} × accumulation {A} = "
                                f"{B * T * A:,} tokens/step" for B, T, A in shapes)
          + f"; data: {data}; attention: {sdpa_backend(s0['dtype'])}")
    print(f"timing: warm-up {warmup} steps, then {repeats} rounds of {iters} steps per variant"
          f"{', alternating' if len(runs) > 1 else ''}; median round, "
          "spread = (slowest - fastest) / median")

    for run in runs:
        for _ in range(warmup):
            step(run)
    sync()
    for r in range(repeats):
        k = r % len(runs)
        for run in runs[k:] + runs[:k]:  # each round starts one variant later: none always first
            timed_round(run)
    return runs


def results_of(runs: list, env: dict) -> list[dict]:
    """Each timed variant's row: its shape, speed, MFU and memory."""
    results = []
    for run in runs:
        s, dt = run.s, statistics.median(run.times)
        tokens = s["batch_size"] * s["block_size"] * s["grad_accum"]
        cfg = run.model.config
        gpu = env.get("gpu", "")
        peak = peak_tflops * 1e12 or peak_flops(gpu, s["dtype"])
        results.append(dict(
            variant=run.name, params=run.model.num_params(), padded_vocab=cfg.padded_vocab_size,
            padding_params=(cfg.padded_vocab_size - cfg.vocab_size) * cfg.n_embd,
            ffn_hidden=cfg.ffn_hidden, dtype=s["dtype"], compile=s["compile"],
            fused_adamw=s["fused_adamw"] and device_type() == "cuda",
            loss_chunk=cfg.loss_chunk, batch_size=s["batch_size"], block_size=s["block_size"],
            grad_accum=s["grad_accum"], tokens_per_step=tokens, ms_per_step=dt * 1000,
            ms_per_step_rounds=[t * 1000 for t in run.times],
            spread=(max(run.times) - min(run.times)) / dt,
            tokens_per_s=tokens / dt, flops_per_token=flops_per_token(cfg, run.model.num_params()),
            peak_flops=peak, mfu=run.model.estimate_mfu(tokens, dt, gpu, s["dtype"], peak),
            peak_memory_bytes=run.peak_mem, last_loss=run.loss))
    return results


def print_results(results: list[dict]) -> None:
    base_tps = results[0]["tokens_per_s"]
    print()
    print(table(["variant", "params", "vocab rows", "ffn", "dtype", "ms/step", "spread", "tokens/s",
                 "vs first", "MFU", "peak mem", "FLOPs/token"],
                [[r["variant"], f"{r['params']:,}", f"{r['padded_vocab']:,}", r["ffn_hidden"],
                  r["dtype"], f"{r['ms_per_step']:.1f}", f"{r['spread']:.0%}",
                  f"{r['tokens_per_s']:,.0f}", f"{r['tokens_per_s'] / base_tps:.2f}×",
                  "—" if r["mfu"] is None else f"{r['mfu']:.1%}",
                  "—" if r["peak_memory_bytes"] is None
                  else f"{r['peak_memory_bytes'] / 2**30:.2f} GiB",
                  f"{r['flops_per_token'] / 1e6:.1f}M"] for r in results]))
    print("params: at the real vocab (50,257 rows), the tied matrix once; the padding rows up to "
          "'vocab rows' are extra weights, never used. MFU: "
          + ("needs the device's peak: give --peak_tflops=N" if results[0]["mfu"] is None
             else f"against {results[0]['peak_flops'] / 1e12:.0f} TFLOP/s")
          + (". peak mem: GPU only" if device_type() != "cuda" else ""))


def compare_mode(variants: list[tuple[str, dict]], env: dict, config: dict, proj: dict) -> None:
    """The default: time the variants side by side, then generation and the data loader."""
    runs = time_variants(variants)
    s0 = runs[0].s
    results = results_of(runs, env)
    print_results(results)

    def save(**rows) -> None:
        if json:
            write_json(json, dict(env=env, settings=config, variants=results, projection=proj,
                                  **rows))

    # now: a run stopped while generation compiles keeps the training rows
    save(generation=None, loader=None)
    generation = loader = None
    if gen_tokens > 0:
        generation = bench_generation(s0)
        g = generation
        print(f"\ngeneration ({runs[0].name}, batch 1, {g['prompt']}-token prompt + "
              f"{g['new_tokens']} new, {g['dtype']}, {'compiled' if g['compiled'] else 'eager'}): "
              f"KV cache {g['kv_cache_tokens_per_s']:.1f} tokens/s, "
              f"no cache {g['no_cache_tokens_per_s']:.1f} tokens/s: "
              f"{g['speedup']:.1f}× faster with the cache")
    if data != "synthetic":
        loader = bench_loader(s0, results[0]["ms_per_step"] / 1000)
        print(f"data loader (common.get_batch, {loader['batch_size']}×{loader['block_size']} "
              f"from {data}): {loader['ms_per_batch']:.2f} ms per batch, "
              f"{loader['fraction_of_micro_step']:.2%} of a micro-step")
    print_projection(proj)
    save(generation=generation, loader=loader)
    if json:
        print(f"wrote {json}")


def main(argv: list[str]) -> None:
    """One mode a run: --plan, --project, --find_batch, or the timing of --compare's variants."""
    global device
    config = configure(globals(), argv, strict_files=False, bare=BARE_FLAGS)
    check_settings(config)
    if plan:
        return plan_mode(config)
    proj = projection(project_mfu)
    if project:
        return project_mode(proj)
    device = setup(device, threads=threads).device
    variants = checked_variants(config)
    env = describe_env()
    where = (f"{env['gpu']} ({env['capability']}, CUDA {env['cuda']}, "
             f"{env['gpu_memory_gib']:.0f} GiB)" if device_type() == "cuda" else
             f"CPU {env['cpu']} ({env['cores']} cores, load {env['load_avg_1min']:.1f})")
    print(f"\nbench.py {env['date']}: {where}, torch {env['torch']}, {env['threads']} threads")
    if find_batch:
        return find_batch_mode(variants, env, config)
    compare_mode(variants, env, config, proj)


if __name__ == "__main__":
    main(sys.argv[1:])
