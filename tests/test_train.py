"""Tests for train.py, run the way users run it: as a script (or under torchrun), on the CPU, with a
model small enough for a fraction of a second per step. What they check comes from what the runs
leave behind: the checkpoint, metrics.jsonl, the log and the exit status. The helpers train.py
takes from common.py (the GPU check, the learning-rate schedule and the val batches' seeds) are
checked against the rules written out by hand."""

import ast
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import common
from launch import ROOT, environ, forking_python, in_background, run_script, torchrun_workers
from model import GPT, GPTConfig

# a 1-layer, 16-wide model on 32-token windows: ~0.1-0.5 s a step on 2 busy cores
TINY = ["config/smoke.py", "--n_layer=1", "--n_embd=16", "--block_size=32", "--batch_size=4",
        "--batch_tokens=128", "--eval_iters=2", "--log_interval=1", "--warmup_iters=2",
        "--learning_rate=3e-2"]


def train(data: Path, out: Path, *args: str, check: bool = True,
          **kwargs) -> subprocess.CompletedProcess:
    return run_script("train.py", *TINY, f"--data_dir={data}", f"--out_dir={out}", *args,
                      check=check, **kwargs)


def metrics(out: Path) -> tuple[list[dict], list[dict]]:
    """(train records, eval records) of out/metrics.jsonl."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r], [r for r in rows if "val_loss" in r]


def val_loss_of(model: GPT, data: Path, n: int = 4) -> float:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return float(np.mean([model(*common.get_batch(str(data), "val", 8, 32, gen))[1].item()
                              for _ in range(n)]))


def same_state(x, y) -> bool:
    """Equal, tensor for tensor, through nested dicts and lists (an optimizer's state_dict)."""
    if torch.is_tensor(x):
        return torch.is_tensor(y) and torch.equal(x, y)
    if isinstance(x, dict):
        return (isinstance(y, dict) and x.keys() == y.keys()
                and all(same_state(x[k], y[k]) for k in x))
    if isinstance(x, (list, tuple)):
        return type(x) is type(y) and len(x) == len(y) and all(map(same_state, x, y))
    return x == y


def write_small_data(owt_data: Path, out: Path) -> Path:
    """150 real train tokens and 300 val tokens: a few steps make several epochs."""
    out.mkdir()
    for split, n in (("train", 150), ("val", 300)):
        np.fromfile(owt_data / f"{split}.bin", dtype=np.uint16)[:n].tofile(out / f"{split}.bin")
    (out / "meta.json").write_text((owt_data / "meta.json").read_text())
    return out


@pytest.fixture(scope="module")
def small_data(owt_data, tmp_path_factory) -> Path:
    return write_small_data(owt_data, tmp_path_factory.mktemp("small") / "data")


# ---------------------------------------------------------------- the script's helpers

def test_gpu_check_knows_which_builds_run_on_which_gpus():
    runs_on = common.runs_on
    v100, a100, h100 = (7, 0), (8, 0), (9, 0)
    # cu126 wheels
    assert runs_on(*v100, ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"])
    # cu128 wheels from 2.11 on
    assert not runs_on(*v100, ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"])
    # PTX runs only on GPUs at least as new
    assert not runs_on(*v100, ["sm_75", "sm_80", "compute_90"])
    # ... which it does here, JIT-compiled
    assert runs_on(*h100, ["sm_75", "sm_80", "compute_80"])
    # a cubin runs on later minors only
    assert runs_on(8, 6, ["sm_80"]) and not runs_on(*a100, ["sm_86"])
    # never across major versions
    assert runs_on(*h100, ["sm_90a"]) and not runs_on(10, 0, ["sm_90a"])


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
def test_lr_schedule_warms_up_then_ends_exactly_at_min_lr(schedule):
    peak, low, warmup, frac = 1e-3, 1e-4, 10, 0.2
    get_lr = partial(common.get_lr, learning_rate=peak, min_lr=low, warmup_iters=warmup,
                     lr_schedule=schedule,
                     decay_fraction=frac)
    ramp = [get_lr(s, 0.0) for s in range(warmup + 1)]
    assert (ramp == sorted(ramp) and ramp[0] == pytest.approx(peak / (warmup + 1))
            and ramp[-1] == pytest.approx(peak))
    assert (get_lr(1000, 1.0) == pytest.approx(low, abs=1e-15)
            and get_lr(1000, 1.5) == pytest.approx(low, abs=1e-15))
    decay = [get_lr(1000, p / 100) for p in range(101)]
    assert decay == sorted(decay, reverse=True)
    if schedule == "cosine":  # min + (peak - min) * (1 + cos(pi p)) / 2
        assert get_lr(1000, 0.5) == pytest.approx((peak + low) / 2)
        assert get_lr(1000, 0.25) == pytest.approx(
            low + (peak - low) * (1 + math.cos(math.pi / 4)) / 2)
    else:  # the peak until 1 - frac, then a straight line down
        assert (get_lr(1000, 1 - frac) == pytest.approx(peak)
                and get_lr(1000, 0.5) == pytest.approx(peak))
        assert get_lr(1000, 1 - frac / 2) == pytest.approx((peak + low) / 2)


# ---------------------------------------------------------------- runs

# 2 ranks x 2 sequences x 32 tokens = 128 per micro-step: 2 micro-steps make the 256-token batch
DDP = [*TINY, "--batch_size=2", "--batch_tokens=256", "--eval_interval=3",
       "--lr_decay_iters=100",  # near the peak LR
       "--muon_lr=0.1"]  # Muon's step on 16-wide matrices is small


@in_background
def two_rank_runs(tmp_path_factory, need) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """{optimizer: (out_dir, result)} of a 6-step --standalone run on 2 gloo ranks, made on the
    background thread."""
    runs = {}
    for optimizer in ("adamw", "muon"):
        out = tmp_path_factory.mktemp(f"ddp-{optimizer}")
        runs[optimizer] = out, run_script(
            "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *DDP,
            f"--data_dir={need('owt_data')}", f"--out_dir={out}", "--max_iters=6",
            f"--optimizer={optimizer}")
    return runs


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.slow
def test_ddp_two_ranks_on_gloo(owt_data, two_rank_runs, optimizer):
    out, result = two_rank_runs[optimizer]
    assert "2 x cpu" in result.stdout and "2 micro-steps of 2x32" in result.stdout
    assert "stopped (max_iters) at step 6" in result.stdout
    checkpoint = common.load_checkpoint(str(out))
    assert checkpoint["iter_num"] == 6 and checkpoint["tokens_seen"] == 6 * 256
    ranks = checkpoint["rng"]["ranks"]  # both ranks' data streams, distinct, for an exact resume
    assert (checkpoint["rng"]["world_size"] == 2
            and not torch.equal(ranks[0]["data"], ranks[1]["data"]))
    train_rows, evals = metrics(out)
    assert ([r["iter"] for r in evals] == [0, 3, 6]
            and evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.1)
    assert train_rows[-1]["epochs"] == pytest.approx(
        6 * 256 / (os.path.getsize(owt_data / "train.bin") // 2))
    # the saved weights really learned: on val windows of their own, better than a fresh model
    # of that shape
    trained = common.model_from_checkpoint(checkpoint)
    torch.manual_seed(0)
    fresh = GPT(GPTConfig(**checkpoint["model_args"]))
    assert val_loss_of(trained, owt_data) < val_loss_of(fresh, owt_data) - 0.1
    assert (out / "loss.png").stat().st_size > 0
    # report.md, rewritten at the end: the run's figures as metrics.jsonl and the checkpoint
    # hold them
    page = (out / "report.md").read_text()
    assert "| status | finished (max_iters) at step 6 |" in page and "2 processes" in page
    assert f"| torch | {torch.__version__} |" in page and "![loss](loss.png)" in page
    assert f"{evals[0]['val_loss']:.4f} at step 0 → {evals[-1]['val_loss']:.4f} at step 6" in page
    assert f"6 steps, {6 * 256:,} tokens ({train_rows[-1]['epochs']:.2f} epochs)" in page
    assert f"optimizer = '{optimizer}'" in page and "## A sample" in page


def signal_rank_1_at(point: str, args: list[str], tmp_path: Path, check=None) -> str:
    """Run train.py on 2 gloo ranks with rank 1 held at point (train.py's hold), send it SIGTERM
    there, let it go on, and return the run's output once torchrun has exited 0. check(pid), if
    given, looks at the held process first."""
    held = tmp_path / f"held-{point}"
    # torchrun and its workers forked from a zygote (launch.py), but where the signal lands while
    # torch is imported: there the workers are new interpreters
    workers = {} if point == "startup" else {
        "PYTHON_EXEC": forking_python(torchrun_workers(dict(os.environ), ["--nproc_per_node=2"]))}
    run = subprocess.Popen([forking_python(), "-m", "torch.distributed.run", "--standalone",
                            "--nproc_per_node=2", "train.py", *args],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "SMALLGPT_TEST_HOLD": f"{point}:1",
                                "SMALLGPT_TEST_HOLD_FILE": str(held), **workers})
    try:
        while not (held.exists() and held.read_text()):
            assert run.poll() is None, run.stdout.read()
            time.sleep(0.05)
        pid = int(held.read_text())
        if check:
            check(pid)
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.2)  # delivered, and noted if a handler takes it
        held.unlink(missing_ok=True)
        output, _ = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 0, output
    return output


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_every_rank_at_one_step_and_resumes_on_another_world_size(
        owt_data, tmp_path):
    """A cluster's preemption may signal any one rank: the flag is all-reduced, so both ranks finish
    the same step, rank 0 saves both ranks' streams, torchrun exits 0; the run resumes on one
    process, accumulating twice as many micro-steps, from fresh streams. (tests/rehearse.sh does
    this on 8 ranks, and checks the 8-rank resume loss for loss.)
    Rank 1 is held at step 3 when signalled: a signal sent at a time instead could land after the
    tiny run ended."""
    out = tmp_path / "preempted"
    args = [*TINY, f"--data_dir={owt_data}", f"--out_dir={out}", "--batch_size=2",
            "--batch_tokens=256", "--max_iters=12", "--eval_interval=1000", "--lr_decay_iters=12"]
    output = signal_rank_1_at("step3", args, tmp_path)
    assert output.count("stopped (signal) at step 3") == 1, output
    checkpoint = common.load_checkpoint(str(out))
    assert checkpoint["iter_num"] == 3
    assert checkpoint["rng"]["world_size"] == 2 and len(checkpoint["rng"]["ranks"]) == 2
    resumed = run_script("train.py", *args, "--init_from=resume")
    assert "resuming a 2-rank run on 1: data streams reseeded" in resumed.stdout
    assert ("4 micro-steps of 2x32" in resumed.stdout
            and "stopped (max_iters) at step 12" in resumed.stdout)
    train_rows, _ = metrics(out)
    assert [r["iter"] for r in train_rows] == list(range(12))
    assert common.load_checkpoint(str(out))["tokens_seen"] == 12 * 256


@pytest.mark.slow
def test_sigterm_during_start_up_or_after_the_run_ends_is_not_a_failure(owt_data, tmp_path):
    """The two moments a rank's signal once went unhandled: while it imported torch (before the
    handler was installed: the rank died, torchrun exited 1), and once the run was over (Python
    gives a handled signal its default action back while it shuts down). Signalled during start-up,
    the run stops at step 0 without a checkpoint; signalled at the end, it ignores the signal, as
    the kernel's own record of the process shows."""
    args = [*TINY, f"--data_dir={owt_data}", "--batch_size=2", "--batch_tokens=256",
            "--max_iters=2"]
    output = signal_rank_1_at("startup", [*args, f"--out_dir={tmp_path / 'start'}"], tmp_path)
    assert "stopped (signal) at step 0" in output and "no checkpoint written" in output
    assert not (tmp_path / "start" / "ckpt.pt").exists()

    def ignores_sigterm(pid: int) -> None:
        status = Path(f"/proc/{pid}/status").read_text()
        ignored = int(next(ln for ln in status.splitlines()
                           if ln.startswith("SigIgn:")).split()[1], 16)
        assert ignored >> (signal.SIGTERM - 1) & 1, status

    output = signal_rank_1_at("exit", [*args, f"--out_dir={tmp_path / 'end'}"], tmp_path,
                              ignores_sigterm)
    assert "stopped (max_iters) at step 2" in output
    assert common.load_checkpoint(str(tmp_path / "end"))["iter_num"] == 2


@pytest.mark.slow
def test_two_nodes_meeting_at_a_c10d_rendezvous_train_and_resume_as_one_node_does(owt_data,
                                                                                   two_rank_runs,
                                                                                   tmp_path):
    """docs/training.md's multi-node recipe, as two nodes of one process each on this machine: two
    torchrun launchers meet at a c10d rendezvous, each node reading its own copy of the data (data
    must be on every node, not shared) and both the same out_dir (shared: rank 0 writes the
    checkpoint, every rank reads it on resume). Stopped halfway and resumed the same way, the run is
    an uninterrupted --standalone 2-process run, record for record."""
    nodes = [tmp_path / f"node{k}" for k in (0, 1)]
    for node in nodes:
        node.mkdir()
        for f in owt_data.iterdir():  # train.bin, val.bin, meta.json
            (node / f.name).write_bytes(f.read_bytes())
    shared_out = tmp_path / "shared-out"
    # torchrun and its workers, forked from a zygote (launch.py)
    python = forking_python({**os.environ, "OMP_NUM_THREADS": "1"})

    def two_nodes(*extra: str) -> list[str]:
        # a free port for the rendezvous (node 0's address in a real cluster)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launchers = [subprocess.Popen(
            [python, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
             "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id={port}",
             "train.py", *DDP, f"--data_dir={node}", f"--out_dir={shared_out}", *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            # torchrun sets OMP_NUM_THREADS=1 for 2 processes a node, not for 1; another thread
            # count sums the same floats in another order (the grad norm differed in the 8th digit)
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHON_EXEC": python})
            for node in nodes]
        try:
            outputs = [launcher.communicate(timeout=240)[0] for launcher in launchers]
        finally:
            for launcher in launchers:
                launcher.kill()
        assert [launcher.returncode for launcher in launchers] == [0, 0], outputs
        return outputs

    first = two_nodes("--max_iters=3")
    # one rank 0, on one node
    assert sum(out.count("stopped (max_iters) at step 3") for out in first) == 1
    assert "2 x cpu" in "".join(first) and "2 micro-steps of 2x32" in "".join(first)
    resumed = two_nodes("--max_iters=6", "--init_from=resume")
    assert sum(out.count("stopped (max_iters) at step 6") for out in resumed) == 1
    # the same world size: each rank's own stream carries on
    assert "reseeded" not in "".join(resumed)
    one_node_out, _ = two_rank_runs["adamw"]

    def strip(rows: list[dict]) -> list[dict]:  # the clock's figures differ
        return [{k: v for k, v in r.items()
                 if k not in ("elapsed", "time_left", "tokens_per_s", "mfu")} for r in rows]

    multi_node, one_node = metrics(shared_out), metrics(one_node_out)
    assert [r["iter"] for r in multi_node[1]] == [0, 3, 6]
    assert strip(multi_node[0]) == strip(one_node[0]) and strip(multi_node[1]) == strip(one_node[1])
    weights = [common.load_checkpoint(str(out))["model"] for out in (shared_out, one_node_out)]
    assert (weights[0].keys() == weights[1].keys()
            and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]))


def test_the_rehearsal_config_changes_only_what_a_cpu_cannot_afford():
    """tests/rehearsal.py goes after config/option_a.py: everything it sets is a dimension, the
    clock, the data or the device, so the rest (optimizer, schedule, precision path, batch
    arithmetic) is option A's own."""
    assigned = {node.targets[0].id
                for node in ast.parse((ROOT / "tests/rehearsal.py").read_text()).body
                if isinstance(node, ast.Assign)}
    assert assigned == {"out_dir", "data_dir", "n_layer", "n_head", "n_embd", "block_size",
                        "batch_size", "batch_tokens", "time_budget_hours", "warmup_iters",
                        "eval_interval", "eval_iters", "log_interval", "device", "dtype"}
    option_a, rehearsal = {}, {}
    exec((ROOT / "config/option_a.py").read_text(), option_a)
    exec((ROOT / "tests/rehearsal.py").read_text(), rehearsal)
    assert (rehearsal["n_embd"] // rehearsal["n_head"]
            == option_a["n_embd"] // option_a["n_head"])  # heads of 64
    per_micro_step = lambda c: 8 * c["batch_size"] * c["block_size"]  # noqa: E731 (8 ranks)
    assert (rehearsal["batch_tokens"] // per_micro_step(rehearsal)
            == option_a["batch_tokens"] // per_micro_step(option_a)
            == 4)  # 4 accumulation steps on 8 ranks, as on 8 GPUs


@pytest.mark.slow
def test_smoke_config_runs_under_torchrun_and_errors_print_once(owt_data, tmp_path):
    """config/smoke.py as written on 2 processes (its batch_tokens used to divide only on 1), and a
    setting every rank refuses: one 'error:' line in the whole output, not one per rank under
    torchrun's report."""
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
                "config/smoke.py", f"--data_dir={owt_data}"]
    result = run_script(*torchrun, f"--out_dir={tmp_path / 'ok'}", "--max_iters=2",
                        "--eval_iters=2")
    assert "2 x cpu" in result.stdout and "1 micro-steps of 4x128" in result.stdout
    assert "stopped (max_iters) at step 2" in result.stdout
    result = run_script(*torchrun, f"--out_dir={tmp_path / 'bad'}", "--max_iters=2",
                        "--batch_tokens=1000", check=False)
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert (result.returncode != 0 and len(errors) == 1
            and "batch_tokens=1000 is not a multiple" in errors[0])


@in_background
def exact_resume_runs(tmp_path_factory, need) -> dict[str, tuple]:
    """For each optimizer, 6 steps in one go and 3 steps + a resume to 6, on the background thread:
    six runs in fp16, which a CPU computes slowly. {optimizer: (folder, one_go, resumed)}."""
    tmp = tmp_path_factory.mktemp("exact_resume")
    data, runs = write_small_data(need("owt_data"), tmp / "data"), {}
    for optimizer in ("adamw", "muon"):
        args = ["--dtype=float16", "--dropout=0.1", "--eval_interval=3", "--lr_decay_iters=6",
                f"--optimizer={optimizer}"]
        one_go = train(data, tmp / optimizer / "one", *args, "--max_iters=6")
        train(data, tmp / optimizer / "two", *args, "--max_iters=3")
        resumed = train(data, tmp / optimizer / "two", *args, "--max_iters=6", "--init_from=resume")
        runs[optimizer] = tmp / optimizer, one_go, resumed
    return runs


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_exact_resume_with_fp16_scaler_and_dropout(exact_resume_runs, optimizer):
    """3 steps + resume + 3 steps == 6 steps, float for float: weights, optimizer(s) (Muon's and
    AdamW's states), GradScaler and the data and dropout random streams all come back. 6 steps of
    128 tokens are 5 epochs of this data: one warning."""
    folder, one_go, resumed = exact_resume_runs[optimizer]
    (a_train, a_eval), (b_train, b_eval) = metrics(folder / "one"), metrics(folder / "two")
    assert ([r["iter"] for r in a_train] == list(range(6))
            and all(r["loss_scale"] > 0 for r in a_train))
    # the last step runs at the smoke config's min_lr
    assert a_train[-1]["lr"] == pytest.approx(3e-4)
    for key in ("loss", "lr", "grad_norm", "loss_scale", "tokens"):
        assert [r[key] for r in a_train] == [r[key] for r in b_train], key
    assert ([(r["iter"], r["val_loss"]) for r in a_eval]
            == [(r["iter"], r["val_loss"]) for r in b_eval])
    a, b = (common.load_checkpoint(str(folder / "one")),
            common.load_checkpoint(str(folder / "two")))
    assert (a["model"].keys() == b["model"].keys()
            and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]))
    assert a["scaler"] == b["scaler"] and a["tokens_seen"] == b["tokens_seen"] == 6 * 128
    assert (one_go.stdout.count("warning: ") == 1 and "epochs over" in one_go.stdout
            and "warning" in resumed.stdout)
    assert len(a["optimizer"]) == len(b["optimizer"]) == (2 if optimizer == "muon" else 1)
    # every state tensor (moments, momenta, steps) and setting
    assert same_state(a["optimizer"], b["optimizer"])
    # the schedule drives Muon's own peak (smoke's muon_lr 0.02) as it drives AdamW's (3e-2)
    if optimizer == "muon":
        assert [r["muon_lr"] for r in a_train] == pytest.approx(
            [r["lr"] * 0.02 / 3e-2 for r in a_train], rel=1e-12)
        assert a["optimizer"][0]["param_groups"][0]["lr"] == pytest.approx(3e-4 * 0.02 / 3e-2)


@in_background
def compiled_runs(tmp_path_factory, need) -> tuple[Path, list[subprocess.CompletedProcess]]:
    """4 eager steps, then 2 compiled steps and a compiled resume to 4, on the background thread: a
    cold compilation takes the suite's tests half a minute. Returns (folder, [first, resumed])."""
    tmp = tmp_path_factory.mktemp("compiled")
    data = write_small_data(need("owt_data"), tmp / "data")
    args = ["--eval_interval=2", "--lr_decay_iters=4",
            "--batch_tokens=256"]  # 2 micro-steps: accumulation compiled
    # dynamo logs each recompile and the guard that failed
    env = {**environ(), "TORCH_LOGS": "recompiles"}
    train(data, tmp / "eager", *args, "--max_iters=4")
    first = train(data, tmp / "compiled", *args, "--max_iters=2", "--compile=True", env=env)
    resumed = train(data, tmp / "compiled", *args, "--max_iters=4", "--compile=True",
                    "--init_from=resume", env=env)
    return tmp, [first, resumed]


@pytest.mark.slow
def test_compiled_training_resumes_saves_plain_weights_and_recompiles_once(compiled_runs):
    """compile is on by default on CUDA: here inductor compiles for the CPU. 2 compiled steps + a
    compiled resume to 4 follow 4 eager steps (fused kernels round differently: 1e-4), the
    checkpoint's names are the plain model's (never torch.compile's _orig_mod.) and load into an
    uncompiled GPT that reproduces the run's val loss, and dynamo compiles each mode (train, then
    eval under no_grad) once: one recompile a process, never one a step."""
    folder, (first, resumed) = compiled_runs
    for run in (first, resumed):
        assert ("compile True" in run.stdout
                and run.stderr.count("Recompiling function") == 1), run.stderr
    (a_train, a_eval), (b_train, b_eval) = (metrics(folder / "eager"),
                                            metrics(folder / "compiled"))
    assert ([r["iter"] for r in b_train] == list(range(4))
            and [r["iter"] for r in b_eval] == [0, 2, 4])
    assert [r["loss"] for r in b_train] == pytest.approx([r["loss"] for r in a_train], abs=1e-4)
    assert [r["val_loss"] for r in b_eval] == pytest.approx([r["val_loss"] for r in a_eval],
                                                            abs=1e-4)
    checkpoint = common.load_checkpoint(str(folder / "compiled"))
    assert not [k for k in checkpoint["model"] if "_orig_mod" in k or k.startswith("module.")]
    model = GPT(GPTConfig(**checkpoint["model_args"]))
    model.load_state_dict(checkpoint["model"])  # strict: every name is the plain model's
    model.eval()
    with torch.no_grad():  # train.py's val loss: eval_iters=2 batches, batch k from its own seed
        get_batch, seeded_generator = common.get_batch, common.seeded_generator
        losses = [model(*get_batch(str(folder / "data"), "val", 4, 32,
                                   seeded_generator(k)))[1] for k in (0, 1)]
    assert checkpoint["iter_num"] == 4 and float(torch.stack(losses).mean()) == pytest.approx(
        b_eval[-1]["val_loss"], abs=1e-4)


def test_a_resume_may_change_the_precision(small_data, tmp_path):
    """A run in fp32 or bf16 (a CPU, an H100) resumed in fp16 (a V100) starts a fresh GradScaler,
    where loading the disabled scaler's empty state used to raise; and an fp16 run resumes in bf16,
    its scaler state set aside."""
    out, args = tmp_path / "precision", ["--eval_interval=2", "--lr_decay_iters=6"]
    train(small_data, out, *args, "--max_iters=2")
    train(small_data, out, *args, "--max_iters=4", "--init_from=resume", "--dtype=float16")
    assert common.load_checkpoint(str(out))["scaler"]["scale"] > 0
    train(small_data, out, *args, "--max_iters=6", "--init_from=resume", "--dtype=bfloat16")
    train_rows, _ = metrics(out)
    assert [r["iter"] for r in train_rows] == list(range(6))
    assert ([r["loss_scale"] is not None for r in train_rows]
            == [False, False, True, True, False, False])
    assert (all(math.isfinite(r["loss"]) for r in train_rows)
            and common.load_checkpoint(str(out))["iter_num"] == 6)


@pytest.mark.slow
def test_time_budget_ends_in_time_and_a_resume_continues_it(owt_data, tmp_path):
    budget = 10.0
    args = [f"--time_budget_hours={budget / 3600}", "--eval_interval=1000",
            "--lr_decay_iters=100000"]
    out = tmp_path / "budget"
    train(owt_data, out, *args, "--max_iters=2")  # stops at 2 steps, well inside the budget
    first = common.load_checkpoint(str(out))
    assert first["iter_num"] == 2 and 0 < first["elapsed"] < budget
    result = train(owt_data, out, *args, "--max_iters=0", "--init_from=resume")
    assert "stopped (time budget)" in result.stdout
    # the resumed run says what it resumed: step, tokens, the budget's time used (the checkpoint's,
    # to the second)
    h, m, s = (int(first["elapsed"] // 3600), int(first["elapsed"] % 3600 // 60),
               int(first["elapsed"] % 60))
    assert (f"resumed {out / 'ckpt.pt'}: step 2, 256 tokens, {h}h{m:02d}m{s:02d}s elapsed of the "
            f"0h00m10s budget, val loss {first['val_loss']:.4f} (step 2)") in result.stdout
    last = common.load_checkpoint(str(out))
    assert last["iter_num"] > 2 and first["elapsed"] < last["elapsed"] <= budget
    train_rows, evals = metrics(out)
    resumed = [r for r in train_rows if r["iter"] >= 2]
    # the clock and the schedule went on from the checkpoint's, rather than from elapsed 0 and the
    # peak LR: the first resumed step is at least as far along as the checkpoint's elapsed time
    # over the budget
    peak, low = 3e-2, 3e-4  # the smoke config's learning_rate (overridden in TINY) and min_lr
    get_lr = partial(common.get_lr, learning_rate=peak, min_lr=low, warmup_iters=2,
                     lr_schedule="cosine")
    assert (resumed[0]["elapsed"] > first["elapsed"]
            and resumed[0]["lr"] < get_lr(2, first["elapsed"] / budget))
    # the schedule ran on the clock (lr_decay_iters is far away) and reached min_lr at the deadline
    assert resumed[-1]["lr"] - low < 0.1 * (peak - low)
    assert evals[-1]["iter"] == last["iter_num"] and evals[-1]["elapsed"] <= budget


def test_val_loss_is_the_eval_mode_mean_over_fixed_windows_and_each_step_follows_the_schedule(
        small_data, tmp_path):
    """With dropout on, the val loss a run logs and saves is the eval-mode (no dropout) mean over
    the fixed val batches k = 0..eval_iters-1, each drawn from its own seed (not from the training
    stream), recomputed here from the saved weights; and each step's logged learning rate is the
    documented schedule's, by hand: linear warmup from step 1 over warmup_iters, cosine to min_lr
    reached by the last step."""
    out = tmp_path / "dropout"
    train(small_data, out, "--dropout=0.5", "--max_iters=3", "--eval_interval=1000")
    checkpoint = common.load_checkpoint(str(out))
    assert checkpoint["iter_num"] == checkpoint["val_iter"] == 3
    model = common.model_from_checkpoint(checkpoint).eval()
    seeded_generator = common.seeded_generator
    with torch.no_grad():  # TINY: eval_iters=2, batch_size=4, block_size=32
        losses = [model(*common.get_batch(str(small_data), "val", 4, 32,
                                          seeded_generator(k)))[1].item()
                  for k in range(2)]
    assert checkpoint["val_loss"] == pytest.approx(float(np.mean(losses)), rel=1e-5)
    train_rows, evals = metrics(out)
    assert [r["iter"] for r in evals] == [0, 3] and evals[-1]["val_loss"] == checkpoint["val_loss"]
    # TINY's learning_rate and warmup_iters, the smoke config's min_lr
    peak, low, warmup, steps = 3e-2, 3e-4, 2, 3
    expected = [min(1, (s + 1) / (warmup + 1))
                * (low + (peak - low) * (1 + math.cos(math.pi * (s + 1) / steps)) / 2)
                for s in range(steps)]
    assert [r["iter"] for r in train_rows] == list(range(steps))
    assert [r["lr"] for r in train_rows] == pytest.approx(expected, rel=1e-9)


def test_a_disk_that_fills_mid_run_stops_in_one_line_with_the_last_checkpoint_intact(owt_data,
                                                                                     tmp_path):
    """A file-size limit stands in for a full disk or quota (writes fail with EFBIG as with ENOSPC).
    Hours into a run the checkpoint no longer fits: one line naming the file kept and
    --init_from=resume, no .tmp, the previous checkpoint byte for byte; metrics.jsonl or loss.png
    failing first is one line too (they were tracebacks)."""
    out = tmp_path / "run"
    train(owt_data, out, "--max_iters=2", "--eval_interval=2")
    before = (out / "ckpt.pt").read_bytes()
    resumed = train(owt_data, out, "--max_iters=4", "--eval_interval=2", "--init_from=resume",
                    check=False, file_size_limit=len(before) // 2)
    assert resumed.returncode == 1 and resumed.stderr.strip().splitlines()[-1] == (
        f"error: cannot write the checkpoint {out / 'ckpt.pt'} (File too large); "
        f"{out / 'ckpt.pt'} keeps the previous checkpoint: free space, then resume from it")
    assert (out / "ckpt.pt").read_bytes() == before and not list(out.glob("*.tmp"))
    fresh = train(owt_data, tmp_path / "fresh", "--max_iters=2", check=False, file_size_limit=4096)
    assert fresh.returncode == 1 and fresh.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {tmp_path / 'fresh' / 'loss.png'} (File too large); "
        "no checkpoint was written: free space or choose another out_dir")
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == ["metrics.jsonl"]


def test_a_micro_batch_too_big_for_memory_is_one_line_that_says_to_lower_batch_size(owt_data,
                                                                                    tmp_path):
    """An oversized --batch_size on a GPU was torch's OutOfMemoryError and a page of allocator
    statistics. Here a 3 GB address-space limit stands in for a full GPU: the CPU allocator fails
    the same way (the first activation of 65,536 x 32 tokens of width 512 is 4.3 GB), and the run
    stops in one line, before any checkpoint."""
    out = tmp_path / "oom"
    result = train(owt_data, out, "--n_embd=512", "--batch_size=65536",
                   f"--batch_tokens={65536 * 32}", "--max_iters=1", check=False,
                   memory_limit=3 * 2**30)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        "error: out of memory in an eval (micro-batches of 65536 x 32 tokens on cpu): "
        "lower --batch_size; batch_tokens stays, as more accumulation steps make up the batch "
        "(`python bench.py --plan` shows what fits a GPU)"]
    assert not (out / "ckpt.pt").exists()


@pytest.mark.slow
def test_sigterm_finishes_the_step_saves_and_exits_cleanly(owt_data, tmp_path):
    out = tmp_path / "sigterm"
    cmd = [sys.executable, "train.py", *TINY, f"--data_dir={owt_data}", f"--out_dir={out}",
           "--max_iters=100000", "--eval_interval=1000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stdout:  # wait until it is training
        lines.append(line)
        if line.startswith("step 2:"):
            proc.send_signal(signal.SIGTERM)
            break
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    checkpoint = common.load_checkpoint(str(out))
    step = checkpoint["iter_num"]
    # the final line says where each number is from: no eval since step 0's (a signal skips it),
    # the save at the stop
    assert step >= 3 and f"stopped (signal) at step {step} " in stdout
    assert (" (step 0), " in stdout.splitlines()[-1]
            and stdout.splitlines()[-1].endswith(f"(step {step})"))
    assert checkpoint["val_iter"] == 0  # and so does the checkpoint, for the next run to say
    common.model_from_checkpoint(checkpoint)


def test_a_signal_before_the_first_eval_saves_nothing_and_says_so(owt_data, tmp_path):
    """A SIGTERM while the script sets up: it stops at step 0, before any eval; the last line must
    not claim a val loss or a checkpoint (it used to print
    'val loss nan ... checkpoint out/ckpt.pt (step None)')."""
    out = tmp_path / "early"
    early_signal = (
        "import runpy, signal, sys\n"
        "real_signal = signal.signal\n"
        "def install(sig, handler):  # the handler, then at once the signal it handles\n"
        "    real_signal(sig, handler)\n"
        "    if sig == signal.SIGTERM and callable(handler):"
        "  # not SIG_IGN, set once the run is over\n"
        "        handler(sig, None)\n"
        "signal.signal = install\n"
        "sys.argv = ['train.py', *sys.argv[1:]]\n"
        "runpy.run_path('train.py', run_name='__main__')\n")
    result = run_script("-c", early_signal, *TINY, f"--data_dir={owt_data}", f"--out_dir={out}",
                        "--max_iters=2")
    # the elapsed time is the setup's, a second or two on a loaded CI machine, so only its form
    # is checked
    assert re.search(r"stopped \(signal\) at step 0 after 0h00m0\ds: no eval, 0 tokens; "
                     r"no checkpoint written$", result.stdout.splitlines()[-1])
    assert "not saving at step 0: no eval yet; no checkpoint written yet" in result.stdout
    assert not (out / "ckpt.pt").exists()


def test_kill_during_a_checkpoint_save_leaves_the_previous_one(owt_data, tmp_path):
    """train.py killed (SIGKILL) halfway through writing its second checkpoint: the first one is
    still there."""
    out = tmp_path / "killed"
    killer = (
        "import os, runpy, signal, sys, torch\n"
        "real_save, calls = torch.save, []\n"
        "def save(obj, f, *args, **kwargs):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2:\n"
        "        f.write(b'half a checkpoint'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real_save(obj, f, *args, **kwargs)\n"
        "torch.save = save\n"
        "sys.argv = ['train.py', *sys.argv[1:]]\n"
        "runpy.run_path('train.py', run_name='__main__')\n")
    result = run_script("-c", killer, *TINY, f"--data_dir={owt_data}", f"--out_dir={out}",
                        "--max_iters=10", "--eval_interval=2", check=False,
                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == -signal.SIGKILL and "eval 2:" in result.stdout
    assert (out / "ckpt.pt.tmp").exists()  # the torn write
    checkpoint = common.load_checkpoint(str(out))
    assert checkpoint["iter_num"] == 0
    common.model_from_checkpoint(checkpoint)


# -------------------------------------------------------- runs that must stop with a one-line error

# settings out of range, each once: they used to divide by zero (a traceback), reach torch's own
# ValueError, or run on meaning something else (eval_iters=0: a NaN val loss and no checkpoint;
# divergence_steps=0: "diverged" at once)
OUT_OF_RANGE = {
    "--eval_iters=0": "eval_iters must be at least 1, got 0",
    "--batch_size=0": "batch_size must be at least 1, got 0",
    "--batch_tokens=0": "batch_tokens must be at least 1, got 0",
    "--block_size=0": "block_size must be at least 1, got 0",
    "--eval_interval=0": "eval_interval must be at least 1, got 0",
    "--log_interval=0": "log_interval must be at least 1, got 0",
    "--divergence_steps=0": "divergence_steps must be at least 1, got 0",
    "--vocab_multiple_of=0": "vocab_multiple_of must be at least 1, got 0",
    "--warmup_iters=-5": "warmup_iters must be 0 or more, got -5",
    "--time_budget_hours=-1": "time_budget_hours must be 0 or more, got -1.0",
    "--loss_chunk=-1": "loss_chunk must be 0 or more, got -1",
    "--learning_rate=-1": "learning_rate must be positive, got -1.0",
    "--learning_rate=1e999": "config key 'learning_rate' on the command line must be a "
                             "finite number",  # not min_lr
    "--decay_fraction=2": "decay_fraction (the final share of training spent decaying, wsd) "
                          "must be in (0, 1], got 2.0",
    "--optimizer=sgd": "optimizer must be 'adamw' or 'muon', got 'sgd'",
    "--muon_lr=0": "muon_lr must be positive and muon_weight_decay 0 or more, got 0.0 and 0.0",
    "--muon_momentum=1": "muon_momentum, beta1 and beta2 must be in [0, 1), got 1.0, 0.9 and 0.95",
}


# Runs train.py once per case in one process (torch imported once): {case: exit message}
FAILURES_DRIVER = (
    "import json, runpy, sys, torch\n"
    "cases, results = json.loads(sys.argv[1]), {}\n"
    "for name, argv in cases.items():\n"
    "    if name == 'v100':"
    "  # a V100 under a torch build without sm_70 (the cu128 wheels from 2.11 on)\n"
    "        torch.cuda.is_available = lambda: True\n"
    "        torch.cuda.get_device_capability = lambda device=None: (7, 0)\n"
    "        torch.cuda.get_device_name = lambda device=None: 'Tesla V100-SXM2-32GB'\n"
    "        torch.cuda.get_arch_list = lambda: "
    "['sm_75', 'sm_80', 'sm_86', 'sm_90', 'sm_100', 'sm_120']\n"
    "    if name == 'one gpu':"
    "  # an H100 without torchrun: set_device gets what torch's own index check takes\n"
    "        torch.cuda.get_device_capability = lambda device=None: (9, 0)\n"
    "        torch.cuda.set_device = lambda d: "
    "sys.exit(f'set_device {torch._utils._get_device_index(d)}')\n"
    "    sys.argv = ['train.py', *argv]\n"
    "    try:\n"
    "        runpy.run_path('train.py', run_name='__main__')\n"
    "        results[name] = 'finished'\n"
    "    except SystemExit as e:\n"
    "        results[name] = str(e.code)\n"
    "    except Exception as e:  # a traceback: this case fails, the others still run\n"
    "        results[name] = f'{type(e).__name__}: {e}'\n"
    "print('RESULTS ' + json.dumps(results))\n")


def damaged_data(small_data: Path, tmp: Path) -> dict[str, list[str]]:
    """{case: train.py's arguments} for data folders broken one way each: each is refused before the
    first eval, so no step-0 checkpoint."""
    damaged = {}
    meta_text, train_ids = ((small_data / "meta.json").read_text(),
                            np.fromfile(small_data / "train.bin", np.uint16))
    for name, (train, val, meta) in {
        "padding ids": (np.where(np.arange(150) == 77, 50300, train_ids).astype(np.uint16),
                        None, None),  # inf loss
        "ids past the embedding": (None, np.full(300, 60000, np.uint16).tobytes(),
                                   None),  # an IndexError before
        "odd bytes": (None, (small_data / "val.bin").read_bytes()[:-1], None),
        "empty val": (None, b"", None),
        "meta not json": (None, None, "{not json"),
        "meta without vocab": (None, None, json.dumps({"tokenizer": "gpt2"})),
    }.items():
        folder = tmp / name.replace(" ", "_")
        folder.mkdir()
        (folder / "train.bin").write_bytes(train_ids.tobytes() if train is None
                                           else train.tobytes())
        (folder / "val.bin").write_bytes(val if val is not None
                                         else (small_data / "val.bin").read_bytes())
        (folder / "meta.json").write_text(meta or meta_text)
        damaged[name] = [f"--data_dir={folder}", f"--out_dir={tmp / ('out_' + folder.name)}"]
    missing_val = tmp / "missing_val"
    missing_val.mkdir()
    (missing_val / "train.bin").write_bytes((small_data / "train.bin").read_bytes())
    (missing_val / "meta.json").write_text(meta_text)
    damaged["missing val"] = [f"--data_dir={missing_val}", f"--out_dir={tmp / 'out_missing_val'}"]
    return damaged


@pytest.fixture(scope="module")
def failures(owt_data, small_data, tmp_path_factory) -> dict:
    """Runs train.py in one process (torch imported once) for each case and returns
    {case: (message, out_dir)}.
    Order matters: 'nan' leaves the checkpoint that the two cases after it find."""
    tmp = tmp_path_factory.mktemp("failures")
    big_vocab = tmp / "big_vocab"
    big_vocab.mkdir()
    for name in ("train.bin", "val.bin"):
        (big_vocab / name).write_bytes((small_data / name).read_bytes())
    (big_vocab / "meta.json").write_text(json.dumps(
        {**json.loads((small_data / "meta.json").read_text()), "vocab_size": 60000}))
    short = tmp / "short"  # 20 tokens, fewer than a 32-token window
    short.mkdir()
    for name in ("train.bin", "val.bin"):
        (short / name).write_bytes((small_data / name).read_bytes()[:40])
    (short / "meta.json").write_text((small_data / "meta.json").read_text())
    (tmp / "a_file").write_text("")
    data, nan_out = f"--data_dir={owt_data}", tmp / "nan"
    cases = {
        "missing data": [f"--data_dir={tmp / 'nowhere'}", f"--out_dir={tmp / 'o1'}"],
        "vocab": [f"--data_dir={big_vocab}", f"--out_dir={tmp / 'o2'}"],
        "short data": [f"--data_dir={short}", f"--out_dir={tmp / 'o3'}"],
        "no checkpoint": [data, f"--out_dir={tmp / 'o4'}", "--init_from=resume"],
        "unwritable": [data, f"--out_dir={tmp / 'a_file' / 'out'}"],
        "batch": [data, f"--out_dir={tmp / 'o5'}", "--batch_tokens=100"],
        "no end": [data, f"--out_dir={tmp / 'o6'}", "--max_iters=0"],
        "nan": [data, f"--out_dir={nan_out}", "--inject_nan_at_iter=4", "--eval_interval=2",
                "--divergence_steps=3", "--max_iters=100"],
        "architecture": [data, f"--out_dir={nan_out}", "--init_from=resume", "--n_layer=2"],
        "optimizer switch": [data, f"--out_dir={nan_out}", "--init_from=resume",
                             "--optimizer=muon"],
        "overwrite": [data, f"--out_dir={nan_out}"],
        "spike": [data, f"--out_dir={tmp / 'o8'}", "--divergence_ratio=0.5", "--divergence_steps=2",
                  "--max_iters=100"],
        **{arg: [data, f"--out_dir={tmp / arg[2:]}", "--max_iters=1", arg] for arg in OUT_OF_RANGE},
        **damaged_data(small_data, tmp),
        # last: these two leave torch.cuda patched
        "v100": [data, f"--out_dir={tmp / 'o7'}", "--device=cuda"],
        "one gpu": [data, f"--out_dir={tmp / 'o9'}", "--device=cuda"],
    }
    cases = {name: [*TINY, *argv] for name, argv in cases.items()}
    result = run_script("-c", FAILURES_DRIVER, json.dumps(cases))
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULTS "))
    return {name: (message, nan_out)
            for name, message in json.loads(line[len("RESULTS "):]).items()}


@pytest.mark.parametrize("case, expected", [
    ("missing data", "python prepare.py --input"),
    ("vocab", "vocab_size=50257: set vocab_size >= 60000"),
    ("short data", "fewer than block_size+1=33"),
    ("no checkpoint", "no checkpoint at"),
    ("unwritable", "a_file' is a file, not a folder; choose another --out_dir"),
    ("batch", "batch_tokens=100 is not a multiple of batch_size*block_size*world_size"),
    ("no end", "set max_iters or time_budget_hours"),
    ("v100", "no kernels for Tesla V100-SXM2-32GB (sm_70; it has sm_75"),
    ("architecture", "another architecture (n_layer=1; the settings say n_layer=2)"),
    ("optimizer switch", "trained with optimizer=adamw, whose state cannot continue as muon: "
                         "resume with --optimizer=adamw"),
    ("overwrite", "exists: continue it with --init_from=resume"),
    *OUT_OF_RANGE.items(),
])
def test_bad_input_stops_with_a_one_line_error(failures, case, expected):
    message, _ = failures[case]
    assert message.startswith("error: ") and "\n" not in message
    assert expected in message
    # a command that replaces the build: pip keeps an installed torch of the same version
    if case == "v100":
        assert "pip uninstall -y torch && pip install torch==" in message
        assert message.split("pip install torch==")[1].split()[1:3] == [
            "--index-url", "https://download.pytorch.org/whl/cu126"]


@pytest.mark.parametrize("case, expected", [
    ("padding ids", "train.bin holds token id 50300 at token 77, outside the vocabulary of 50257"),
    ("ids past the embedding",
     "val.bin holds token id 60000 at token 0, outside the vocabulary of 50257"),
    ("odd bytes", "val.bin has an odd number of bytes (599)"),
    ("empty val", "val.bin is empty"),
    ("missing val", "val.bin is missing beside meta.json"),
    ("meta not json", "meta.json is damaged (JSONDecodeError"),
    ("meta without vocab", "meta.json has no vocab_size"),
])
def test_damaged_data_is_refused_before_the_first_eval_or_checkpoint(failures, tmp_path_factory,
                                                                      case, expected):
    """Ids the model has no row for (or only a padding row: an infinite loss blamed on the learning
    rate), a file cut short, empty or missing, a meta.json that is not JSON: one line naming the
    file and `prepare.py`, and no step-0 ckpt.pt, which would make the same command, rerun on mended
    data, refuse to overwrite it."""
    message, nan_out = failures[case]
    assert message.startswith("error: ") and "\n" not in message
    assert expected in message and "prepare" in message
    out = nan_out.parent / ("out_" + case.replace(" ", "_"))
    assert not (out / "ckpt.pt").exists()


def test_one_gpu_without_torchrun_gets_an_indexed_device(failures):
    """`python train.py --device=cuda` on one GPU: torch.cuda.set_device refuses a bare 'cuda'
    (ValueError: Expected a torch.device with a specified index), so train.py must hand it
    cuda:0."""
    assert failures["one gpu"][0] == "set_device 0"


def test_divergence_guard_stops_and_keeps_the_last_good_checkpoint(failures):
    for case in ("nan", "spike"):
        message, _ = failures[case]
        assert message.startswith("error: training diverged") and "\n" not in message
    message, out = failures["nan"]
    assert "loss nan for 3 steps in a row at step 4" in message and "(step 4)" in message
    # saved at step 4's eval, before the NaNs; the later runs refused
    checkpoint = common.load_checkpoint(str(out))
    assert (checkpoint["iter_num"] == 4
            and all(torch.isfinite(v).all() for v in checkpoint["model"].values()))
    train_rows, _ = metrics(out)
    # the non-finite steps: logged, counted, not progress
    skips = [r for r in train_rows if r["iter"] == 4]
    assert [r["skipped"] for r in skips] == [1, 2, 3] and all(math.isnan(r["loss"]) for r in skips)
    # ratio 0.5: every loss after the first spikes
    assert "for 2 steps in a row at step 2;" in failures["spike"][0]
