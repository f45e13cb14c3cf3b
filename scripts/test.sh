#!/usr/bin/env bash
# Set up from nothing and run the full test suite, one block per environment:
#   1. .venv (scripts/setup.sh): the core, transformers, llama.cpp, conformance, training;
#   2. .venv-sglang (scripts/setup_sglang.sh): SGLang 0.5.23 pins torch 2.14.1 and
#      transformers 5.19.0, so its adapter tests run in their own environment.
# Setup prints one line per stage (pip's output goes to logs/). Set AUTODECO_SKIP_SGLANG=1 to
# run only the first block (the SGLang folder then shows as skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

# --- block: main environment
bash scripts/setup.sh
echo "test: pytest (.venv)"
.venv/bin/python -m pytest "$@"

# --- block: SGLang
if [ "${AUTODECO_SKIP_SGLANG:-0}" != "1" ]; then
  bash scripts/setup_sglang.sh
  echo "test: pytest tests/sglang_adapter (.venv-sglang)"
  .venv-sglang/bin/python -m pytest tests/sglang_adapter -q
fi
