#!/usr/bin/env bash
# The tests, from a fresh clone: the development requirements, Chromium for the chat page's browser
# test, then pytest, in the python on PATH (a virtual environment, e.g. speedrun.sh's .venv).
#   bash test.sh              # the whole suite; pytest's arguments pass through: bash test.sh -x
set -euo pipefail
cd "$(dirname "$0")"

# torch first, so requirements-dev.txt keeps it rather than pull PyPI's multi-GB CUDA build
if ! python -c "import torch" 2>/dev/null; then
    CPU_INDEX=https://download.pytorch.org/whl/cpu
    if python -c "import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=5)" $CPU_INDEX/ \
        2>/dev/null; then
        pip install -q torch==2.13.0 --index-url "$CPU_INDEX"
    else  # PyTorch's index cannot be reached: the package index's build
        pip install -q torch==2.13.0
    fi
fi
pip install -q -r requirements-dev.txt

# Chromium for the chat page's browser test (Debian's package, driven by Playwright)
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    else
        echo "error: the browser test needs chromium on PATH: install it (sudo apt-get install" \
             "chromium), then rerun" >&2
        exit 1
    fi
fi

python -m pytest -q "$@"
