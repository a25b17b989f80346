"""
preflight.py on the CPU: green under torchrun on two gloo ranks, the numerics row against the
committed fp32 reference curve, and red on each fault it is meant to catch (a NaN in the weights, a
GradScaler that overflows every other step, a resume that loses the optimizer's state, a compile
that fails).
"""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from launch import ROOT, run_in_process, run_script

# a tiny run: 1 layer of 16 wide, 2 micro-batches of 2 x 32 tokens per rank on 2 ranks
TINY = ["config/smoke.py", "--n_layer=1", "--n_embd=16", "--n_head=1", "--block_size=32",
        "--batch_size=2", "--batch_tokens=256", "--eval_iters=2", "--timed_steps=1",
        "--numerics_steps=20", "--scaler_warmup=10"]
REFERENCE = json.loads((ROOT / "assets" / "preflight" / "reference.json").read_text())


def rows(out: Path) -> dict:
    report = json.loads((out / "preflight.json").read_text())
    return {r["check"]: r for r in report["rows"]} | {"_report": report}


@pytest.mark.slow
def test_preflight_goes_green_on_two_gloo_ranks_and_prints_the_command_that_passed(owt_data,
                                                                                   tmp_path):
    out = tmp_path / "out"
    args = [*TINY, f"--data_dir={owt_data}", f"--out_dir={out}"]
    # new interpreters, as a user's torchrun starts them: once, forked from a zygote (launch.py),
    # a run hung after printing its table, and the cause is not yet known
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2", "preflight.py", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    got = rows(out)
    report = got.pop("_report")
    assert report["go"] and report["world_size"] == 2
    assert {k: v["status"] for k, v in got.items()} == {
        "device": "GO", "all-reduce": "GO", "attention": "GO", "numerics": "GO", "data": "GO",
        "compile": "n/a", "speed": "GO", "memory": "n/a", "checkpoint": "GO", "eval": "GO"}
    assert got["all-reduce"]["bus_gb_s"] > 0 and "gloo" in got["all-reduce"]["figure"]
    # head 16 in fp32 on the CPU: torch's fused CPU kernel
    assert got["attention"]["kernel"] == "flash (CPU)"
    # fp32 on the CPU: the reference's own curve, on each rank
    np.testing.assert_allclose(got["numerics"]["window_means"], REFERENCE["window_means"][:1],
                               atol=1e-3)
    assert got["checkpoint"]["resume_gap"] == 0 and got["speed"]["tokens_per_s"] > 0
    kept = [a for a in args
            if a.split("=")[0] not in ("--timed_steps", "--numerics_steps", "--scaler_warmup")]
    command = shlex.join(["torchrun", "--standalone", "--nproc_per_node=2", "train.py", *kept])
    assert report["command"] == command and f"GO: run\n  {command}" in r.stdout


def test_each_fault_turns_its_row_red_and_the_exit_code_non_zero(owt_data, tmp_path):
    """A NaN in the reference model's weights (numerics), a resume that drops the optimizer's state
    (checkpoint) and a compile that fails (compile: the command then trains eager), in one
    process."""
    out = tmp_path / "out"
    r = run_script("preflight.py", *TINY, f"--data_dir={owt_data}", f"--out_dir={out}",
                   "--compile=True", "--inject_fault=nan,resume,compile", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    got = rows(out)
    assert got["numerics"]["status"] == "NO-GO" and got["numerics"]["gap"] == float("inf")
    assert got["checkpoint"]["status"] == "NO-GO" and got["checkpoint"]["resume_gap"] > 0
    assert (got["compile"]["status"] == "WARN"
            and "injected compile failure" in got["compile"]["figure"])
    assert (got["_report"]["changed"] == {"compile": False}
            and "--compile=False" in got["_report"]["command"])
    assert got["device"]["status"] == got["data"]["status"] == "GO"  # the others stay green
    assert "NO-GO: fix the NO-GO rows above first" in r.stdout


def test_fp16_tracks_the_reference_and_a_gradscaler_skipping_steps_after_its_warm_up_is_a_no_go():
    """The numerics row in fp16 (a V100's precision, tests/rehearsal.py's): with train.py's
    GradScaler the curve is the fp32 reference's within the tolerance and no step is skipped after
    the warm-up; with a scaler that doubles its scale every step (train.py's waits 2000), every
    other step overflows and the row goes red."""
    r = run_script("-c", "import json, sys; sys.argv = ['preflight.py', '--device=cpu', "
                   "'--dtype=float16', '--numerics_steps=20', '--scaler_warmup=10']; "
                   "import preflight as p; good = p.check_numerics(); p.faults.add('scaler'); "
                   "print(json.dumps([good, p.check_numerics()]))")
    good, bad = json.loads(r.stdout.strip().splitlines()[-1])
    assert good["status"] == "GO" and good["late_skips"] == 0
    np.testing.assert_allclose(good["window_means"], REFERENCE["window_means"][:1], atol=0.05)
    assert bad["status"] == "NO-GO" and bad["late_skips"] >= 3


def test_write_reference_reproduces_the_committed_curve(tmp_path, monkeypatch):
    """The committed reference is what --write_reference writes on this machine (fp32 on the CPU),
    here for its first window, so a change to the reference model or its data cannot pass
    unnoticed."""
    r = run_script("-c", "import sys; sys.argv = ['preflight.py', '--numerics_steps=20']; "
                   "import preflight as p; "
                   "print(p.windows(p.numerics_curve('float32', 'cpu')[0]))")
    assert (json.loads(r.stdout.strip().splitlines()[-1])
            == pytest.approx(REFERENCE["window_means"][:1], abs=1e-4))


@pytest.mark.parametrize("bad, message", [
    ("--numerics_steps=5",
     "numerics_steps must be at least 20 (one window of the comparison), got 5"),
    ("--headroom=1", "headroom must be in [0, 1), timed_steps at least 1"),
    ("--inject_fault=typo", "inject_fault takes nan, scaler, compile and resume"),
])
def test_bad_settings_are_one_line_before_any_check_runs(bad, message):
    r = run_in_process("preflight.py", bad)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and message in lines[0], r.stderr
    assert "preflight:" not in r.stdout  # stopped before the table
