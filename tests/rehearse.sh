#!/usr/bin/env bash
# Option A's 8-GPU command, rehearsed on a CPU with 8 gloo ranks (docs/training.md, "Rehearsal"):
# each stage is train.py under torchrun with config/option_a.py then tests/rehearsal.py, and each
# ends in a check that stops the script with a message if it fails.
#   python prepare.py --input ../shared/data/openwebtext_sample --data_dir=data/owt_sample
#   bash tests/rehearse.sh
set -euo pipefail
cd "$(dirname "$0")/.."  # the repository root: the scripts and config/ are there
export OMP_NUM_THREADS=1  # 8 ranks on a few cores: one thread each, or they spin-wait on each other
out=${REHEARSAL_OUT:-out-rehearsal}
steps=12  # the step-limited runs: 12 x 8,192 tokens, about one pass over the OpenWebText sample
rm -rf "$out" && mkdir -p "$out"
launch() {  # launch NPROC OUT ARGS...: option A's command, shrunk, on NPROC ranks
    local nproc=$1 dir=$2; shift 2
    torchrun --standalone --nproc_per_node="$nproc" train.py config/option_a.py tests/rehearsal.py \
        --out_dir="$dir" "$@"
}
check() {  # check OUT PYTHON: an assertion on OUT's metrics.jsonl (rows) and checkpoint (ckpt)
    python - "$1" "$2" <<'PY'
import json, sys
import common
out, test = sys.argv[1], sys.argv[2]
rows = [json.loads(line) for line in open(f"{out}/metrics.jsonl")]
train = [r for r in rows if "loss" in r]
evals = [r for r in rows if "val_loss" in r]
ckpt = common.load_checkpoint(out)
assert eval(test), f"{out}: failed: {test}"
print(f"ok {out}: {test}")
PY
}
start=$SECONDS

echo "== 1. the time budget ends an 8-rank run (72 s) with the final eval and checkpoint inside it"
launch 8 "$out/budget" | tee "$out/budget.log"
grep -q "stopped (time budget)" "$out/budget.log"
check "$out/budget" "ckpt['elapsed'] <= 72 and evals[-1]['iter'] == ckpt['iter_num'] and \
    train[-1]['lr'] < 2e-4"

echo "== 2. $steps steps uninterrupted, 8 ranks, 4 micro-steps each"
launch 8 "$out/whole" --time_budget_hours=0 --max_iters=$steps | tee "$out/whole.log"
grep -q "4 micro-steps of 1x256 per step" "$out/whole.log"

echo "== 3. SIGTERM to rank 5 alone mid-run (a preemption): every rank stops at the same step," \
    "rank 0 saves"
launch 8 "$out/preempted" --time_budget_hours=0 --max_iters=$steps > "$out/preempted.log" 2>&1 &
launched=$!
until [ -f "$out/preempted/metrics.jsonl" ] &&
    grep -q '"iter": 5,' "$out/preempted/metrics.jsonl"; do sleep 0.2; done
killed=0
# torchrun and its workers; RANK is in a worker's env
for pid in $(pgrep -f -- "--out_dir=$out/preempted"); do
    if tr '\0' '\n' < /proc/$pid/environ 2>/dev/null | grep -qx "RANK=5"; then
        kill -TERM "$pid"; killed=1
    fi
done
[ $killed = 1 ] || { echo "rank 5's process was not found"; exit 1; }
wait $launched  # torchrun exits 0: every rank left cleanly
cat "$out/preempted.log"
grep -q "stopped (signal)" "$out/preempted.log"
check "$out/preempted" "5 <= ckpt['iter_num'] < $steps"
cp -r "$out/preempted" "$out/preempted-4"

echo "== 4. resumed on 8 ranks: the same run as the uninterrupted one, loss for loss"
launch 8 "$out/preempted" --time_budget_hours=0 --max_iters=$steps --init_from=resume |
    tee "$out/resume8.log"
python - "$out" <<'PY'
import json, sys
out = sys.argv[1]
runs = [[json.loads(line) for line in open(f"{out}/{name}/metrics.jsonl")]
        for name in ("whole", "preempted")]
keys = [[(r["iter"], r.get("loss"), r.get("val_loss"), r.get("grad_norm")) for r in rows]
        for rows in runs]
assert keys[0] == keys[1], "the resumed 8-rank run differs from the uninterrupted one"
print(f"ok: resumed == uninterrupted, {len(keys[0])} records, "
      f"final val loss {runs[0][-1]['val_loss']:.4f}")
PY

echo "== 5. resumed on 4 ranks (another world size): 8 micro-steps each, fresh data streams," \
    "to the end"
launch 4 "$out/preempted-4" --time_budget_hours=0 --max_iters=$steps --init_from=resume |
    tee "$out/resume4.log"
grep -q "8 micro-steps of 1x256 per step" "$out/resume4.log"
grep -q "data streams reseeded" "$out/resume4.log"
# other batches from step 7 on, of the same data: the same loss to within a few hundredths,
# not to the digit
check "$out/preempted-4" "ckpt['iter_num'] == $steps and ckpt['tokens_seen'] == $steps * 8192 and \
    abs(evals[-1]['val_loss'] - common.load_checkpoint('$out/whole')['val_loss']) < 0.02"
echo "rehearsal passed in $((SECONDS - start)) s"
