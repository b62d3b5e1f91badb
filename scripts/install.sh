#!/usr/bin/env bash
# Sourced by the other scripts: creates ./.venv with the CPU torch first, then the package under constraints.
set -euo pipefail
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
source .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
# The CPU torch: this project's machines have its wheel locally; elsewhere run with
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu (on Linux the default index has the CUDA build).
python -m pip install -q torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
python -m pip install -q -c constraints.txt -e ".[dev]"
python - <<'EOF'
import importlib.util
import sys

import torch


if not torch.__version__.endswith("+cpu"):
    sys.exit(
        f"error: torch {torch.__version__} is not the CPU build; remove .venv and rerun with "
        "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"
    )
if importlib.util.find_spec("torchvision") is not None:
    sys.exit("error: torchvision is installed in .venv and must not be; pip uninstall torchvision")
EOF
