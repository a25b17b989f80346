#!/usr/bin/env bash
# The Muon-against-AdamW curve (BENCHMARKS.md, "Recipe"): every run, in order, each through train.py
# with studies/curve_study.py and scored by eval.py. Each run's figures go into curve_runs.jsonl
# (committed) the moment it ends, and a run recorded there is skipped, so the script continues
# after a stop, in this clone or a fresh one.
#   python prepare.py --input ../shared/data/wikipedia --data_dir=data/wikipedia --val_fraction 0.05
#   JOBS=2 bash studies/study_curve.sh  # two single-thread runs at once: equal tokens, untimed
#   LAST=3320 JOBS=3 bash studies/study_curve.sh  # stop after that ratio (no time for the next one)
#   python studies/study_curve.py  # the tables, the fit and curve.png from curve_runs.jsonl
#   THREADS=2 source studies/study_curve.sh && adamw 13200 1e-2  # one run by hand
# Sourced, the script defines its functions and never runs the study.
# Ratios: 52, 208, 830, 3,320 and 13,200 steps of 1,024 tokens (53K to 13.5M tokens: 256x, 0.033 to
# 8.3 tokens per parameter); at each, both LR sweeps, bracketed (below); two seeds at both ends.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # the repository root
export OMP_NUM_THREADS=${THREADS:-1}  # one run alone on both cores: THREADS=2 JOBS=1
mkdir -p out-curve

run() {  # run NAME STEPS ARGS...: train out-curve/NAME for STEPS steps (10% warmup, 4 evals),
         # then score it on WebText
    local name=$1 steps=$2; shift 2
    grep -q "\"name\": \"$name\"" studies/curve_runs.jsonl 2>/dev/null && return
    # a run stopped part way (a session's end: SIGTERM saves at the step, or a kill leaves the last
    # eval's save) goes on from its checkpoint; train.py resumes exactly, so the figures are those
    # of one uninterrupted run
    if [ -f "out-curve/$name/ckpt.pt" ]; then
        set -- "$@" --init_from=resume
    else
        rm -rf "out-curve/$name" "out-curve/$name.log"
    fi
    python train.py studies/curve_study.py --out_dir="out-curve/$name" --max_iters="$steps" \
        --warmup_iters=$((steps / 10)) --eval_interval=$((steps / 4)) "$@" \
        >> "out-curve/$name.log" 2>&1 &&
    python eval.py --out_dir="out-curve/$name" --tasks=val --limit=200 --dtype=float32 \
        --device=cpu --files=../shared/data/webtext_docs/webtext.train.first1408.jsonl \
        --json="out-curve/$name/webtext.json" > "out-curve/$name.eval.log" 2>&1 &&
    python studies/study_curve.py --record="out-curve/$name"
}
adamw() {  # adamw STEPS LR [SEED]
    run "adamw-$1-$2${3:+-seed$3}" "$1" --learning_rate="$2" \
        --min_lr="$(python -c "print($2 / 10)")" ${3:+--seed=$3}
}
muon() {  # muon STEPS LR [SEED]: Muon for the blocks' matrices; AdamW, at its own best LR for
          # these steps, the rest
    local rest
    rest=$(best adamw "$1" | cut -d' ' -f1)
    [ -n "$rest" ] || {
        echo "muon $*: no finished AdamW run at $1 steps to take the rest's LR from" >&2
        return 1
    }
    # the rest's LR is in the name: if AdamW's sweep moves after a Muon run (widened, or run by
    # hand beside it), that run keeps its record, the curve leaves it out, and this one runs with
    # the new LR
    run "muon-$1-$2${3:+-seed$3}-rest$rest" "$1" --optimizer=muon --muon_lr="$2" \
        --learning_rate="$rest" --min_lr="$(python -c "print($rest / 10)")" ${3:+--seed=$3}
}
best() {  # best OPT STEPS: "LR WHERE", WHERE = low, high or inside
    python studies/study_curve.py --best="$1-$2"
}
parallel() {  # run each line of stdin as a command, JOBS (default 2) at a time
    export -f run adamw muon best
    xargs -P "${JOBS:-2}" -I{} bash -c "{}"
}
# half-decade grids; a sweep is three neighbours on one, widened while the best is at its edge
ADAMW_GRID=(1e-4 3e-4 1e-3 3e-3 1e-2 3e-2 1e-1 3e-1)
MUON_GRID=(0.001 0.003 0.01 0.03 0.1 0.3 1 3)
sweep() {  # sweep OPT STEPS CENTER: CENTER and its grid neighbours, then one further out until
           # the best is inside
    local opt=$1 steps=$2 center=$3 grid i
    if [ "$opt" = adamw ]; then grid=("${ADAMW_GRID[@]}"); else grid=("${MUON_GRID[@]}"); fi
    at() { for i in "${!grid[@]}"; do [ "${grid[$i]}" = "$1" ] && echo "$i"; done; }
    i=$(at "$center")
    [ -n "$i" ] || {
        echo "sweep $opt $steps: centre '$center' is not on the grid" \
             "(a sweep before it failed?)" >&2
        exit 1
    }
    printf "$opt $steps %s\n" "${grid[@]:$((i > 0 ? i - 1 : 0)):$((i > 0 ? 3 : 2))}" | parallel
    while read -r lr where < <(best "$opt" "$steps"); [ "$where" != inside ]; do
        i=$(at "$lr")
        if [ "$where" = low ]; then i=$((i - 1)); else i=$((i + 1)); fi
        # off the grid: left at the edge, and marked so
        [ "$i" -lt 0 ] || [ "$i" -ge "${#grid[@]}" ] && break
        echo "$opt $steps ${grid[$i]}" | parallel
    done
}

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0  # sourced: the functions only

# Ratios in steps of 1,024 tokens. Each LR sweep is centred on the best of the ratio before (the
# first on the first study's AdamW best, 1e-2 here after its own sweep, and Muon's 0.1), so every
# ratio is bracketed on both sides (asked at the two ends; between them it is cheap and shows how
# the best LR drifts). Muon's AdamW part (embedding, norms) runs at AdamW's best LR for the same
# steps: in a model that is 98.5% embedding, anything else compares embedding LRs, not optimizers.
# Second seeds at both ends, at each end's best LRs.
adamw_center=1e-2 muon_center=0.1
for steps in 52 208 830 3320 13200; do
    sweep adamw "$steps" "$adamw_center"
    adamw_center=$(best adamw "$steps" | cut -d' ' -f1)
    sweep muon "$steps" "$muon_center"
    muon_center=$(best muon "$steps" | cut -d' ' -f1)
    if [ "$steps" = 52 ] || [ "$steps" = 13200 ]; then
        printf '%s\n' "adamw $steps $adamw_center 2" "muon $steps $muon_center 2" | parallel
    fi
    if [ "$steps" = "${LAST:-}" ]; then break; fi
done
