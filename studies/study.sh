#!/usr/bin/env bash
# The recipe study (BENCHMARKS.md, "Recipe"): every run of it, in order, each through train.py with
# studies/recipe_study.py. A run that finished is skipped, so the script can be rerun after a stop.
#   python prepare.py --input ../shared/data/wikipedia --data_dir=data/wikipedia --val_fraction 0.05
#   bash studies/study.sh  # then python compare.py --runs out-recipe/*; step 7 runs study_curve.sh
set -uo pipefail
cd "$(dirname "$0")/.."  # the repository root: the scripts and config/ are there
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

run() {  # run NAME ARGS...: train into out-recipe/NAME, log beside it
    local name=$1; shift
    [ -f "out-recipe/$name/done" ] && return
    rm -rf "out-recipe/$name"
    python train.py studies/recipe_study.py --out_dir="out-recipe/$name" "$@" \
        > "out-recipe/$name.log" 2>&1 && touch "out-recipe/$name/done"
}

# 1. AdamW's learning rate (min_lr a tenth of the peak throughout)
run adamw-3e-3 --learning_rate=3e-3 --min_lr=3e-4
run adamw-1e-3 --learning_rate=1e-3 --min_lr=1e-4
run adamw-1e-2 --learning_rate=1e-2 --min_lr=1e-3

# every finished run is also scored on real WebText (the distribution OpenWebText copies), never
# trained on
held_out() {  # held_out NAME: out-recipe/NAME/webtext.json, loss over the first 200 documents
    local name=$1
    [ -f "out-recipe/$name/done" ] && [ ! -f "out-recipe/$name/webtext.json" ] || return 0
    python eval.py --out_dir="out-recipe/$name" --tasks=val --limit=200 --dtype=bfloat16 \
        --device=cpu --files=../shared/data/webtext_docs/webtext.train.first1408.jsonl \
        --json="out-recipe/$name/webtext.json" > "out-recipe/$name.eval.log" 2>&1
}
best() {  # best PREFIX: the finished run PREFIX* with the lowest final held-out Wikipedia loss
    python - "$1" <<'PY'
import glob, json, sys
final = {}
for path in glob.glob(f"out-recipe/{sys.argv[1]}*/done"):
    run = path.split("/")[1]
    rows = [json.loads(line) for line in open(f"out-recipe/{run}/metrics.jsonl")]
    final[run] = [r["val_loss"] for r in rows if "val_loss" in r][-1]
print(min(final, key=final.get))
PY
}
for name in adamw-3e-3 adamw-1e-3 adamw-1e-2; do held_out $name; done

# 2. Muon's learning rate, for the blocks' matrices; AdamW keeps the embedding at its best peak
# from 1
adamw_lr=$(best adamw- | sed 's/adamw-//')
for mlr in 0.03 0.01 0.1 0.003; do  # 0.003 added once 0.01 beat 0.03: to bracket the best
    run muon-$mlr --optimizer=muon --muon_lr=$mlr --learning_rate=$adamw_lr \
        --min_lr=$(python -c "print($adamw_lr/10)")
    held_out muon-$mlr
done

# 3. the noise: the best of each optimizer again with another seed (other initial weights, other
# batches)
muon_lr=$(best muon- | sed 's/muon-//')
adamw_args="--learning_rate=$adamw_lr --min_lr=$(python -c "print($adamw_lr/10)")"
muon_args="--optimizer=muon --muon_lr=$muon_lr $adamw_args"
run adamw-$adamw_lr-seed2 $adamw_args --seed=2; held_out adamw-$adamw_lr-seed2
run muon-$muon_lr-seed2 $muon_args --seed=2; held_out muon-$muon_lr-seed2

# 4. the schedule: warmup-stable-decay (20% decay) against cosine, for AdamW at its best LR
run wsd-adamw-$adamw_lr $adamw_args --lr_schedule=wsd; held_out wsd-adamw-$adamw_lr

# 5. equal wall-clock: Muon's step() costs +1.8% of a step on this shape (docs/recipe.md), so in
# AdamW's time it takes 294 steps, its schedule ending there
run muon-$muon_lr-equal-time $muon_args --max_iters=294; held_out muon-$muon_lr-equal-time

# 6. the schedule for Muon too
run wsd-muon-$muon_lr $muon_args --lr_schedule=wsd; held_out wsd-muon-$muon_lr

# 7. the curve: Muon against AdamW at five data-to-model ratios, on a model small enough for the
# shared Wikipedia to reach 8.3 tokens per parameter; its own script and config, recorded in
# curve_runs.jsonl (committed, so a fresh clone skips every recorded run), then its tables, fits
# and curve.png
bash studies/study_curve.sh && python studies/study_curve.py
