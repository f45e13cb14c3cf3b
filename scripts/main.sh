#!/usr/bin/env bash
# Set up from nothing (scripts/setup.sh) and run the main job: `autodeco demo` generates with
# the embedded default model through the transformers and llama.cpp engines, shows each
# token's T and P, and prints the evaluation summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/autodeco demo "$@"
