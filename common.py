"""
The pieces train.py, bench.py, sample.py, chat.py and eval.py share, each in one place:
device and precision setup (setup), settings' range checks, the learning-rate schedule, one
optimizer step, batch sampling from the token files, the tokenizer, and checkpoints that are
written atomically and loaded without running code from the file. One-line errors (die) live in
configurator.py with the output-path checks, torch-free; they are imported here too.
"""

import contextlib
import inspect
import json
import math
import os
import platform
import sys
from dataclasses import fields
from typing import NamedTuple, NoReturn

# torch.compile starts a pool of compile workers in each process, one a core (up to 32): under
# torchrun every rank of a node would start its own pool of every core. Share the node's cores among
# its ranks instead; inductor reads this on its first import, which importing torch does not do.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS",
                      str(max(1, (os.cpu_count() or 1)
                              // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))))

import numpy as np  # noqa: E402 (after the setting above)
import torch  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

from configurator import (  # noqa: F401 (re-exported: the scripts take them from here)
    check_json_path,
    check_writable,
    die,
    file_in_the_way,
    make_folder,
    write_json,
)
from model import EOT_TOKEN, GPT, GPTConfig


def _one_line_on_ctrl_c(kind, value, traceback) -> None:
    """Ctrl-C in any script that imports this one is a line, not a KeyboardInterrupt traceback.
    Every output is written under a .tmp name and renamed when whole, so an interrupt leaves the old
    file or none, never half. Python still exits by SIGINT (status 130 in a shell). train.py,
    sample.py and chat.py catch it themselves."""
    if issubclass(kind, KeyboardInterrupt):
        print("error: interrupted (Ctrl-C); nothing half-written is left", file=sys.stderr)
    else:
        sys.__excepthook__(kind, value, traceback)


sys.excepthook = _one_line_on_ctrl_c


# ---------------------------------------------------------------- device and precision

def resolve_device(device: str) -> str:
    """'auto' is the GPU when there is one, else the CPU. Every script runs on CPUs and CUDA GPUs
    only (nothing here was built or tested for Apple's mps): any other device, or a GPU that is not
    there, is refused here in one line, not in a traceback from deep inside torch."""
    if device == "auto":
        if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # torchrun's ranks on the CPU would silently train on gloo in fp32 for the whole budget
            die(f"torchrun started {os.environ['WORLD_SIZE']} processes, but torch sees no CUDA "
                f"GPU (a CPU-only torch build, a driver too old for it, or a container started "
                f"without GPUs): fix that, or rehearse on the CPU with --device=cpu")
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, colon, index = device.partition(":")
    if kind not in ("cpu", "cuda") or colon and (kind == "cpu" or not index.isdigit()):
        die(f"unknown device '{device}': use auto, cpu, cuda or cuda:N (these scripts run on CPUs "
            f"and CUDA GPUs; mps and others are not supported)")
    if kind == "cuda" and not torch.cuda.is_available():
        die(f"device '{device}' asked for, but torch sees no CUDA GPU (check the driver and the "
            f"torch build): use --device=cpu")
    if index and int(index) >= torch.cuda.device_count():
        die(f"device '{device}': torch sees {torch.cuda.device_count()} CUDA GPU(s), cuda:0 to "
            f"cuda:{torch.cuda.device_count() - 1}")
    return device


def compile_default(device: str) -> bool:
    """compile=None's choice: torch.compile on CUDA GPUs of compute capability 8.0 and later only.
    Triton, which inductor's kernels are written in, has required 8.0 since triton-lang/triton#5066
    and sends matmuls below it to a plain FMA fallback; inductor still accepts a V100 (7.0) but
    nobody upstream tests it there. So below 8.0 the run is eager unless --compile=True asks for it,
    which preflight.py checks on the real GPUs first. Off on the CPU: compiling costs more than a
    short CPU run saves."""
    return device.startswith("cuda") and torch.cuda.get_device_capability(device) >= (8, 0)


def use_idle_cores(device: str) -> str:
    """On the CPU, unless OMP_NUM_THREADS says otherwise, run torch on the cores the load average
    leaves idle (at least one). Decoding is one token at a time, many tiny matrix-vector products,
    and a thread waiting for a busy core stalls every one of them: on a busy machine one thread can
    be many times faster than torch's default (docs/sample.md has the measurement). Returns a note
    for the log."""
    if device != "cpu":
        return ""
    if "OMP_NUM_THREADS" not in os.environ:
        idle = (os.cpu_count() or 1) - os.getloadavg()[0]
        torch.set_num_threads(max(1, min(torch.get_num_threads(), int(idle))))
    n = torch.get_num_threads()
    return f" ({n} thread{'s' * (n > 1)})"


PT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, device_type: str) -> str:
    """'auto' picks bf16 where the GPU has it (Ampere and later), fp16 on older GPUs such as the
    V100 (with a GradScaler), and fp32 on the CPU: exact, and what the tests compare against
    (--dtype=bfloat16 is faster on CPUs with AMX; BENCHMARKS.md, "CPU records")."""
    if dtype == "auto":
        if device_type == "cuda":
            return ("bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False)
                    else "float16")
        return "float32"
    if dtype not in PT_DTYPES:
        die(f"unknown dtype '{dtype}': use auto, float32, bfloat16 or float16")
    return dtype


def autocast(device_type: str, dtype: str):
    """Mixed-precision context: matmuls in dtype, weights, norms and the loss in fp32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=PT_DTYPES[dtype])


class Setup(NamedTuple):
    device: str  # cpu, cuda or cuda:N
    device_type: str  # cpu or cuda
    dtype: str  # float32, bfloat16 or float16
    autocast: contextlib.AbstractContextManager  # enter it around each forward pass
    threads: str  # for the log: " (N threads)" on the CPU when chosen here, else ""


# OpenWebText's train split in GPT-2 tokens, for projected passes over it (bench.py, preflight.py)
OWT_TRAIN_TOKENS = 9.0e9


def cpu_name() -> str:
    """The CPU's model name, for the records that say what a figure was measured on."""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                        "")
        if name:
            return name
    return platform.processor() or platform.machine()


def setup(device: str, dtype: str = "auto", threads: int | str = 0) -> Setup:
    """Device, precision and CPU threads, chosen the one way every script chooses them. threads: 0
    leaves torch's default (training, scoring), N > 0 takes N, "idle" the cores the load average
    leaves idle (decoding, use_idle_cores)."""
    device = resolve_device(device)
    device_type = device.split(":")[0]  # cpu or cuda: resolve_device refuses the rest
    note = ""
    if threads == "idle":
        note = use_idle_cores(device)
    elif threads:
        torch.set_num_threads(threads)
    dtype = resolve_dtype(dtype, device_type)
    return Setup(device, device_type, dtype, autocast(device_type, dtype), note)


def runs_on(major: int, minor: int, archs: list[str]) -> bool:
    """Whether a torch build for archs (torch.cuda.get_arch_list(), e.g. ['sm_75', 'sm_80',
    'compute_90']) runs on a GPU of compute capability major.minor: machine code (sm_XY) runs on the
    same major version at an equal or later minor; PTX (compute_XY) is compiled by the driver for
    any later GPU."""
    for arch in archs:
        kind, _, version = arch.partition("_")
        v = int(version.rstrip("af"))  # sm_90a, sm_100f: architecture- and family-specific variants
        if v <= 10 * major + minor and (kind == "compute" or v // 10 == major):
            return True
    return False


# ---------------------------------------------------------------- settings' ranges

def check_ranges(config: dict, lowest: dict[str, float]) -> None:
    """Each setting in lowest at or above its lowest value, before anything runs: a 0 that would
    divide by zero or stop at once, or a negative that would silently mean something else, is one
    line."""
    for name, low in lowest.items():
        if config[name] < low:
            at_least = "0 or more" if low == 0 else f"at least {low}"
            die(f"--{name} must be {at_least}, got {config[name]} (--help explains each setting)")


def check_optimizer(config: dict) -> None:
    """The optimizer's settings, as train.py and bench.py take them: each a one-line error where
    torch's own check would be a traceback, or where none would catch it."""
    if config["learning_rate"] <= 0:
        die(f"learning_rate must be positive, got {config['learning_rate']}")
    if config["optimizer"] not in ("adamw", "muon"):
        die(f"optimizer must be 'adamw' or 'muon', got '{config['optimizer']}'")
    if config["muon_lr"] <= 0 or config["muon_weight_decay"] < 0:
        die(f"muon_lr must be positive and muon_weight_decay 0 or more, got {config['muon_lr']} "
            f"and {config['muon_weight_decay']}")
    momenta = [config[k] for k in ("muon_momentum", "beta1", "beta2")]
    if not all(0 <= m < 1 for m in momenta):
        die("muon_momentum, beta1 and beta2 must be in [0, 1), got {}, {} and {}".format(*momenta))


def check_sampling(temperature: float, top_k: int, top_p: float,
                   max_temperature: float = math.inf) -> None:
    """The sampling settings sample.py and chat.py share, each refused in one line naming it."""
    if not 0 <= temperature <= max_temperature:
        up_to = f" up to {max_temperature:g}" if max_temperature < math.inf else ""
        die(f"--temperature={temperature}: use 0 (greedy) or a positive number{up_to}")
    if top_k < 0:
        die(f"--top_k={top_k}: use a positive number of tokens to keep, or 0 to turn top-k off")
    if not 0 < top_p <= 1:
        die(f"--top_p={top_p}: use a number in (0, 1]; 1.0 turns nucleus sampling off")


# ---------------------------------------------------------------- the learning rate

def get_lr(step: int, progress: float, learning_rate: float, min_lr: float, warmup_iters: int,
           lr_schedule: str = "cosine", decay_fraction: float = 0.2) -> float:
    """Linear warmup over warmup_iters steps, times a decay that reaches min_lr at progress 1 (the
    end of training)."""
    warmup = min(1.0, (step + 1) / (warmup_iters + 1))
    progress = min(1.0, progress)
    if lr_schedule == "cosine":  # Loshchilov & Hutter 2017
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:  # wsd: the peak until the last decay_fraction, then linear to min_lr
        decay = min(1.0, (1.0 - progress) / decay_fraction)
    return warmup * (min_lr + decay * (learning_rate - min_lr))


# ---------------------------------------------------------------- one optimizer step

def wrap_ddp(model: torch.nn.Module, device_type: str, local_rank: int) -> DDP:
    """DDP as train.py and preflight.py run it: no buffers synced each step (RoPE's tables, the only
    buffers, are computed alike on every rank), and the gradients live in DDP's buckets instead of
    beside them (one gradient copy, not two). Newer torch spells the first forward_sync_buffers."""
    sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters \
        else "broadcast_buffers"
    return DDP(model, device_ids=[local_rank] if device_type == "cuda" else None,
               gradient_as_bucket_view=True, **{sync: False})


def train_step(model, optimizers: list[torch.optim.Optimizer], scaler: torch.amp.GradScaler,
               next_batch, grad_accum: int, grad_clip: float,
               ctx) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One optimizer step, as train.py takes it and bench.py times it: grad_accum micro-steps, each
    loss divided by grad_accum (the gradient of the mean over the whole batch), the next micro-batch
    fetched while this one runs, gradients all-reduced on the last micro-step only (DDP), unscaled
    (fp16) and clipped, and the update skipped when they are not finite.

    model may be wrapped (DDP, torch.compile); optimizers are model.configure_optimizers()'s,
    stepped together (AdamW, or Muon and AdamW): one gradient norm over all their parameters, one
    verdict on whether to apply the update; next_batch() returns (x, y); ctx is the autocast
    context. Returns the summed micro-step losses (on the device), the gradient norm before
    clipping, and whether the update was applied (reading it is the step's one GPU sync).
    """
    params = [p for opt in optimizers for group in opt.param_groups for p in group["params"]]
    loss_sum = torch.zeros((), device=params[0].device)
    x, y = next_batch()
    for micro in range(grad_accum):
        last = micro == grad_accum - 1
        with contextlib.nullcontext() if last or not isinstance(model, DDP) else model.no_sync():
            with ctx:
                _, loss = model(x, y)  # fp32 loss (model.py's fused lm_head + cross-entropy)
            if not last:
                x, y = next_batch()  # its copy to the GPU overlaps this micro-step's kernels
            loss_sum += loss.detach()
            scaler.scale(loss / grad_accum).backward()
    for opt in optimizers:
        scaler.unscale_(opt)  # true gradients, so clipping and the logged norm mean what they say
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
    applied = bool(torch.isfinite(grad_norm))  # the same on every rank: DDP averaged the gradients
    # inf/NaN gradients (fp16 overflow, a bad batch) would poison the weights: skip every update
    if applied:
        for opt in optimizers:
            scaler.step(opt)
    # once per step: fp16 halves the scale after an overflow, doubles it after 2000 clean steps
    scaler.update()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    return loss_sum, grad_norm, applied


# ---------------------------------------------------------------- data

def load_meta(data_dir: str) -> dict:
    """meta.json of a folder made by prepare.py; its presence means the folder is complete."""
    path = os.path.join(data_dir, "meta.json")
    if not os.path.exists(path):
        die(f"no prepared data in '{data_dir}' (missing meta.json): run `python prepare.py` for "
            f"OpenWebText, or `python prepare.py --input assets/demo/tinyshakespeare.txt "
            f"--data_dir={data_dir}` offline")
    again = f"prepare the data again (python prepare.py ... --data_dir={data_dir} --overwrite)"
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        die(f"{path} is damaged ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}): {again}")
    vocab = meta.get("vocab_size") if isinstance(meta, dict) else None
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < 1:
        die(f"{path} has no vocab_size (a positive integer), so it was not written by prepare.py: "
            f"{again}")
    # the token files are read as uint16, whatever else they hold
    if meta.get("dtype", "uint16") != "uint16":
        die(f"{path} says the tokens are {meta['dtype']}, but this project reads uint16 token "
            f"files: {again}")
    return meta


# Token files up to this many tokens (128 MB, read at once from the page cache) are scanned whole at
# start-up; a longer one, such as OpenWebText's 9B-token train.bin (18 GB: 36 s at a disk's
# 500 MB/s, on every rank and every resume), in SCAN_CHUNKS evenly spaced pieces of the same total.
# get_batch then checks every window it draws, so an id missed by the sample is still caught,
# before it reaches the model.
SCAN_TOKENS = 1 << 26
SCAN_CHUNKS = 64


def bad_token(data: np.ndarray, vocab_size: int) -> tuple[int, int] | None:
    """(position, id) of the first id >= vocab_size in the scanned part of data, or None."""
    n, piece = len(data), SCAN_TOKENS // SCAN_CHUNKS
    starts = (range(0, n, piece) if n <= SCAN_TOKENS
              else np.linspace(0, n - piece, SCAN_CHUNKS, dtype=np.int64))
    for start in starts:
        chunk = data[start:start + piece]
        if chunk.max() >= vocab_size:
            i = int(np.argmax(chunk >= vocab_size))
            return int(start) + i, int(chunk[i])
    return None


def check_data(data_dir: str, splits: tuple[str, ...], block_size: int, vocab_size: int) -> dict:
    """The checks a prepared folder must pass before any work is done (an eval, a checkpoint, a
    timed step): meta.json readable, with a vocabulary that fits the model's vocab_size; each
    split's .bin present, of whole uint16 tokens, longer than one window, and with no id outside
    that vocabulary. Returns meta.json's contents."""
    meta = load_meta(data_dir)
    again = f"prepare the data again (python prepare.py ... --data_dir={data_dir} --overwrite)"
    if meta["vocab_size"] > vocab_size:
        die(f"{data_dir} holds token ids up to {meta['vocab_size'] - 1} ({meta.get('tokenizer')}), "
            f"more than the model's vocab_size={vocab_size}: set vocab_size >= "
            f"{meta['vocab_size']}")
    for split in splits:
        path = os.path.join(data_dir, f"{split}.bin")
        if not os.path.isfile(path):
            die(f"{path} is missing beside meta.json, so the folder is damaged: {again}")
        size = os.path.getsize(path)
        if size % 2:
            die(f"{path} has an odd number of bytes ({size:,}), so it is not whole uint16 tokens "
                f"(a copy cut short?): {again}")
        if size == 0:
            die(f"{path} is empty: {again}")
        if size // 2 <= block_size:
            die(f"{split}.bin in '{data_dir}' has {size // 2} tokens, fewer than "
                f"block_size+1={block_size + 1}: prepare more text or lower block_size")
        bad = bad_token(np.memmap(path, dtype=np.uint16, mode="r"), meta["vocab_size"])
        if bad:
            die(f"{path} holds token id {bad[1]} at token {bad[0]:,}, outside the vocabulary of "
                f"{meta['vocab_size']} that meta.json states: the file is damaged or from another "
                f"tokenizer; {again}")
    return meta


def seeded_generator(*key: int) -> torch.Generator:
    """A torch.Generator whose stream is fixed by key, e.g. (seed, rank, step): distinct keys,
    independent streams."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))


def get_batch(data_dir: str, split: str, batch_size: int, block_size: int,
              generator: torch.Generator, device: str = "cpu",
              vocab_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of block_size + 1 tokens from data_dir/{split}.bin: inputs x, targets y.

    Positions come from `generator`, so a seed (and the generator's state in a checkpoint) makes the
    stream reproducible. The memmap is opened anew each call: a long-lived one keeps every page it
    touched resident, which reads as a memory leak over a 23-hour run. With vocab_size, an id
    outside it is an error here, not an IndexError in the embedding or an infinite loss
    (check_data's scan of a large file is a sample); the check is one max over the batch,
    microseconds.
    """
    data = np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16, mode="r")
    if len(data) <= block_size:
        die(f"{split}.bin in '{data_dir}' has {len(data)} tokens, fewer than "
            f"block_size+1={block_size + 1}: prepare more text or lower block_size")
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator).tolist()
    windows = np.stack([data[i:i + block_size + 1] for i in ix])
    if vocab_size and windows.max() >= vocab_size:
        b, j = np.argwhere(windows >= vocab_size)[0]
        die(f"{split}.bin in '{data_dir}' holds token id {windows[b, j]} at token {ix[b] + j:,}, "
            f"outside the vocabulary of {vocab_size}: the file is damaged; prepare the data again "
            f"(prepare.py)")
    x = torch.from_numpy(windows[:, :-1].astype(np.int64))
    y = torch.from_numpy(windows[:, 1:].astype(np.int64))
    return to_device(x, y, device)


def to_device(x: torch.Tensor, y: torch.Tensor, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    if device.startswith("cuda"):
        # pinned memory lets the copy run asynchronously, overlapping the step in flight
        return (x.pin_memory().to(device, non_blocking=True),
                y.pin_memory().to(device, non_blocking=True))
    return x.to(device), y.to(device)


def chat_rows(rows: list[tuple[np.ndarray, np.ndarray]],
              block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x and targets y for rows of (tokens, loss mask), each at most block_size + 1 tokens
    (tokenizer/chat_template.py makes them): y is the next token where the mask makes it a target
    (the assistant's words and end-of-turn EOT) and -1 elsewhere, so the loss is the mean over
    assistant tokens only. A short row is padded (x with EOT, y with -1: never a target)."""
    x = np.full((len(rows), block_size), EOT_TOKEN, dtype=np.int64)
    y = np.full((len(rows), block_size), -1, dtype=np.int64)
    for r, (tokens, mask) in enumerate(rows):
        n = len(tokens) - 1
        x[r, :n] = tokens[:-1]
        y[r, :n] = np.where(mask[1:] != 0, tokens[1:], -1)
    return torch.from_numpy(x), torch.from_numpy(y)


def get_chat_batch(data_dir: str, split: str, batch_size: int, block_size: int,
                   generator: torch.Generator | None, device: str = "cpu",
                   index: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A batch of conversations from prepare_chat.py's files: targets -1 except on the assistant's
    tokens.

    With a generator (training): each row starts at a random conversation and runs on for
    block_size + 1 tokens into the ones after it, so no compute goes to padding; the EOT and header
    line every conversation starts with show the model where one ends and the next begins, as EOT
    does between pretraining documents.
    With index=k instead (val): conversations k*batch_size ... (k+1)*batch_size - 1, one a row and
    padded, the same batch every time; None past the last conversation.
    """
    tokens = np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16, mode="r")
    mask = np.memmap(os.path.join(data_dir, f"{split}_mask.bin"), dtype=np.uint8, mode="r")
    starts = np.fromfile(os.path.join(data_dir, f"{split}_starts.bin"), dtype=np.int64)
    if index is None:
        ix = torch.randint(len(starts), (batch_size,), generator=generator).tolist()
        ends = [min(starts[i] + block_size + 1, len(tokens)) for i in ix]
    else:
        ix = list(range(index * batch_size, min((index + 1) * batch_size, len(starts))))
        if not ix:
            return None
        ends = [starts[i + 1] if i + 1 < len(starts) else len(tokens) for i in ix]
    x, y = chat_rows([(tokens[starts[i]:e].astype(np.int64), mask[starts[i]:e])
                      for i, e in zip(ix, ends, strict=True)],
                     block_size)
    return to_device(x, y, device)


def get_tokenizer():
    """GPT-2's BPE from the files in tokenizer/ (tokenizer.gpt2, which prepare.py uses too)."""
    import tokenizer

    return tokenizer.gpt2()


# ---------------------------------------------------------------- checkpoints

def model_args(config: GPTConfig) -> dict:
    """The GPTConfig fields to store in a checkpoint (derived ones are derived again on load)."""
    return {f.name: getattr(config, f.name) for f in fields(config) if f.init}


def save_checkpoint(checkpoint: dict, path: str) -> None:
    """Write to a temporary name, flush to disk, then rename over the old file: a crash or kill at
    any moment leaves either the previous checkpoint or the new one, never half of one."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        # a full disk, a quota: hours into a run, say so, leave no half a file
        # torch.save's zip writer reports a failed write as RuntimeError("unexpected pos ..."), the
        # OSError (ENOSPC, EDQUOT, EFBIG) as its context: name that; any other RuntimeError is a bug
        cause = e if isinstance(e, OSError) else e.__context__
        if not isinstance(cause, OSError):
            raise
        with contextlib.suppress(OSError):
            os.remove(tmp)
        die_of_disk(f"the checkpoint {path}", cause, path)


def die_of_disk(what: str, error: OSError, checkpoint: str) -> NoReturn:
    """A write of train.py's failed (a full disk, a quota): one line saying whether `checkpoint` is
    still there."""
    kept = (f"{checkpoint} keeps the previous checkpoint: free space, then resume from it"
            if os.path.exists(checkpoint)
            else "no checkpoint was written: free space or choose another out_dir")
    die(f"cannot write {what} ({error.strerror or error}); {kept}")


@contextlib.contextmanager
def out_of_memory_is_one_line(what: str, fix: str):
    """torch's out-of-memory error inside the block (CUDA's torch.OutOfMemoryError, with its page of
    allocator statistics; the CPU allocator's RuntimeError) as one line: what ran out, and fix, how
    to make it fit."""
    try:
        yield
    except RuntimeError as e:
        if not (isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e)):
            raise
        die(f"out of memory in {what}: {fix}")


def read_metrics(path: str) -> list[dict]:
    """The records of a metrics.jsonl that train.py appends to (none when it does not exist yet); a
    line cut short by a kill, or being written right now, is skipped."""
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    rows.append(json.loads(line))
    return rows


def load_checkpoint(path: str, device: str = "cpu") -> dict:
    """Load a checkpoint made by train.py. weights_only=True: tensors and plain data only, so a
    malicious file cannot run code."""
    if os.path.isdir(path):
        path = os.path.join(path, "ckpt.pt")
    if not os.path.exists(path):
        die(f"no checkpoint at '{path}': train one with `python train.py config/smoke.py`, or "
            f"give --out_dir")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        die(f"checkpoint '{path}' is corrupt or not a checkpoint ({type(e).__name__}): "
            f"use another file or retrain")
    if (not isinstance(checkpoint, dict) or "model" not in checkpoint
            or "model_args" not in checkpoint):
        die(f"'{path}' is not a checkpoint of this project (no model / model_args)")
    return checkpoint


def model_from_checkpoint(checkpoint: dict, device: str = "cpu") -> GPT:
    """Rebuild the GPT a checkpoint describes and load its weights."""
    try:
        config = GPTConfig(**checkpoint["model_args"])
    except (TypeError, ValueError) as e:
        die(f"checkpoint holds an unknown architecture ({e})")
    model = GPT(config)
    # names of a compiled or DDP-wrapped model, in case a checkpoint was saved from one
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v
             for k, v in checkpoint["model"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        die(f"checkpoint weights do not match its architecture: {str(e).splitlines()[0]}")
    return model.to(device)


def load_model(path: str, device: str = "cpu") -> tuple[GPT, object, dict]:
    """The model of a checkpoint (a file, or an out_dir holding ckpt.pt) in eval mode on device,
    the tokenizer it was trained with, and the checkpoint itself."""
    checkpoint = load_checkpoint(path, device)
    tokenizer = checkpoint.get("tokenizer", "gpt2")
    if tokenizer != "gpt2":
        die(f"checkpoint was trained with tokenizer '{tokenizer}', but this project uses GPT-2's "
            f"BPE: use a checkpoint of this project")
    enc = get_tokenizer()
    vocab = checkpoint["model_args"].get("vocab_size")
    if vocab != enc.n_vocab:
        die(f"checkpoint has vocab_size={vocab}, but the GPT-2 tokenizer has {enc.n_vocab} tokens: "
            f"it was not trained with this tokenizer")
    model = model_from_checkpoint(checkpoint, device)
    model.eval()
    return model, enc, checkpoint
