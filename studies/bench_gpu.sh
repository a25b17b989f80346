#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md in one go: at most 640 s (the steps' limits added up), most of it
# torch.compile; start it with a 660-second limit (without step 5, 580 s fit a 600-second one).
#   bash studies/bench_gpu.sh [OUT_DIR]  # logs and JSON there (default: $OUT, else bench-gpu/)
# Uses data/owt_sample for real batches when it is there (python prepare.py --input
# ../shared/data/openwebtext_sample --data_dir=data/owt_sample), synthetic tokens otherwise.
# Each step has its own time limit, so one that hangs or runs out of memory does not cost the rest.
set -uo pipefail
cd "$(dirname "$0")/.."  # the repository root: the scripts and config/ are there
# Piped into tee, Python buffers its output: a step that `timeout` stops would leave an empty log.
export PYTHONUNBUFFERED=1
out=${1:-${OUT:-bench-gpu}}
mkdir -p "$out"
data=synthetic
[ -f data/owt_sample/meta.json ] && data=data/owt_sample
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
                               torch.cuda.get_device_name())" | tee "$out/env.log"

step() {  # step NAME SECONDS ARGS...: one bench.py run, its log and JSON under $out
    local name=$1 limit=$2
    shift 2
    echo "== $name: python bench.py $*" | tee "$out/$name.log"
    timeout "$limit" python bench.py "$@" --data="$data" --json="$out/$name.json" 2>&1 |
        tee -a "$out/$name.log"
}

# 1. The target: option A compiled in the GPU's best dtype (bf16 on an H200) at micro-batch 16 with
#    accumulation 4 (what each of 8 GPUs runs) and at 32; alternating rounds; the KV-cache and data
#    loader rows. Almost all of it is compiling: two training graphs, then the generation step.
step target 190 --compare=a,a+batch_size=32 --compile --grad_accum=4 --batch_size=16 \
    --warmup=3 --iters=10 --repeats=3

# 1b. A in fp16 with the GradScaler (what V100 runs): its own step, so that one more compile cannot
#     push the target past its limit.
step fp16 90 --compare=a+dtype=float16 --compile --grad_accum=4 --batch_size=16 \
    --warmup=3 --iters=10 --repeats=3 --gen_tokens=0

# 2. Options B and C, the same way.
step options 130 --compare=b,c --compile --grad_accum=4 --batch_size=16 \
    --warmup=3 --iters=10 --repeats=3 --gen_tokens=0

# 3. Each optimisation off in turn (eager, so no compile per variant), then torch.compile on.
off=vocab_multiple_of=1,ffn_multiple_of=8,ffn_multiple_of=64,loss_chunk=0,fused_adamw=False
step speedups 120 --compare=base,$off,compile=True \
    --compile=False --grad_accum=4 --batch_size=16 --warmup=3 --iters=10 --repeats=3 --gen_tokens=0

# 4. The largest micro-batch of A that fits (eager; compiled kernels need a little less memory).
step find_batch 50 --find_batch --compile=False --batch_size=16

# 5. SwiGLU's width: option A's 854 (ffn_multiple_of=2) against 856, a multiple of 8, which
#    fp16/bf16 tensor cores prefer; eager, in the GPU's best dtype and in fp16. model.py keeps
#    ffn_multiple_of=2 until this row shows 856 faster by more than its spread.
widths=ffn_hidden=854,ffn_hidden=856
step ffn 60 --compare=$widths,ffn_hidden=854+dtype=float16,ffn_hidden=856+dtype=float16 \
    --compile=False --grad_accum=1 --batch_size=16 --warmup=2 --iters=5 --repeats=2 --gen_tokens=0

echo "== done: $out"
