"""Tests for compare.py on hand-made metrics.jsonl files: the table's figures, the plot, a run still
being written, and folders without metrics."""

import json
import re
from pathlib import Path

import pytest

import compare
from launch import one_line_error, run_in_process, run_script


def write_run(folder: Path, rows: list[dict], tail: str = "") -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return folder


def train_row(step: int, loss: float, tokens_per_s: float, elapsed: float) -> dict:
    return {"iter": step, "loss": loss, "lr": 1e-3, "tokens_per_s": tokens_per_s,
            "tokens": (step + 1) * 100, "elapsed": elapsed}


def eval_row(step: int, val: float, elapsed: float) -> dict:
    return {"iter": step, "val_loss": val, "tokens": step * 100, "elapsed": elapsed}


RUN_A = [eval_row(0, 10.0, 1.0), train_row(0, 9.0, 50.0, 2.0), train_row(1, 8.0, 70.0, 3.0),
         train_row(2, 7.5, 60.0, 4.0), eval_row(3, 7.0, 5.0), train_row(3, 7.2, 90.0, 6.0),
         eval_row(4, 7.3, 7.5)]


def test_summary_of_a_run_by_hand():
    s = compare.summarise(RUN_A)
    # the last record: the final eval
    assert (s["steps"], s["tokens"], s["elapsed"]) == (4, 400, 7.5)
    assert s["tokens_per_s"] == 65.0  # the median of 50, 70, 60, 90: the steps alone, not the evals
    assert (s["final_val"], s["final_val_iter"], s["best_val"]) == (7.3, 4, 7.0)
    assert s["final_train"] == 7.2


def test_table_and_plot_from_the_command_line(tmp_path):
    """Two runs, one still running (its last line half-written), and a folder with no metrics: the
    table holds a row per run with its figures, the folder without metrics is named and skipped, and
    the PNG is written."""
    a = write_run(tmp_path / "adamw", RUN_A)
    b = write_run(tmp_path / "muon", [eval_row(0, 10.0, 1.0), train_row(0, 8.5, 40.0, 2.0),
                                      eval_row(1, 7.9, 3.0)], tail='{"iter": 1, "loss": 7.')
    (tmp_path / "empty").mkdir()
    png = tmp_path / "both.png"
    out = run_script("compare.py", "--runs", str(a), str(b), str(tmp_path / "empty"),
                     f"--png={png}", "--title=t").stdout
    assert f"{tmp_path / 'empty'}: no metrics.jsonl" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if re.match(r"(adamw|muon) ", line)}
    assert rows["adamw"][1:5] == ["4", "400", "8s", "65"]
    assert rows["adamw"][5:9] == ["7.3000", "@4", "7.0000", "7.2000"]
    assert rows["muon"][1:5] == ["1", "100", "3s", "40"] and rows["muon"][5:7] == ["7.9000", "@1"]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not list(tmp_path.glob("*.tmp"))  # written under a temporary name, then renamed


def test_a_run_without_evals_and_an_empty_file(tmp_path):
    """A run that has logged steps but no eval yet says so in its row; an empty metrics.jsonl is
    skipped."""
    write_run(tmp_path / "young", [train_row(0, 9.0, 10.0, 1.0)])
    write_run(tmp_path / "blank", [])
    # in this process (the test above runs compare.py in one of its own)
    result = run_in_process("compare.py", "--runs", str(tmp_path / "young"),
                            str(tmp_path / "blank"), f"--png={tmp_path / 'p.png'}")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "no eval" in next(line for line in out.splitlines() if line.startswith("young"))
    assert "an empty metrics.jsonl" in out and (tmp_path / "p.png").exists()


@pytest.mark.parametrize("make, message", [
    (lambda t: ["--runs", str(t / "nowhere")], "none of"),
    (lambda t: ["--runs", str(write_run(t / "r", RUN_A)), f"--png={t / 'missing' / 'x.png'}"],
     "its folder does not exist"),
    (lambda t: [], "give the runs to compare"),
    (lambda t: [str(write_run(t / "r", RUN_A))],
     "is a folder, not a config file"),  # --runs forgotten
    (lambda t: ["--runs=" + str(t / "r"), "--png"], "--png=VALUE"),
])
def test_bad_input_is_a_one_line_error(tmp_path, make, message):
    assert message in one_line_error(compare.main, make(tmp_path))
