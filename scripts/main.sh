#!/usr/bin/env bash
# Set up from nothing (scripts/setup.sh) and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
mkdir -p out
autodeco init-heads out/example-heads --hidden-size 64 --width 32 --base-model tiny-llama --seed 0
autodeco inspect out/example-heads
