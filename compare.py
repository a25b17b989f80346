"""
Runs side by side, from their metrics.jsonl alone: one PNG of every run's train and val loss against
tokens seen and against wall-clock time, and a table of what each run reached.

    python compare.py --runs out-recipe/adamw-3e-3 out-recipe/muon-0.03          # -> compare.png
    python compare.py --runs out-recipe/* --png=recipe.png --title="AdamW vs Muon"

It reads only what train.py appends as it goes, so it works on a run that is still training (a line
cut short by a kill is skipped) as well as on finished ones.
"""

import math
import os
import statistics
import sys

from matplotlib.figure import Figure  # no pyplot: no GUI backend, nothing to close

from common import die, read_metrics
from configurator import configure

# -----------------------------------------------------------------------------
runs = []  # run folders (train.py's out_dir), each holding metrics.jsonl
png = "compare.png"  # where the plot goes
title = ""  # a title for both panels
# -----------------------------------------------------------------------------


def summarise(rows: list[dict]) -> dict:
    """What a run reached: steps, tokens and time of its last record, its training throughput (the
    median of the logged tokens/s, so evals and start-up do not count) and its final and best val
    loss."""
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "val_loss" in r and math.isfinite(r["val_loss"])]
    last = max(rows, key=lambda r: (r["iter"], r.get("elapsed", 0.0)))
    return {
        "steps": last["iter"], "tokens": last["tokens"],
        "elapsed": last.get("elapsed", float("nan")),
        "tokens_per_s": (statistics.median(r["tokens_per_s"] for r in train) if train
                         else float("nan")),
        "final_val": evals[-1]["val_loss"] if evals else float("nan"),
        "final_val_iter": evals[-1]["iter"] if evals else None,
        "best_val": min(r["val_loss"] for r in evals) if evals else float("nan"),
        "final_train": train[-1]["loss"] if train else float("nan"),
    }


def table(summaries: dict[str, dict]) -> str:
    header = f"{'run':<28} {'steps':>6} {'tokens':>11} {'time':>8} {'tokens/s':>9} " \
             f"{'final val':>15} {'best val':>9} {'train':>7}"
    lines = [header, "-" * len(header)]
    for name, s in summaries.items():
        final = (f"{s['final_val']:.4f} @{s['final_val_iter']}" if s["final_val_iter"] is not None
                 else "no eval")
        lines.append(f"{name:<28} {s['steps']:>6} {s['tokens']:>11,} {s['elapsed']:>7.0f}s "
                     f"{s['tokens_per_s']:>9,.0f} {final:>15} {s['best_val']:>9.4f} "
                     f"{s['final_train']:>7.4f}")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], path: str, title: str) -> None:
    """Two panels, loss against tokens and time: each run one colour, train a line, val dots."""
    fig = Figure(figsize=(13, 5))
    axes = fig.subplots(1, 2, sharey=True)
    for i, (name, rows) in enumerate(runs.items()):
        color = f"C{i % 10}"
        for ax, x in zip(axes, ("tokens", "elapsed"), strict=True):
            for key, style, label in (("loss", "-", f"{name} train"),
                                      ("val_loss", "o-", f"{name} val")):
                points = [(r[x], r[key]) for r in rows
                          if key in r and x in r and math.isfinite(r[key])]
                ax.plot([p for p, _ in points], [v for _, v in points], style, color=color,
                        label=label, alpha=0.45 if key == "loss" else 1.0, markersize=3)
    axes[0].set(xlabel="tokens", ylabel="loss", title=title)
    axes[1].set(xlabel="wall-clock seconds", title=title)
    axes[1].legend(fontsize=7)
    # the loss at init (~10.8) would squash the part worth reading: start at each run's second eval
    later = [v for rows in runs.values() for v in [r["val_loss"] for r in rows if "val_loss" in r
                                                  and math.isfinite(r["val_loss"])][1:]]
    if later:
        axes[0].set_ylim(min(later) - 0.2, max(later) + 0.2)
    fig.savefig(f"{path}.tmp", format="png", dpi=100)
    os.replace(f"{path}.tmp", path)


def main(argv: list[str] | None = None) -> None:
    # a copy of the module's globals, so the defaults stay for the next call (the tests call main)
    args = configure(dict(globals()), sys.argv[1:] if argv is None else argv, verbose=False)
    if not args["runs"]:
        die("give the runs to compare: --runs out-recipe/* (train.py out_dirs)")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args["png"]))):
        die(f"--png={args['png']}: its folder does not exist: create it, or give a path in an "
            f"existing folder")

    found = {}
    for out_dir in args["runs"]:
        name = os.path.basename(os.path.normpath(out_dir))
        path = os.path.join(out_dir, "metrics.jsonl")
        rows = read_metrics(path)
        if not rows:
            why = ("no metrics.jsonl" if not os.path.exists(path)
                   else "an empty metrics.jsonl (no step logged yet)")
            print(f"{out_dir}: {why}: not a train.py out_dir, "
                  f"or the run has not logged yet; skipped")
            continue
        found[name if name not in found else out_dir] = rows
    if not found:
        die(f"none of {', '.join(args['runs'])} holds metrics.jsonl: give train.py out_dirs")

    print(table({name: summarise(rows) for name, rows in found.items()}))
    plot(found, args["png"], args["title"])
    print(f"plot: {args['png']}")


if __name__ == "__main__":
    main()
