#!/usr/bin/env bash
# Sourced after scripts/install.sh (or run on its own in an activated environment): lmms-eval 0.7.3 without its
# declared dependencies (they pull torchvision, which breaks a CPU torch), then the ones the region tasks use.
# Works the same on a GPU machine (it installs no torch).
set -euo pipefail
python -m pip install -q -c constraints.txt --no-deps "lmms-eval==0.7.3"
python -m pip install -q -c constraints.txt -e ".[eval]"
python - <<'PY'
import importlib.util
import sys

if importlib.util.find_spec("torchvision") is not None:
    sys.exit("error: the evaluation install brought torchvision into the environment; pip uninstall torchvision")
PY
