#!/usr/bin/env bash
# The tests, from a fresh clone: the development requirements, Chromium for the chat page's browser test, then
# pytest, in the python on PATH (a virtual environment, or .venv after `source .venv/bin/activate`).
#   bash test.sh                  # the whole suite; pytest's own arguments pass through: bash test.sh -x -k sample
set -euo pipefail
cd "$(dirname "$0")"

# torch first, so requirements-dev.txt keeps it instead of pulling PyPI's default (multi-GB CUDA) build
if ! python -c "import torch" 2>/dev/null; then
    if python -c "import urllib.request; urllib.request.urlopen('https://download.pytorch.org/whl/cpu/', timeout=5)" \
        2>/dev/null; then
        pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    else
        pip install -q torch==2.13.0  # PyTorch's index cannot be reached: the package index's build
    fi
fi
pip install -q -r requirements-dev.txt

# Chromium for the chat page's browser test (Debian's package, driven by Playwright)
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    else
        echo "error: the browser test needs Chromium at chromium on PATH: install it (e.g. sudo apt-get install" \
             "chromium), then rerun" >&2
        exit 1
    fi
fi

python -m pytest -q "$@"
