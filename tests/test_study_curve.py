"""Tests for study_curve.py on hand-made runs whose answer is known: Muon's token efficiency read
off AdamW's own curve, the edge marks, the fit, and the --best answers study_curve.sh's sweeps are
steered by."""

import contextlib
import json
import math
import runpy
import statistics
import sys
from pathlib import Path

import pytest

from common import load_checkpoint
from launch import ROOT

# Muon reaches the loss AdamW reaches with EFFICIENCY times its tokens; AdamW's best loss falls 0.5
# nats per e-fold of tokens, so Muon's best is 0.5 * log(EFFICIENCY) below AdamW's at the same steps
EFFICIENCY = {52: 1.5, 208: 1.3, 830: 1.1}
LRS = {"adamw": ("3e-3", "1e-2", "3e-2"), "muon": ("0.03", "0.1", "0.3")}


def adamw_loss(tokens: float) -> float:
    return 9.0 - 0.5 * math.log(tokens / (52 * 1024))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """curve_runs.jsonl with 19 runs: three LRs of each optimizer at three ratios; the middle LR is
    the best, except Muon's at 830 steps, whose best is its highest LR (an edge). Muon's rest runs
    at AdamW's best, 1e-2, but for one more run at 52 steps, better than all, whose rest ran at
    3e-3: it must be listed and left out."""
    lines = []
    for steps, efficiency in EFFICIENCY.items():
        for optimizer, lrs in LRS.items():
            for k, lr in enumerate(lrs):
                best = adamw_loss(steps * 1024 * (efficiency if optimizer == "muon" else 1))
                edge = optimizer == "muon" and steps == 830
                loss = best + (0.1 * (2 - k) if edge else 0.1 * abs(k - 1))
                rest = dict(rest_lr=0.01) if optimizer == "muon" else {}
                lines.append(json.dumps(dict(
                    name=f"{optimizer}-{steps}-{lr}" + ("-rest1e-2" if rest else ""),
                    optimizer=optimizer, steps=steps, lr=lr, **rest, seed=1337,
                    tokens=steps * 1024, params=1000, n_embd=4, wiki=loss, webtext=loss + 0.3)))
    lines.append(json.dumps(dict(name="muon-52-0.1-rest3e-3", optimizer="muon", steps=52, lr="0.1",
                                 rest_lr=0.003, seed=1337, tokens=52 * 1024, params=1000, n_embd=4,
                                 wiki=5.0, webtext=5.3)))
    log = tmp_path_factory.mktemp("curve") / "curve_runs.jsonl"
    log.write_text("\n".join(lines) + "\n")
    return log


def study(capsys, monkeypatch, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["studies/study_curve.py", *args])
    with (pytest.raises(SystemExit) if any(a.startswith("--best") for a in args)
          else contextlib.nullcontext()):
        runpy.run_path(str(ROOT / "studies" / "study_curve.py"), run_name="__main__")
    return capsys.readouterr().out


def test_efficiency_gain_edges_and_fit_from_known_runs(runs, tmp_path, capsys, monkeypatch):
    out = study(capsys, monkeypatch, f"--log={runs}", f"--png={tmp_path / 'curve.png'}")
    rows = {int(line.split("|")[1].replace(",", "")): [c.strip() for c in line.split("|")[1:-1]]
            for line in out.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().replace(",", "").isdigit()}
    assert sorted(rows) == [52, 208, 830]
    for steps, efficiency in EFFICIENCY.items():
        row = rows[steps]
        assert row[2] == "1e-2" and row[3] == ("0.3 (edge)" if steps == 830 else "0.1")
        # the gain, in nats
        assert float(row[6]) == pytest.approx(0.5 * math.log(efficiency), abs=1e-4)
        # read off AdamW's curve between its points; past its largest run, extrapolated and marked
        assert row[7] == f"{efficiency:.2f}x" + (" (extrapolated)" if steps == 830 else "")
        # WebText: the same + 0.3
        assert float(row[8]) == pytest.approx(0.5 * math.log(efficiency), abs=1e-4)
    # every recorded run in the table, the one left out marked so
    assert out.count("| muon-") == 10
    assert [line for line in out.splitlines() if "left out" in line] == [
        next(line for line in out.splitlines() if line.startswith("| muon-52-0.1-rest3e-3 |"))]
    fit = next(line for line in out.splitlines() if line.startswith("fit over 3 ratios"))
    assert "at option A's 2,503 tokens/param" in fit
    # the gain, 0.5 log(efficiency), falls linearly in log ratio here only approximately: fitted
    # over the three points it is negative per decade, and crosses zero beyond 830 steps' ratio,
    # where the efficiency reaches 1
    gain_fit = next(line for line in out.splitlines()
                    if line.startswith("gain fit over 3 ratios"))
    per_decade = float(gain_fit.split("nats per decade")[0].split()[-1])
    expected = statistics.linear_regression([math.log10(s * 1024 / 1000) for s in EFFICIENCY],
                                            [0.5 * math.log(e) for e in EFFICIENCY.values()])
    assert per_decade == pytest.approx(expected.slope, abs=1e-4) and expected.slope < 0
    assert float(gain_fit.split("zero at ")[1].split()[0].replace(",", "")) > 830 * 1024 / 1000
    # at option A's ratio, the line and its standard error there (one degree of freedom left by
    # three points)
    x = [math.log10(s * 1024 / 1000) for s in EFFICIENCY]
    x0 = math.log10(89.5e9 / 35_763_840)
    residual = [0.5 * math.log(e) - (expected.slope * xi + expected.intercept)
                for xi, e in zip(x, EFFICIENCY.values(), strict=True)]
    se = math.sqrt(sum(r * r for r in residual) / (3 - 2)) * math.sqrt(
        1 / 3 + (x0 - statistics.mean(x)) ** 2 / sum((xi - statistics.mean(x)) ** 2 for xi in x))
    at_a = expected.slope * x0 + expected.intercept
    printed = (gain_fit.split("at option A's 2,503: ")[1].replace(" nats, 1-sigma", "")
               .replace(" to", "").split()[:3])
    assert ([float(v) for v in printed] == pytest.approx([at_a, at_a - se, at_a + se], abs=1e-3)
            and se > 1e-3)
    assert (tmp_path / "curve.png").stat().st_size > 10_000


def test_gain_of_the_seeds_means_where_both_bests_have_a_second_seed(runs, tmp_path, capsys,
                                                                     monkeypatch):
    """A second seed of each best at 52 steps (AdamW's 0.04 lower, Muon's 0.02 higher) moves the
    two-seed gain by -0.03 from the first seed's; 208 steps, with one seed each, gets no such
    line."""
    lines = runs.read_text().splitlines()
    first = {json.loads(t)["name"]: json.loads(t) for t in lines}
    for name, second, delta in (("adamw-52-1e-2", "adamw-52-1e-2-seed2", -0.04),
                                ("muon-52-0.1-rest1e-2", "muon-52-0.1-seed2-rest1e-2", +0.02)):
        lines.append(json.dumps(dict(first[name], name=second, seed=2,
                                     wiki=first[name]["wiki"] + delta,
                                     webtext=first[name]["webtext"] + 2 * delta)))
    log = tmp_path / "curve_runs.jsonl"
    log.write_text("\n".join(lines) + "\n")
    out = study(capsys, monkeypatch, f"--log={log}", f"--png={tmp_path / 'curve.png'}")
    means = [line for line in out.splitlines() if "mean of" in line]
    assert len(means) == 1 and means[0].startswith("52 steps, mean of 2 AdamW and 2 Muon seeds")
    gain = float(means[0].split("Muon's gain ")[1].split(";")[0])
    webtext = float(means[0].split("WebText gain ")[1].split()[0])
    assert gain == pytest.approx(0.5 * math.log(EFFICIENCY[52]) - 0.03, abs=1e-4)
    assert webtext == pytest.approx(0.5 * math.log(EFFICIENCY[52]) - 0.06, abs=1e-4)


def test_best_says_where_the_best_lr_lies(runs, capsys, monkeypatch):
    assert study(capsys, monkeypatch, f"--log={runs}", "--best=adamw-52") == "1e-2 inside\n"
    assert study(capsys, monkeypatch, f"--log={runs}", "--best=muon-830") == "0.3 high\n"
    # not the rest-3e-3 run
    assert study(capsys, monkeypatch, f"--log={runs}", "--best=muon-52") == "0.1 inside\n"
    # nothing recorded
    assert study(capsys, monkeypatch, f"--log={runs}", "--best=muon-13200") == ""


def test_record_adds_a_finished_run_once_and_refuses_an_unfinished_one(runs, smoke_ckpt, tmp_path,
                                                                        capsys, monkeypatch):
    """study_curve.sh's --record: a run's final eval and WebText score become one line of the log,
    which a rerun of the same run replaces rather than repeats; a run stopped before its last step
    is refused."""
    log = tmp_path / "curve_runs.jsonl"
    log.write_text(runs.read_text())
    folder = tmp_path / "out-curve" / "adamw-3320-3e-2"
    folder.mkdir(parents=True)
    (folder / "ckpt.pt").symlink_to(smoke_ckpt / "ckpt.pt")
    (folder / "webtext.json").write_text(json.dumps({"params": 1000,
                                                     "results": {"val": {"loss": 6.5}}}))
    evals = [{"iter": 0, "val_loss": 10.9, "tokens": 0},
             {"iter": 1660, "val_loss": 7.0, "tokens": 1660 * 1024}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    with pytest.raises(SystemExit, match="no eval at step 3320"):
        study(capsys, monkeypatch, f"--log={log}", f"--record={folder}")
    assert log.read_text() == runs.read_text()  # the log untouched
    for loss in (6.2, 6.1):  # recorded, then recorded again (a rerun): one line, the last figures
        (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [
            *evals, {"iter": 3320, "val_loss": loss, "tokens": 3320 * 1024}]))
        with pytest.raises(SystemExit) as stop:
            study(capsys, monkeypatch, f"--log={log}", f"--record={folder}")
        assert (stop.value.code == 0
                and f"adamw-3320-3e-2 wiki {loss:.4f}" in capsys.readouterr().out)
    recorded = [json.loads(t) for t in log.read_text().splitlines() if "3320" in t]
    assert len(recorded) == 1 and recorded[0]["wiki"] == 6.1 and recorded[0]["webtext"] == 6.5
    assert recorded[0]["n_embd"] == load_checkpoint(str(smoke_ckpt))["model_args"]["n_embd"]
    # the sweeps see it: the only LR tried at 3,320 steps is the lowest tried
    assert study(capsys, monkeypatch, f"--log={log}", "--best=adamw-3320") == "3e-2 low\n"
    # a Muon run records the AdamW LR its rest trained at, from the checkpoint, and refuses a name
    # that says other
    trained = load_checkpoint(str(smoke_ckpt))["config"]["learning_rate"]
    wrong, right = (folder.with_name(n)
                    for n in (f"muon-3320-0.01-rest{trained * 7:g}", "muon-3320-0.01"))
    for muon in (wrong, right):
        muon.mkdir()
        for f in ("ckpt.pt", "webtext.json", "metrics.jsonl"):
            (muon / f).symlink_to(folder / f)
    with pytest.raises(SystemExit, match=f"trained the rest at {trained:g}"):
        study(capsys, monkeypatch, f"--log={log}", f"--record={wrong}")
    with pytest.raises(SystemExit) as stop:
        study(capsys, monkeypatch, f"--log={log}", f"--record={right}")
    assert stop.value.code == 0
    recorded = [json.loads(t) for t in log.read_text().splitlines()
                if t.startswith('{"name": "muon-3320')]
    assert [(r["name"], r["rest_lr"]) for r in recorded] == [("muon-3320-0.01", trained)]
