#!/usr/bin/env bash
# The Muon-against-AdamW curve (issue 18; BENCHMARKS.md, "Recipe"): every run, in order, each through train.py with
# config/curve_study.py and scored by eval.py. A finished run is skipped, so the script continues after a stop;
# each run's figures are in out-curve/NAME/ (metrics.jsonl, webtext.json) the moment it ends.
#   python prepare.py --input ../shared/data/wikipedia --out data/wikipedia --val_fraction 0.05
#   JOBS=2 bash study_curve.sh      # two single-thread runs at a time: equal-token comparisons, timing unused

# Ratios: 52, 208, 830, 3,320 and 13,200 steps of 1,024 tokens (53K to 13.5M tokens: 256x, 0.033 to 8.3 tokens
# per parameter). LRs are bracketed on both sides at the smallest and the largest ratio, carried between;
# two seeds at both ends.
set -uo pipefail
cd "$(dirname "$0")"
export OMP_NUM_THREADS=1
if [ -z "${TIKTOKEN_CACHE_DIR:-}" ] && [ -d ../shared/tiktoken_cache ]; then  # offline: eval.py's tokenizer
    export TIKTOKEN_CACHE_DIR="$(cd ../shared/tiktoken_cache && pwd)"
fi
mkdir -p out-curve

run() {  # run NAME STEPS ARGS...: train out-curve/NAME for STEPS steps (10% warmup, 4 evals), then score it on WebText
    local name=$1 steps=$2; shift 2
    [ -f "out-curve/$name/done" ] && return
    rm -rf "out-curve/$name"
    python train.py config/curve_study.py --out_dir="out-curve/$name" --max_iters="$steps" \
        --warmup_iters=$((steps / 10)) --eval_interval=$((steps / 4)) "$@" > "out-curve/$name.log" 2>&1 &&
    python eval.py --out_dir="out-curve/$name" --tasks=val --limit=200 --dtype=float32 --device=cpu \
        --files=../shared/data/webtext_docs/webtext.train.first1408.jsonl --json="out-curve/$name/webtext.json" \
        > "out-curve/$name.eval.log" 2>&1 && touch "out-curve/$name/done"
}
adamw() { run "adamw-$1-$2${3:+-seed$3}" "$1" --learning_rate="$2" --min_lr="$(python -c "print($2 / 10)")" \
    ${3:+--seed=$3}; }
muon() {  # Muon for the blocks' matrices; AdamW keeps the embedding at 3e-3, the first study's best
    run "muon-$1-$2${3:+-seed$3}" "$1" --optimizer=muon --muon_lr="$2" --learning_rate=3e-3 --min_lr=3e-4 \
        ${3:+--seed=$3}
}
parallel() {  # run each line of stdin as a command, JOBS (default 2) at a time
    export -f run adamw muon
    xargs -P "${JOBS:-2}" -I{} bash -c "{}"
}

# The LRs run at each ratio, in steps of 1,024 tokens. Each sweep brackets the best of the ratio before on both
# sides (the issue asks for brackets at the two ends; between them they are cheap and show how the best LR
# drifts); a list grows when its best lands on an edge. The first sweep brackets the first study's bests
# (AdamW 3e-3, Muon 0.01).
declare -A ADAMW=([52]="1e-3 3e-3 1e-2 3e-2" [208]="3e-3 1e-2 3e-2" [830]="3e-3 1e-2 3e-2")
declare -A MUON=([52]="0.003 0.01 0.03 0.1" [208]="0.01 0.03 0.1" [830]="0.01 0.03 0.1")
# the second seeds, at the two ends' best LRs
SEEDS=("adamw 52 1e-2 2")

for steps in 52 208 830 3320 13200; do
    for lr in ${ADAMW[$steps]:-}; do echo "adamw $steps $lr"; done
    for lr in ${MUON[$steps]:-}; do echo "muon $steps $lr"; done
done | parallel
printf '%s\n' "${SEEDS[@]}" | parallel
