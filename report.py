"""
report.md: one page a user would share about a run, rewritten atomically as the run goes.

train.py writes out_dir/report.md at each eval and at the end (train_report). speedrun.sh gathers
pretraining, fine-tuning and evaluation on one page at the end:

    python report.py --out=out-demo/report.md --runs out-demo/base out-demo/sft \\
        --evals out-demo/eval-base.json out-demo/eval-sft.json \\
        --texts out-demo/sample.txt out-demo/chat.txt --stages=out-demo/stages.tsv
"""

import contextlib
import json
import math
import os
import re
import statistics
import sys

import torch

import common
import compare
from common import die, read_metrics
from configurator import check_json_path, configure, named

# -----------------------------------------------------------------------------
out = "report.md"  # the page to write
runs = []  # train.py out_dirs, each holding report.md
evals = []  # eval.py --json files
texts = []  # text files shown as they are (a sample, a chat)
stages = ""  # a tab-separated file: stage, time, what it did
# -----------------------------------------------------------------------------


def write_atomic(path: str, text: str) -> None:
    """Written whole, then renamed: never a half-written page; a path that cannot be written (too
    long a name, a full disk) is one line."""
    try:
        with open(f"{path}.tmp", "w") as f:
            f.write(text)
        os.replace(f"{path}.tmp", path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(f"{path}.tmp")
        die(f"cannot write {named(path)}: {e.strerror}")


def hardware(device: str, world_size: int) -> str:
    if device.startswith("cuda"):
        return f"{world_size} x {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return (f"{common.cpu_name()}, {os.cpu_count()} cores, "
            f"{world_size} process{'es' if world_size > 1 else ''}")


def hms(seconds: float) -> str:
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m{int(seconds % 60):02d}s"


def train_report(out_dir: str, config: dict, status: str, hw: str, params: int, train_tokens: int,
                 sample: str) -> str:
    """out_dir/report.md from metrics.jsonl (so across resumes), the run's settings and a sample."""
    rows = read_metrics(os.path.join(out_dir, "metrics.jsonl"))
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "val_loss" in r and math.isfinite(r["val_loss"])]
    c = config
    lines = [f"# {os.path.basename(os.path.normpath(out_dir))}", "", "| | |", "|---|---|",
             f"| status | {status} |", f"| hardware | {hw} |", f"| torch | {torch.__version__} |",
             f"| model | {params:,} parameters: n_layer={c['n_layer']}, n_embd={c['n_embd']}, "
             f"n_head={c['n_head']}, block_size={c['block_size']}, {c['mlp']}, {c['norm']}, "
             f"{c['pos_emb']} |",
             f"| data | {c['data_dir']}: {train_tokens:,} train tokens |"]
    if rows:
        s = compare.summarise(rows)
        epochs = train[-1]["epochs"] if train else 0.0
        mfus = [r["mfu"] for r in train if r.get("mfu")]
        mfu = f"MFU {100 * statistics.median(mfus):.1f}%" if mfus else "MFU: no peak known here"
        lines += [f"| trained | {s['steps']:,} steps, {s['tokens']:,} tokens "
                  f"({epochs:.2f} epochs) |",
                  f"| wall time | {hms(s['elapsed'])} |",
                  f"| throughput | {s['tokens_per_s']:,.0f} tokens/s (median), {mfu} |"]
    if evals:
        first, last = evals[0], evals[-1]
        best = min(r["val_loss"] for r in evals)
        lines.append(f"| val loss | {first['val_loss']:.4f} at step {first['iter']} → "
                     f"{last['val_loss']:.4f} at step {last['iter']} (best {best:.4f}) |")
        hs = [r for r in evals if "hellaswag_acc_norm" in r]
        if hs:
            lines.append(f"| HellaSwag acc_norm | {hs[-1]['hellaswag_acc_norm']:.4f} "
                         f"(first {c['hellaswag_every_eval']} examples) |")
    lines += ["", "![loss](loss.png)", "", "## A sample", "", "```text", sample.strip(), "```", "",
              "## Settings", "", "```python", *[f"{k} = {v!r}" for k, v in c.items()], "```", ""]
    return "\n".join(lines)


def eval_table(paths: list[str]) -> list[str]:
    """eval.py --json results, a row per task: speedrun's eval-NAME.json is the run NAME."""
    lines = ["| model | task | result |", "|---|---|---|"]
    for path in paths:
        with open(path) as f:
            results = json.load(f)["results"]
        name = os.path.splitext(os.path.basename(path))[0].removeprefix("eval-")
        for task, r in results.items():
            figures = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in r.items() if isinstance(v, (int, float)))
            lines.append(f"| {name} | {task} | {figures} |")
    return lines


def final_report(out: str, runs: list[str], evals: list[str], texts: list[str], stages: str) -> str:
    """The pipeline's page: its stages and times, the evaluation, the texts, then each run's own
    report (headings one level down, its loss picture's path made relative to this page)."""
    here = os.path.dirname(os.path.abspath(out))
    lines = ["# smallgpt: the run", ""]
    if stages and os.path.exists(stages):
        with open(stages) as f:
            rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
        lines += ["| stage | time | what |", "|---|---|---|",
                  *[f"| {' | '.join(r)} |" for r in rows], ""]
    if evals:
        lines += ["## Evaluation", "", *eval_table(evals), ""]
    for path in texts:
        title = os.path.splitext(os.path.basename(path))[0].capitalize()
        with open(path) as f:
            lines += [f"## {title}", "", "```text", f.read().strip(), "```", ""]
    for run in runs:
        with open(os.path.join(run, "report.md")) as f:
            body = f.read()
        rel = os.path.relpath(os.path.abspath(run), here)
        body = re.sub(r"^(#+) ", r"#\1 ", body, flags=re.M)
        lines.append(body.replace("](loss.png)", f"]({rel}/loss.png)"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    # a copy of the module's globals, so the defaults stay for the next call
    a = configure(dict(globals()), sys.argv[1:] if argv is None else argv, verbose=False)
    check_json_path(a["out"], "out", "report.md")
    for path in [os.path.join(r, "report.md") for r in a["runs"]] + a["evals"] + a["texts"]:
        if not os.path.isfile(path):
            die(f"{path} not found: run the stage that writes it first")
    for path in a["evals"]:
        try:
            with open(path) as f:
                json.load(f)["results"].items()
        except (ValueError, KeyError, TypeError, AttributeError):
            die(f"{named(path)} is not a file eval.py --json wrote: give those files to --evals")
    write_atomic(a["out"], final_report(a["out"], a["runs"], a["evals"], a["texts"], a["stages"]))
    print(f"report: {a['out']}")


if __name__ == "__main__":
    main()
