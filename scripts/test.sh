#!/usr/bin/env bash
# Set up from nothing (scripts/setup.sh) and run the full test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
