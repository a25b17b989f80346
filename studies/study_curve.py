"""
The Muon-against-AdamW curve (BENCHMARKS.md, "Recipe"): every run as a table row, each optimizer's
best LR at each ratio, Muon's gain in nats, its token efficiency read off AdamW's own curve, a fit
of that efficiency against tokens per parameter, and the fit's prediction at option A's 23-hour
ratio. One PNG.

The runs' figures live in curve_runs.jsonl, which is committed: study_curve.sh adds a run's line
the moment the run ends (--record), so the curve outlives out-curve/, whose checkpoints a fresh
clone does not have.

    bash studies/study_curve.sh && python studies/study_curve.py  # -> curve.png, markdown on stdout
    python studies/study_curve.py --record=out-curve/adamw-52-1e-2  # add or replace this run's line

Token efficiency at a ratio: Muon reached loss L with T tokens; AdamW's curve (its best LR at each
ratio, each a full run with its schedule ended there, never an intermediate checkpoint: Wen et al.
2025 show rankings flip mid-schedule) reaches L at T' tokens, read by interpolating AdamW's loss
linearly in log tokens. T'/T > 1 means Muon needs fewer tokens. Beyond AdamW's largest run T' is
extrapolated from its last segment, and marked so.
"""

import fcntl
import json
import math
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's modules
from common import die, load_checkpoint, read_metrics  # noqa: E402
from configurator import configure  # noqa: E402

VOCAB = 50257  # GPT-2's: parameters are counted at the real vocabulary, the embedding once (tied)
# option A's 23-hour run, BENCHMARKS.md's projection at 30% MFU: 89.5B tokens over 35,763,840
# parameters, 19,679,616 of them outside the embedding
OPTION_A_TOKENS, OPTION_A_PARAMS, OPTION_A_NON_EMBEDDING = (
    89.5e9, 35_763_840, 35_763_840 - VOCAB * 320)
NAME = re.compile(r"(adamw|muon)-(\d+)-([0-9.e-]+?)(?:-seed(\d+))?(?:-rest([0-9.e-]+))?$")

# -----------------------------------------------------------------------------
log = "studies/curve_runs.jsonl"  # the runs' figures, one JSON line a run
png = "studies/curve.png"  # where to draw the curve
record = ""  # only add the finished run in this folder (out-curve/NAME) to log, replacing its line
best = ""  # only print OPT-STEPS's best LR (like adamw-830), first seeds: low, high or inside
# -----------------------------------------------------------------------------
args = SimpleNamespace(**configure(globals(), sys.argv[1:], verbose=False))
log = Path(args.log)

if args.record:  # ---- one finished run's figures, from its folder into the log
    folder = Path(args.record)
    match = NAME.match(folder.name)
    if not match:
        die(f"--record: '{folder.name}' is not a study run's name "
            "(like adamw-830-3e-2 or muon-52-0.03-seed2-rest1e-2)")
    for needed in ("metrics.jsonl", "webtext.json", "ckpt.pt"):
        if not (folder / needed).exists():
            die(f"--record: {folder / needed} is missing: the run has not finished "
                "(study_curve.sh trains, then scores it with eval.py)")
    optimizer, steps, lr, seed, rest = match.groups()
    checkpoint = load_checkpoint(str(folder))
    if optimizer == "muon":  # the AdamW LR of the rest (embedding, norms) as trained, not as named
        rest_lr = checkpoint["config"]["learning_rate"]
        if rest is not None and not math.isclose(float(rest), rest_lr):
            die(f"--record: {folder.name} says rest LR {rest}, but its checkpoint trained the rest "
                f"at {rest_lr:g}")
    evals = [r for r in read_metrics(str(folder / "metrics.jsonl")) if "val_loss" in r]
    if not evals or evals[-1].get("iter") != int(steps):
        die(f"--record: {folder}/metrics.jsonl has no eval at step {steps}: the run stopped early; "
            "resume it")
    webtext = json.loads((folder / "webtext.json").read_text())
    line = dict(name=folder.name, optimizer=optimizer, steps=int(steps), lr=lr,
                **(dict(rest_lr=rest_lr) if optimizer == "muon" else {}), seed=int(seed or 1337),
                tokens=evals[-1]["tokens"], params=webtext["params"],
                n_embd=checkpoint["model_args"]["n_embd"], wiki=evals[-1]["val_loss"],
                webtext=webtext["results"]["val"]["loss"], date=time.strftime("%Y-%m-%d"))
    # study_curve.sh's parallel runs end together: one --record at a time, or one could drop the
    # other's line
    with open(log.with_name(log.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = log.read_text().splitlines() if log.exists() else []
        kept = [t for t in old if json.loads(t)["name"] != line["name"]]
        # written whole, then renamed: a stop mid-write loses nothing
        tmp = log.with_name(log.name + ".tmp")
        tmp.write_text("".join(t + "\n" for t in [*kept, json.dumps(line)]))
        tmp.rename(log)
    print(f"{log}: {line['name']} wiki {line['wiki']:.4f}, WebText {line['webtext']:.4f}")
    raise SystemExit(0)

# ---- every recorded run: its final held-out losses
if not log.exists():
    die(f"no runs recorded in '{log}': run `bash studies/study_curve.sh` first, or pass --log=FILE")
runs = []
for n, text in enumerate(log.read_text().splitlines(), 1):
    try:
        r = json.loads(text)
        runs.append(dict(r, lr_text=r["lr"], lr=float(r["lr"]),
                         rest_lr=float(r["rest_lr"]) if r["optimizer"] == "muon" else None))
    except (ValueError, KeyError, TypeError) as e:
        die(f"{log}, line {n}: not a run's record ({e}); mend or delete the line")


def sweep(optimizer: str, steps: int) -> list[dict]:
    """The first-seed runs of `optimizer` at `steps` that count, by LR. Muon's count only with the
    rest (embedding, norms: 98.5% of this model) at AdamW's best LR for the same steps; a Muon run
    made before AdamW's sweep there moved would compare embedding LRs, not optimizers. It stays in
    the table, marked."""
    mine = sorted((r for r in runs
                   if (r["optimizer"], r["steps"], r["seed"]) == (optimizer, steps, 1337)),
                  key=lambda r: r["lr"])
    if optimizer == "muon":
        adamw = sweep("adamw", steps)
        rest = min(adamw, key=lambda r: r["wiki"])["lr"] if adamw else None
        mine = [r for r in mine if rest is not None and math.isclose(r["rest_lr"], rest)]
    return mine


if args.best:
    optimizer, _, steps = args.best.partition("-")
    if optimizer not in ("adamw", "muon") or not steps.isdigit():
        die(f"--best: '{args.best}' is not OPT-STEPS (like adamw-830 or muon-13200)")
    tried = sweep(optimizer, int(steps))
    if tried:  # nothing printed: nothing finished yet
        b = min(tried, key=lambda r: r["wiki"])
        print(b["lr_text"], "low" if b is tried[0] else "high" if b is tried[-1] else "inside")
    raise SystemExit(0)
if not runs:
    die(f"no runs recorded in '{log}': run `bash studies/study_curve.sh`")


def ratio(run: dict) -> tuple[float, float]:
    """(tokens per parameter, tokens per non-embedding parameter)."""
    non_embedding = run["params"] - VOCAB * run["n_embd"]
    return run["tokens"] / run["params"], run["tokens"] / non_embedding


# ---- the table of every run, losers included
counted = {r["name"] for o in ("adamw", "muon") for steps in {r["steps"] for r in runs}
           for r in sweep(o, steps)}
print("| run | optimizer | peak LR | rest's AdamW LR | seed | steps | tokens | "
      "tokens/param (non-emb.) | wiki val loss | WebText loss |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in sorted(runs, key=lambda r: (r["steps"], r["optimizer"], r["lr"], r["seed"],
                                     r["rest_lr"] or 0)):
    per_param, per_non_embedding = ratio(r)
    rest = "" if r["optimizer"] == "adamw" else f"{r['rest_lr']:g}" + (
        "" if r["name"] in counted or r["seed"] != 1337 else " (not AdamW's best: left out)")
    print(f"| {r['name']} | {'AdamW' if r['optimizer'] == 'adamw' else 'Muon'} | {r['lr_text']} "
          f"| {rest} | {r['seed']} | {r['steps']:,} | {r['tokens']:,} "
          f"| {per_param:.3g} ({per_non_embedding:.3g}) | {r['wiki']:.4f} | {r['webtext']:.4f} |")

# ---- the best LR of each optimizer at each ratio (first seed), and whether the sweep brackets it
best = {}
for optimizer in ("adamw", "muon"):
    for steps in sorted({r["steps"] for r in runs}):
        tried = sweep(optimizer, steps)
        if tried:
            i = min(range(len(tried)), key=lambda i: tried[i]["wiki"])
            best[optimizer, steps] = dict(tried[i], bracketed=0 < i < len(tried) - 1)
both = sorted(steps for (optimizer, steps) in best
              if optimizer == "muon" and ("adamw", steps) in best)
adamw_curve = sorted((b["tokens"], b["wiki"]) for (o, _), b in best.items() if o == "adamw")


def adamw_tokens_for(loss: float) -> tuple[float, bool]:
    """Tokens AdamW's curve needs to reach `loss` (log-linear between its points), and whether
    extrapolated."""
    logs = [(math.log(t), v) for t, v in adamw_curve]
    for (t0, v0), (t1, v1) in zip(logs, logs[1:], strict=False):
        if min(v0, v1) <= loss <= max(v0, v1) and v0 != v1:
            return math.exp(t0 + (loss - v0) * (t1 - t0) / (v1 - v0)), False
    # past an end: that end's segment
    (t0, v0), (t1, v1) = logs[-2:] if loss < logs[-1][1] else logs[:2]
    return math.exp(t0 + (loss - v0) * (t1 - t0) / (v1 - v0)), True


print("\n| steps | tokens/param (non-emb.) | AdamW best LR | Muon best LR | AdamW wiki | Muon wiki "
      "| Muon's gain (nats) | token efficiency | WebText gain |")
print("|---|---|---|---|---|---|---|---|---|")
points = []  # (tokens per parameter, tokens per non-embedding parameter, efficiency) for the fit
gains = []  # (tokens per parameter, Muon's gain in nats) for the second fit
for steps in both:
    a, m = best["adamw", steps], best["muon", steps]
    per_param, per_non_embedding = ratio(a)
    gain = a["wiki"] - m["wiki"]
    gains.append((per_param, gain))
    if len(adamw_curve) >= 2:
        matched, extrapolated = adamw_tokens_for(m["wiki"])
        efficiency = matched / m["tokens"]
        efficiency_text = f"{efficiency:.2f}x" + (" (extrapolated)" if extrapolated else "")
        points.append((per_param, per_non_embedding, efficiency))
    else:
        efficiency_text = "(needs two AdamW ratios)"
    mark = lambda r: r["lr_text"] + ("" if r["bracketed"] else " (edge)")  # noqa: E731
    print(f"| {steps:,} | {per_param:.3g} ({per_non_embedding:.3g}) | {mark(a)} | {mark(m)} "
          f"| {a['wiki']:.4f} | {m['wiki']:.4f} | {gain:+.4f} | {efficiency_text} "
          f"| {a['webtext'] - m['webtext']:+.4f} |")

# ---- the seed spread: the second seed against the first at the same LR
print()
for r in runs:
    if r["seed"] != 1337:
        first = [f for f in runs
                 if (f["optimizer"], f["steps"], f["lr"], f["rest_lr"], f["seed"])
                 == (r["optimizer"], r["steps"], r["lr"], r["rest_lr"], 1337)]
        if first:
            print(f"seed {r['seed']} against 1337, {r['optimizer']} at {r['steps']:,} steps, "
                  f"LR {r['lr_text']}: wiki {r['wiki'] - first[0]['wiki']:+.4f}, "
                  f"WebText {r['webtext'] - first[0]['webtext']:+.4f} nats")
# where both bests ran with every seed, the gain of the seeds' means: one seed's luck is the noise a
# gain must beat
# (tokens per parameter, Muon's gain of the seeds' means), drawn beside the first-seed gains
seed_gains = []
for steps in both:
    seeds = {o: [r for r in runs if (r["optimizer"], r["steps"], r["lr"], r["rest_lr"]) ==
                 (o, steps, best[o, steps]["lr"], best[o, steps]["rest_lr"])]
             for o in ("adamw", "muon")}
    if min(len(seeds["adamw"]), len(seeds["muon"])) >= 2:
        mean = {(o, k): float(np.mean([r[k] for r in seeds[o]]))
                for o in seeds for k in ("wiki", "webtext")}
        seed_gains.append((ratio(best["adamw", steps])[0],
                           mean["adamw", "wiki"] - mean["muon", "wiki"]))
        print(f"{steps:,} steps, mean of {len(seeds['adamw'])} AdamW and {len(seeds['muon'])} Muon "
              f"seeds: wiki {mean['adamw', 'wiki']:.4f} against {mean['muon', 'wiki']:.4f}, "
              f"Muon's gain {mean['adamw', 'wiki'] - mean['muon', 'wiki']:+.4f}; WebText gain "
              f"{mean['adamw', 'webtext'] - mean['muon', 'webtext']:+.4f} nats")

# ---- the fits, each a straight line through the ratios and its value at option A's ratio with the
# standard error of the fitted line there (not of a new point): how well the trend itself is pinned
# down, 2.5 decades out
X0 = math.log10(OPTION_A_TOKENS / OPTION_A_PARAMS)


def line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Least squares y = slope * x + intercept: (slope, intercept, the line at X0, its 1-sigma
    standard error)."""
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    s = math.sqrt((residual ** 2).sum() / (len(x) - 2)) if len(x) > 2 else float("nan")
    se = s * math.sqrt(1 / len(x) + (X0 - x.mean()) ** 2 / ((x - x.mean()) ** 2).sum())
    return slope, intercept, slope * X0 + intercept, se


# log efficiency linear in log tokens-per-parameter
fit = None
if len(points) >= 3:
    x = np.log10([p[0] for p in points])
    slope, intercept, at_a, se = line_fit(x, np.log10([p[2] for p in points]))
    fit = slope, intercept
    print(f"\nfit over {len(points)} ratios: efficiency = {10 ** intercept:.3g} x "
          f"(tokens/param)^{slope:+.3f}; at option A's {10 ** X0:,.0f} tokens/param "
          f"({OPTION_A_TOKENS / OPTION_A_NON_EMBEDDING:,.0f} per non-embedding parameter): "
          f"{10 ** at_a:.2f}x, 1-sigma {10 ** (at_a - se):.2f}x to "
          f"{10 ** (at_a + se):.2f}x (an extrapolation of {X0 - x.max():.1f} decades)")
else:
    print(f"\nno fit yet: {len(points)} ratios with both optimizers and an AdamW curve (3 needed)")
# the gain in nats, linear in log tokens-per-parameter. Near a small model's loss floor AdamW's
# curve flattens, so a small gain in nats reads as a large, ill-determined token ratio; the gain
# itself does not depend on that slope
gain_fit = None
if len(gains) >= 3:
    x = np.log10([g[0] for g in gains])
    slope, intercept, at_a, se = line_fit(x, np.array([g[1] for g in gains]))
    gain_fit = slope, intercept
    zero = f"zero at {10 ** (-intercept / slope):,.3g} tokens/param" if slope < 0 else "never zero"
    print(f"gain fit over {len(gains)} ratios: {slope:+.4f} nats per decade of tokens/param "
          f"({intercept:+.4f} at 1); {zero}; at option A's {10 ** X0:,.0f}: {at_a:+.3f} nats, "
          f"1-sigma {at_a - se:+.3f} to {at_a + se:+.3f} (a trend, {X0 - x.max():.1f} decades out)")

# ---- the plot: loss against tokens for every run and each best; efficiency against the ratio,
# with the fit
fig = Figure(figsize=(17, 4.8))
left, middle, right = fig.subplots(1, 3)
for optimizer, color in (("adamw", "tab:blue"), ("muon", "tab:orange")):
    mine = [r for r in runs if r["optimizer"] == optimizer]
    left.scatter([r["tokens"] for r in mine], [r["wiki"] for r in mine], s=12, alpha=0.35,
                 color=color)
    curve = sorted((b["tokens"], b["wiki"]) for (o, _), b in best.items() if o == optimizer)
    left.plot([t for t, _ in curve], [v for _, v in curve], "o-", color=color,
              label=f"{'AdamW' if optimizer == 'adamw' else 'Muon'}, best LR")
left.set(xscale="log", xlabel="tokens (each point a full run)",
         ylabel="held-out Wikipedia loss (nats)",
         title="every run (dots) and the best LR at each ratio")
left.legend()
if points:
    right.plot([p[0] for p in points], [p[2] for p in points], "o", color="tab:orange",
               label="this curve")
    if fit:
        xs = np.logspace(math.log10(min(p[0] for p in points)), X0, 50)
        right.plot(xs, 10 ** (fit[0] * np.log10(xs) + fit[1]), "--", color="tab:orange",
                   label="fit, extended")
    right.axvline(10 ** X0, color="gray", lw=1, label="option A, 23 h")
    # the literature's figures, where their tokens per parameter are known: Wen et al. 2025 at 1-8x
    # Chinchilla (20-160), 1.4x at 0.1B and 1.1x at 1.2B; modded-nanogpt's Muon record, 5B -> 3.7B
    # tokens at 124M (30)
    right.plot([20, 160], [1.4, 1.4], "-", color="tab:green", lw=3, alpha=0.5,
               label="Wen et al., 0.1B")
    right.plot([20, 160], [1.1, 1.1], "-", color="tab:red", lw=3, alpha=0.5,
               label="Wen et al., 1.2B")
    right.plot([3.7e9 / 124e6], [5 / 3.7], "s", color="tab:purple", label="modded-nanogpt, 124M")
    right.axhline(1.0, color="black", lw=0.5)
    right.set(xscale="log", yscale="log", xlabel="tokens per parameter",
              ylabel="token efficiency (AdamW / Muon)", title="Muon's token efficiency over AdamW")
    right.legend(fontsize=8)
if gains:
    middle.plot([g[0] for g in gains], [g[1] for g in gains], "o", color="tab:orange",
                label="held-out Wikipedia")
    if seed_gains:
        middle.plot([g[0] for g in seed_gains], [g[1] for g in seed_gains], "D", mfc="none",
                    color="tab:orange", label="the same, mean of two seeds")
    if gain_fit is not None:
        xs = np.logspace(math.log10(min(g[0] for g in gains)), X0, 50)
        middle.plot(xs, np.polyval(gain_fit, np.log10(xs)), "--", color="tab:orange",
                    label="linear in log, extended")
    middle.axvline(10 ** X0, color="gray", lw=1, label="option A, 23 h")
    middle.axhline(0.0, color="black", lw=0.5)
    middle.set(xscale="log", xlabel="tokens per parameter", ylabel="AdamW loss - Muon loss (nats)",
               title="Muon's gain at each optimizer's best LR")
    middle.legend(fontsize=8)
fig.tight_layout()
tmp = args.png + ".tmp"
fig.savefig(tmp, format="png", dpi=110)
Path(tmp).rename(args.png)
print(f"\nwrote {args.png}")
