#!/usr/bin/env bash
# From a fresh clone to a trained, fine-tuned and evaluated model, its report, and a chat: one command.
#
#   bash speedrun.sh             # GPUs: OpenWebText, option A, the 23-hour budget, every GPU. No GPU: --demo
#   bash speedrun.sh --demo      # the same stages at demo scale on demo_data/, offline (minutes on a CPU)
#
# Flags: --demo | --option=a|b|c | --budget_hours=H (pretraining's time budget) | --out=DIR (default out-speedrun,
# out-demo with --demo) | --skip_sft | --steps=N (each training stage stops after N steps and each eval scores
# 4 examples: a quick check that everything runs) | --no_install (use the python on PATH as it is, no .venv).
#
# Stages: install -> prepare -> pretrain -> fine-tune (SFT) -> eval -> sample and chat -> report (DIR/report.md).
# Each stage skips when its output is complete and resumes when it was cut short (train.py continues from its
# checkpoint), so after a failure or a preemption rerun the same command.
set -euo pipefail
cd "$(dirname "$0")"

TORCH=2.13.0  # the build the tests run on; requirements.txt says why torch stays below 2.15
DEMO=0 OPTION=a BUDGET=23 OUT="" SKIP_SFT=0 STEPS=0 INSTALL=1
for arg in "$@"; do
    case $arg in
        --demo) DEMO=1 ;;
        --option=a|--option=b|--option=c) OPTION=${arg#--option=} ;;
        --budget_hours=*) BUDGET=${arg#--budget_hours=} ;;
        --out=*) OUT=${arg#--out=} ;;
        --skip_sft) SKIP_SFT=1 ;;
        --steps=*) STEPS=${arg#--steps=} ;;
        --no_install) INSTALL=0 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument '$arg' (bash speedrun.sh --help lists the flags)" >&2; exit 2 ;;
    esac
done
[[ $BUDGET =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "error: --budget_hours=$BUDGET is not a number of hours" >&2; exit 2; }
[[ $STEPS =~ ^[0-9]+$ ]] || { echo "error: --steps=$STEPS is not a whole number of steps" >&2; exit 2; }

NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "$NGPU" = 0 ] && [ "$DEMO" = 0 ]; then
    echo "no NVIDIA GPU found: running the demo (--demo) on the CPU"
    DEMO=1
fi
OUT=${OUT:-$([ "$DEMO" = 1 ] && echo out-demo || echo out-speedrun)}
mkdir -p "$OUT"
: > "$OUT/stages.tsv"

stage() {  # stage NAME WHAT: announce a stage; done_stage records its time
    STAGE=$1 WHAT=$2 T0=$SECONDS
    echo
    echo "== $STAGE: $WHAT"
}
done_stage() {  # done_stage [NOTE]
    local took=$((SECONDS - T0))
    local note=${1:-$WHAT}
    printf '%s\t%dm%02ds\t%s\n' "$STAGE" $((took / 60)) $((took % 60)) "$note" >> "$OUT/stages.tsv"
    echo "== $STAGE: done in $((took / 60))m$((took % 60))s"
}
finished() {  # finished OUT_DIR: train.py wrote its final report (a run cut short says "training" or "stopped")
    grep -q '^| status | finished' "$1/report.md" 2>/dev/null
}

# ---------------------------------------------------------------- install
# torch first, the build for this hardware; then requirements.txt, which keeps that torch (its pin admits it)
torch_suits() {  # the installed torch is in requirements.txt's range and runs a kernel on this GPU (or the CPU)
    "$PY" - "$1" <<'EOF' >/dev/null 2>&1
import sys
import torch
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
assert (2, 9) <= (major, minor) < (2, 15)
if sys.argv[1] != "cpu":
    (torch.ones(2, device="cuda") * 2).sum().item()  # "no kernel image is available" on a build without it
EOF
}
reachable() {  # reachable URL: answered within a few seconds (no network on many compute nodes)
    "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$1" >/dev/null 2>&1
}
install_torch() {
    local kind=cpu index=https://download.pytorch.org/whl/cpu cc=""
    if [ "$NGPU" -gt 0 ]; then
        cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | sort -u | head -1)
        kind=cuda index=""  # Turing and later: PyPI's default CUDA build
        # V100 (sm_70): CUDA 13 builds have no Volta kernels; the CUDA 12.6 build is the last that has them
        if [ "${cc%%.*}" -lt 7 ] || [ "$cc" = "7.0" ] || [ "$cc" = "7.2" ]; then
            index=https://download.pytorch.org/whl/cu126
        fi
    fi
    if "$PY" -c "import torch" 2>/dev/null && torch_suits $kind; then
        echo "torch $("$PY" -c 'import torch; print(torch.__version__)') already suits this machine: kept"
        return
    fi
    "$PY" -m pip uninstall -y -q torch 2>/dev/null || true  # pip keeps an installed torch of the same version
    if [ -n "$index" ] && reachable "$index/"; then
        echo "installing torch==$TORCH from $index"
        "$PY" -m pip install -q "torch==$TORCH" --index-url "$index"
    else
        [ -n "$index" ] && echo "warning: $index cannot be reached: installing the package index's torch==$TORCH" \
            "$([ "$kind" = cuda ] && echo '(it has no kernels for a V100)')"
        "$PY" -m pip install -q "torch==$TORCH"
    fi
}

stage install "a virtual environment (.venv), the torch build for this machine, requirements.txt"
if [ "$INSTALL" = 1 ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    PY=.venv/bin/python
    install_torch
    "$PY" -m pip install -q -r requirements.txt
else
    PY=$(command -v python || command -v python3)
    echo "--no_install: using $PY as it is"
fi
done_stage "$("$PY" -c 'import torch; print("torch", torch.__version__)'), $NGPU GPU(s)"

# ---------------------------------------------------------------- the settings of each stage
if [ "$DEMO" = 1 ]; then
    DATA=$OUT/data/demo CHAT=$OUT/data/demo_chat
    PREPARE=(prepare.py --input demo_data/tinyshakespeare.txt --out "$DATA")
    PREPARE_CHAT=(prepare_chat.py --input demo_data/chat.jsonl --out "$CHAT" --block_size 128)
    LAUNCH=("$PY")
    TRAIN=(config/demo.py)
    SFT=(config/sft_demo.py)
    TASK_FILES=(--hellaswag_file=demo_data/hellaswag_val_500.jsonl --lambada_file=demo_data/lambada_test_500.jsonl)
    CHAT_LIMIT=()
    START="ROMEO:"
else
    DATA=data/openwebtext CHAT=data/smoltalk
    PREPARE=(prepare.py --out "$DATA")
    PREPARE_CHAT=(prepare_chat.py --hub smoltalk --hub_subset all --out "$CHAT")
    LAUNCH=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$NGPU")  # every GPU, one process each
    TRAIN=("config/option_$OPTION.py" --time_budget_hours="$BUDGET")
    # the option's config first for its architecture, then the fine-tuning settings over it
    SFT=("config/option_$OPTION.py" config/sft_option_a.py)
    TASK_FILES=()
    CHAT_LIMIT=(--limit=1000)  # smoltalk's val split is ~50K conversations: a reply generated for each is hours
    START="The meaning of life is"
fi
TRAIN+=(--data_dir="$DATA" --out_dir="$OUT/base")
SFT+=(--data_dir="$CHAT" --out_dir="$OUT/sft" --init_from="$OUT/base")
LIMIT=()
if [ "$STEPS" -gt 0 ]; then
    TRAIN+=(--max_iters="$STEPS" --eval_interval="$STEPS" --eval_iters=2)
    SFT+=(--max_iters="$STEPS" --eval_interval="$STEPS" --eval_iters=2)
    LIMIT=(--limit=4) CHAT_LIMIT=(--limit=4)
fi

# ---------------------------------------------------------------- prepare
stage prepare "tokenize $([ "$DEMO" = 1 ] && echo "demo_data/'s TinyShakespeare and conversations" ||
    echo "OpenWebText and smoltalk, from the Hugging Face hub") into $DATA and $CHAT"
if [ -f "$DATA/meta.json" ]; then echo "$DATA is complete: kept"; else "$PY" "${PREPARE[@]}" --overwrite; fi
if [ "$SKIP_SFT" = 0 ]; then
    if [ -f "$CHAT/meta.json" ]; then echo "$CHAT is complete: kept"; else "$PY" "${PREPARE_CHAT[@]}" --overwrite; fi
fi
done_stage

# ---------------------------------------------------------------- pretrain, fine-tune
train() {  # train OUT_DIR ARGS...: skip a finished run, resume one cut short, else start
    local dir=$1; shift
    if finished "$dir"; then
        echo "$dir is finished: kept"
    elif [ -f "$dir/ckpt.pt" ]; then
        echo "resuming $dir from its checkpoint"
        "${LAUNCH[@]}" train.py "$@" --init_from=resume
    else
        "${LAUNCH[@]}" train.py "$@"
    fi
}

stage pretrain "$([ "$DEMO" = 1 ] && echo "config/demo.py's tiny model on TinyShakespeare, on the CPU" ||
    echo "option $OPTION on $NGPU GPU(s) for $BUDGET hours") -> $OUT/base"
# ---- hook: preflight.py (checks the machine before the long run) runs first when this checkout has it
if [ "$DEMO" = 0 ] && [ -f preflight.py ] && ! finished "$OUT/base"; then
    echo "preflight.py: checking the machine before the long run"
    "$PY" preflight.py "${TRAIN[@]}" || { echo "error: preflight.py failed: fix what it says, then rerun" >&2; exit 1; }
fi
# ---- end of hook
train "$OUT/base" "${TRAIN[@]}"
done_stage

if [ "$SKIP_SFT" = 0 ]; then
    stage sft "fine-tune $OUT/base on conversations (loss on the assistant's turns) -> $OUT/sft"
    train "$OUT/sft" "${SFT[@]}"
    done_stage
fi

# ---------------------------------------------------------------- eval, sample, chat, report
stage eval "$OUT/base on held-out text, HellaSwag and LAMBADA$([ "$SKIP_SFT" = 0 ] &&
    echo "; $OUT/sft on held-out conversations")"
EVALS=("$OUT/eval-base.json")
[ -f "$OUT/eval-base.json" ] || "$PY" eval.py --out_dir="$OUT/base" "${TASK_FILES[@]}" "${LIMIT[@]}" \
    --json="$OUT/eval-base.json"
if [ "$SKIP_SFT" = 0 ]; then
    EVALS+=("$OUT/eval-sft.json")
    [ -f "$OUT/eval-sft.json" ] || "$PY" eval.py --out_dir="$OUT/sft" --tasks=chat "${CHAT_LIMIT[@]}" \
        --json="$OUT/eval-sft.json"
fi
done_stage

stage sample "a sample from $OUT/base$([ "$SKIP_SFT" = 0 ] && echo " and a chat with $OUT/sft")"
TEXTS=("$OUT/sample.txt")
"$PY" sample.py --out_dir="$OUT/base" --start="$START" --max_new_tokens=80 > "$OUT/sample.txt.tmp"
mv "$OUT/sample.txt.tmp" "$OUT/sample.txt"
cat "$OUT/sample.txt"
if [ "$SKIP_SFT" = 0 ]; then
    TEXTS+=("$OUT/chat.txt")
    printf 'Hello! Who are you?\nWhat do you do for fun?\n' |
        "$PY" chat.py --out_dir="$OUT/sft" --temperature=0.7 --max_new_tokens=40 > "$OUT/chat.txt.tmp"
    mv "$OUT/chat.txt.tmp" "$OUT/chat.txt"
    cat "$OUT/chat.txt"
fi
done_stage

stage report "pretraining, fine-tuning and evaluation on one page"
RUNS=("$OUT/base")
[ "$SKIP_SFT" = 0 ] && RUNS+=("$OUT/sft")
done_stage  # recorded first, so the page lists this stage too
"$PY" report.py --out="$OUT/report.md" --runs "${RUNS[@]}" --eval "${EVALS[@]}" --text "${TEXTS[@]}" \
    --stages="$OUT/stages.tsv"

MODEL=$OUT/$([ "$SKIP_SFT" = 0 ] && echo sft || echo base)
ACTIVATE=""
[ "$INSTALL" = 0 ] || ACTIVATE="source .venv/bin/activate && "
echo
echo "The report: $OUT/report.md. Next:"
echo "  ${ACTIVATE}python sample.py --out_dir=$OUT/base --start=\"$START\""
echo "  ${ACTIVATE}python chat.py --out_dir=$MODEL            # add --web for the browser page"
