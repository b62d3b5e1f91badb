#!/usr/bin/env bash
# Sourced by the other scripts: creates ./.venv with the CPU torch first, then the package under constraints.
set -euo pipefail
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
source .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q torch==2.13.0
python -m pip install -q -c constraints.txt -e ".[dev]"
python -c "import importlib.util as u, torch; assert torch.__version__.endswith('+cpu'), torch.__version__; assert u.find_spec('torchvision') is None, 'torchvision must not be installed'"
