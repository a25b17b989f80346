#!/usr/bin/env bash
# The Muon-against-AdamW curve (issue 18; BENCHMARKS.md, "Recipe"): every run, in order, each through train.py with
# config/curve_study.py and scored by eval.py. A finished run is skipped, so the script continues after a stop;
# each run's figures are in out-curve/NAME/ (metrics.jsonl, webtext.json) the moment it ends.
#   python prepare.py --input ../shared/data/wikipedia --out data/wikipedia --val_fraction 0.05
#   JOBS=2 bash study_curve.sh      # two single-thread runs at a time: equal-token comparisons, timing unused
#   STAGES="1" bash study_curve.sh  # only the stages named (default: 1 2 3)
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
    python eval.py --out_dir="out-curve/$name" --tasks=val --limit=200 --dtype=bfloat16 --device=cpu \
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

stage() { [[ " ${STAGES:-1 2 3} " == *" $1 "* ]]; }

# 1. the smallest ratio (52 steps): both LR sweeps, bracketing the first study's bests (3e-3, 0.01)
stage 1 && printf '%s\n' "adamw 52 1e-3" "adamw 52 3e-3" "adamw 52 1e-2" "adamw 52 3e-2" \
    "muon 52 0.003" "muon 52 0.01" "muon 52 0.03" "muon 52 0.1" | parallel
# 2. the largest ratio (13,200 steps, all 13.5M train tokens once): the sweeps again, then the second seeds
stage 2 && printf '%s\n' "adamw 13200 1e-3" "adamw 13200 3e-3" "adamw 13200 1e-2" \
    "muon 13200 0.003" "muon 13200 0.01" "muon 13200 0.03" | parallel
# 3. the ratios between, at the LRs the two ends favour (set ADAMW_LR and MUON_LR from stages 1 and 2; where
# the ends disagree, the nearer end's), and the second seeds at both ends
stage 3 && printf '%s\n' "adamw 208 ${ADAMW_LR:-3e-3}" "muon 208 ${MUON_LR:-0.01}" "adamw 830 ${ADAMW_LR:-3e-3}" \
    "muon 830 ${MUON_LR:-0.01}" "adamw 3320 ${ADAMW_LR:-3e-3}" "muon 3320 ${MUON_LR:-0.01}" \
    "adamw 52 ${ADAMW_LR:-3e-3} 2" "muon 52 ${MUON_LR:-0.01} 2" \
    "adamw 13200 ${ADAMW_LR:-3e-3} 2" "muon 13200 ${MUON_LR:-0.01} 2" | parallel
