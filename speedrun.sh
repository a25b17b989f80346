#!/usr/bin/env bash
# From a fresh clone to a trained, fine-tuned, evaluated model, its report and a chat: one command.
#
#   bash speedrun.sh          # GPUs: OpenWebText, option A, the 23-hour budget, every GPU
#   bash speedrun.sh --demo   # the same stages at demo scale on assets/demo/, offline, on a CPU
#
# Flags: --demo (also chosen when there is no GPU) | --option=a|b|c | --budget_hours=H
# (pretraining's time budget) | --out=DIR (default out-speedrun, or out-demo) | --skip_sft |
# --steps=N (each training stage stops after N steps and each eval scores 4 examples: a quick check
# that everything runs) | --no_install (the python on PATH as it is, no .venv, nothing installed).
#
# Stages: install, prepare, pretrain, fine-tune (sft), eval, sample and chat, report (DIR/report.md)
# Each one skips when its output is complete and resumes when it was cut short (train.py continues
# from its checkpoint): after a failure or a preemption, rerun the same command.
set -euo pipefail
cd "$(dirname "$0")"

TORCH=2.13.0  # the build the tests run on; requirements.txt says why torch stays below 2.15
DEMO=0 OPTION=a BUDGET=23 OUT="" SKIP_SFT=0 STEPS=0 INSTALL=1
fail() { echo "error: $1" >&2; exit 2; }
for arg in "$@"; do
    case $arg in
        --demo) DEMO=1 ;;
        --option=a|--option=b|--option=c) OPTION=${arg#--option=} ;;
        --budget_hours=*) BUDGET=${arg#--budget_hours=} ;;
        --out=*) OUT=${arg#--out=} ;;
        --skip_sft) SKIP_SFT=1 ;;
        --steps=*) STEPS=${arg#--steps=} ;;
        --no_install) INSTALL=0 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown argument '$arg' (bash speedrun.sh --help lists the flags)" ;;
    esac
done
[[ $BUDGET =~ ^[0-9]+([.][0-9]+)?$ ]] || fail "--budget_hours=$BUDGET is not a number of hours"
[[ $STEPS =~ ^[0-9]+$ ]] || fail "--steps=$STEPS is not a whole number of steps"

NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "$NGPU" = 0 ] && [ "$DEMO" = 0 ]; then
    echo "no NVIDIA GPU found: running the demo (--demo) on the CPU"
    DEMO=1
fi
OUT=${OUT:-$([ "$DEMO" = 1 ] && echo out-demo || echo out-speedrun)}
mkdir -p "$OUT"
: > "$OUT/stages.tsv"

stage() {  # stage NAME WHAT: announce a stage; done_stage records its time in stages.tsv
    STAGE=$1 WHAT=$2 T0=$SECONDS
    echo
    echo "== $STAGE: $WHAT"
}
done_stage() {  # done_stage [NOTE]
    local took=$((SECONDS - T0))
    printf '%s\t%dm%02ds\t%s\n' "$STAGE" $((took / 60)) $((took % 60)) "${1:-$WHAT}" \
        >> "$OUT/stages.tsv"
    echo "== $STAGE: done in $((took / 60))m$((took % 60))s"
}
finished() {  # finished OUT_DIR: train.py's report says so (cut short, it says training or stopped)
    grep -q '^| status | finished' "$1/report.md" 2>/dev/null
}

# ---------------------------------------------------------------- install
# torch first, the build for this hardware; then requirements.txt, whose pin keeps that torch
torch_suits() {  # torch_suits cpu|cuda: in requirements.txt's range, and runs a kernel on this GPU
    "$PY" - "$1" <<'EOF' >/dev/null 2>&1
import sys
import torch
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
assert (2, 9) <= (major, minor) < (2, 15)
if sys.argv[1] != "cpu":  # a build without this GPU's kernels: "no kernel image is available"
    (torch.ones(2, device="cuda") * 2).sum().item()
EOF
}
reachable() {  # reachable URL: answers within seconds (many compute nodes have no network)
    "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$1" \
        >/dev/null 2>&1
}
install_torch() {
    local kind=cpu index=https://download.pytorch.org/whl/cpu cc
    if [ "$NGPU" -gt 0 ]; then
        kind=cuda index=""  # Turing and later: PyPI's default build (CUDA 13)
        cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | sort -u | head -1)
        # V100 (sm_70): CUDA 13 builds lack Volta kernels; the CUDA 12.6 build is the last with them
        if [ "${cc%%.*}" -lt 7 ] || [ "$cc" = 7.0 ] || [ "$cc" = 7.2 ]; then
            index=https://download.pytorch.org/whl/cu126
        fi
    fi
    if torch_suits $kind; then
        echo "torch $("$PY" -c 'import torch; print(torch.__version__)') suits this machine: kept"
        return
    fi
    # pip answers "Requirement already satisfied" to a torch of the same version, whatever its build
    "$PY" -m pip uninstall -y -q torch 2>/dev/null || true
    if [ -n "$index" ] && reachable "$index/"; then
        echo "installing torch==$TORCH from $index"
        "$PY" -m pip install -q "torch==$TORCH" --index-url "$index"
    else
        if [ "$kind" = cpu ]; then
            echo "warning: $index cannot be reached: installing the package index's torch==$TORCH"
        elif [ -n "$index" ]; then
            echo "warning: $index cannot be reached: the package index's torch==$TORCH has no" \
                 "kernels for this V100; install the cu126 build by hand (README.md, Install)"
        fi
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

# ---------------------------------------------------------------- each stage's settings
if [ "$DEMO" = 1 ]; then
    DATA=$OUT/data/demo CHAT=$OUT/data/demo_chat
    PREPARE=(prepare.py --input assets/demo/tinyshakespeare.txt --data_dir="$DATA")
    PREPARE_CHAT=(prepare_chat.py --input assets/demo/chat.jsonl --data_dir="$CHAT"
                  --block_size=128)
    LAUNCH=("$PY")
    TRAIN=(config/demo.py)
    SFT=(config/sft_demo.py)
    TASK_FILES=(--hellaswag_file=assets/demo/hellaswag_val_500.jsonl
                --lambada_file=assets/demo/lambada_test_500.jsonl)
    CHAT_LIMIT=()
    START="ROMEO:"
    ABOUT_DATA="assets/demo/'s TinyShakespeare and conversations"
    ABOUT_TRAIN="config/demo.py's tiny model on TinyShakespeare, on the CPU"
else
    DATA=data/openwebtext CHAT=data/smoltalk
    PREPARE=(prepare.py --data_dir="$DATA")
    PREPARE_CHAT=(prepare_chat.py --hub=smoltalk --hub_subset=all --data_dir="$CHAT")
    LAUNCH=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$NGPU")  # every GPU
    TRAIN=("config/option_$OPTION.py" --time_budget_hours="$BUDGET")
    # the option's config for its architecture, then the fine-tuning settings over it
    SFT=("config/option_$OPTION.py" config/sft_option_a.py)
    TASK_FILES=()  # eval.py downloads the official files
    CHAT_LIMIT=(--limit=1000)  # smoltalk's val split is ~50K conversations: hours of replies
    START="The meaning of life is"
    ABOUT_DATA="OpenWebText and smoltalk, from the Hugging Face hub"
    ABOUT_TRAIN="option $OPTION on $NGPU GPU(s) for $BUDGET hours"
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
stage prepare "tokenize $ABOUT_DATA into $DATA and $CHAT"
prepare() {  # prepare FOLDER ARGS...: meta.json is written last, so a folder with it is complete
    local folder=$1; shift
    if [ -f "$folder/meta.json" ]; then echo "$folder is complete: kept"
    else "$PY" "$@" --overwrite; fi
}
prepare "$DATA" "${PREPARE[@]}"
[ "$SKIP_SFT" = 1 ] || prepare "$CHAT" "${PREPARE_CHAT[@]}"
done_stage

# ---------------------------------------------------------------- pretrain, fine-tune
train() {  # train OUT_DIR ARGS...: keep a finished run, resume one cut short, else start
    local dir=$1; shift
    if finished "$dir"; then
        echo "$dir is finished: kept"
        return
    fi
    # what the later stages made from this model is out of date
    if [ "$dir" = "$OUT/base" ]; then rm -f "$OUT"/eval-*.json "$OUT"/sample.txt "$OUT"/chat.txt
    else rm -f "$OUT/eval-sft.json" "$OUT/chat.txt"; fi
    if [ -f "$dir/ckpt.pt" ]; then
        echo "resuming $dir from its checkpoint"
        "${LAUNCH[@]}" train.py "$@" --init_from=resume
    else
        "${LAUNCH[@]}" train.py "$@"
    fi
}

stage pretrain "$ABOUT_TRAIN -> $OUT/base"
# preflight.py proves the GPUs in minutes, launched exactly as the run is, before the long run
if [ "$DEMO" = 0 ] && ! finished "$OUT/base"; then
    echo "preflight.py: checking the machine before the long run"
    "${LAUNCH[@]}" preflight.py "${TRAIN[@]}" ||
        { echo "error: preflight.py says no-go (its table above): fix that, then rerun" >&2
          exit 1; }
fi
train "$OUT/base" "${TRAIN[@]}"
done_stage

if [ "$SKIP_SFT" = 0 ]; then
    stage sft "fine-tune $OUT/base on conversations (loss on the assistant's turns) -> $OUT/sft"
    train "$OUT/sft" "${SFT[@]}"
    done_stage
fi

# ---------------------------------------------------------------- eval, sample, chat, report
SFT_TOO=$([ "$SKIP_SFT" = 1 ] || echo "; $OUT/sft on held-out conversations")
stage eval "$OUT/base on held-out text, HellaSwag and LAMBADA$SFT_TOO"
EVALS=("$OUT/eval-base.json")
[ -f "$OUT/eval-base.json" ] || "$PY" eval.py --out_dir="$OUT/base" "${TASK_FILES[@]}" \
    "${LIMIT[@]}" --json="$OUT/eval-base.json"
if [ "$SKIP_SFT" = 0 ]; then
    EVALS+=("$OUT/eval-sft.json")
    [ -f "$OUT/eval-sft.json" ] || "$PY" eval.py --out_dir="$OUT/sft" --tasks=chat \
        "${CHAT_LIMIT[@]}" --json="$OUT/eval-sft.json"
fi
done_stage

stage sample "a sample from $OUT/base$([ "$SKIP_SFT" = 1 ] || echo " and a chat with $OUT/sft")"
TEXTS=("$OUT/sample.txt")
if [ ! -f "$OUT/sample.txt" ]; then
    "$PY" sample.py --out_dir="$OUT/base" --start="$START" --max_new_tokens=80 \
        > "$OUT/sample.txt.tmp"
    mv "$OUT/sample.txt.tmp" "$OUT/sample.txt"
fi
cat "$OUT/sample.txt"
if [ "$SKIP_SFT" = 0 ]; then
    TEXTS+=("$OUT/chat.txt")
    if [ ! -f "$OUT/chat.txt" ]; then
        printf 'Hello! Who are you?\nWhat do you do for fun?\n' |
            "$PY" chat.py --out_dir="$OUT/sft" --temperature=0.7 --max_new_tokens=40 \
            > "$OUT/chat.txt.tmp"
        mv "$OUT/chat.txt.tmp" "$OUT/chat.txt"
    fi
    cat "$OUT/chat.txt"
fi
done_stage

stage report "pretraining, fine-tuning and evaluation on one page"
RUNS=("$OUT/base")
[ "$SKIP_SFT" = 1 ] || RUNS+=("$OUT/sft")
done_stage  # recorded first, so that the page lists this stage too
"$PY" report.py --out="$OUT/report.md" --runs "${RUNS[@]}" --evals "${EVALS[@]}" \
    --texts "${TEXTS[@]}" --stages="$OUT/stages.tsv"

ACTIVATE=""
[ "$INSTALL" = 0 ] || ACTIVATE="source .venv/bin/activate && "
echo
echo "The report: $OUT/report.md. Next:"
echo "  ${ACTIVATE}python sample.py --out_dir=$OUT/base --start=\"$START\""
echo "  ${ACTIVATE}python chat.py --out_dir=${RUNS[-1]}   # --web for the browser page"
