#!/usr/bin/env bash
# Installs pixelrefer-hf into ./.venv (CPU torch, no torchvision) and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh
source scripts/install_eval.sh
python -m pytest -q tests "$@"
