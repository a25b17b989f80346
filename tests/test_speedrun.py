"""speedrun.sh end to end at its smallest scale: the demo's stages on the data that ships in
assets/demo/, a few steps each, in this interpreter's environment (--no_install); then a rerun that
skips what is complete and resumes what was cut short."""

import json
import os
import subprocess
import sys

import pytest

import common
from launch import ROOT, environ, forking_python, in_background

STEPS = 3
FINISHED = f"| status | finished (max_iters) at step {STEPS} |"

pytestmark = pytest.mark.slow  # the whole pipeline, stage by stage



def speedrun(*args: str) -> subprocess.CompletedProcess:
    # `python` on PATH is this interpreter, as in an activated virtual environment, each run forked
    # from one that has imported torch (launch.py)
    env = {**environ(), "OMP_NUM_THREADS": "1"}
    python = os.path.dirname(forking_python(env))
    env["PATH"] = f"{python}:{os.path.dirname(sys.executable)}:{env['PATH']}"
    return subprocess.run(["bash", str(ROOT / "speedrun.sh"), *args], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)


@in_background
def pipeline(tmp_path_factory, need):
    out = tmp_path_factory.mktemp("speedrun")
    return out, speedrun("--demo", f"--steps={STEPS}", "--no_install", f"--out={out}")


def test_every_stage_and_the_report(pipeline):
    out, r = pipeline
    assert r.returncode == 0, r.stdout[-3000:]
    stages = [line.split("\t")[0] for line in (out / "stages.tsv").read_text().splitlines()]
    assert stages == ["install", "prepare", "pretrain", "sft", "eval", "sample", "report"]
    for stage in stages:
        assert f"== {stage}: done in " in r.stdout

    base = common.load_checkpoint(str(out / "base"))
    sft = common.load_checkpoint(str(out / "sft"))
    assert base["iter_num"] == STEPS and base["config"]["data_dir"] == f"{out}/data/demo"
    assert sft["iter_num"] == STEPS and sft["chat_template"]
    assert sft["config"]["init_from"] == f"{out}/base"
    for d in ("base", "sft"):
        assert FINISHED in (out / d / "report.md").read_text()
        assert (out / d / "loss.png").stat().st_size > 0

    with open(out / "eval-base.json") as f:
        results = json.load(f)["results"]
    assert set(results) == {"val", "hellaswag", "lambada"}
    assert results["hellaswag"]["n"] == results["lambada"]["n"] == 4  # the shipped slices, offline
    with open(out / "eval-sft.json") as f:
        assert set(json.load(f)["results"]) == {"chat"}

    sample, chat = (out / "sample.txt").read_text(), (out / "chat.txt").read_text()
    assert sample.startswith("ROMEO:") and len(sample) > len("ROMEO:") + 20
    assert chat.startswith("User: Hello! Who are you?\nAssistant: ")
    assert "\nUser: What do you do for fun?\nAssistant: " in chat

    page = (out / "report.md").read_text()
    for row in ("| pretrain |", "| sft |", "| base | hellaswag | acc ", "| sft | chat | loss "):
        assert row in page
    assert sample.strip() in page and chat.strip() in page
    # each run's own page follows, its picture's path made relative to this one
    assert "](base/loss.png)" in page and "](sft/loss.png)" in page
    assert f"python chat.py --out_dir={out}/sft" in r.stdout


def test_rerun_skips_what_is_complete_and_resumes_what_was_cut_short(pipeline):
    out, first = pipeline
    assert first.returncode == 0
    # the fine-tuning cut short after an eval: its report.md says "training", and ckpt.pt is there
    report = out / "sft" / "report.md"
    report.write_text(report.read_text().replace(FINISHED, f"| status | training: step {STEPS} |"))
    base_ckpt = (out / "base" / "ckpt.pt").stat().st_mtime_ns
    base_results = (out / "eval-base.json").read_text()
    r = speedrun("--demo", f"--steps={STEPS}", "--no_install", f"--out={out}")
    assert r.returncode == 0, r.stdout[-3000:]
    assert f"{out}/data/demo is complete: kept" in r.stdout
    assert f"{out}/base is finished: kept" in r.stdout
    assert f"resuming {out}/sft from its checkpoint" in r.stdout
    assert (out / "base" / "ckpt.pt").stat().st_mtime_ns == base_ckpt
    assert FINISHED in report.read_text()
    # what came from the kept base model is kept; what came from the fine-tuned one is made again
    assert (out / "eval-base.json").read_text() == base_results
    assert f"checkpoint {out}/base:" not in r.stdout and f"loaded {out}/base:" not in r.stdout
    # eval.py's line for the model it scores
    assert f"checkpoint {out}/sft: iter {STEPS}" in r.stdout
    assert (out / "chat.txt").read_text().startswith("User: Hello! Who are you?")


def test_bad_flags_are_one_line():
    r = speedrun("--option=d")
    assert r.returncode == 2 and r.stdout.strip() == (
        "error: unknown argument '--option=d' (bash speedrun.sh --help lists the flags)")
    r = speedrun("--budget_hours=soon")
    assert r.returncode == 2
    assert r.stdout.strip() == "error: --budget_hours=soon is not a number of hours"
