#!/usr/bin/env bash
# Installs pixelrefer-hf into ./.venv (see install.sh) and asks the offline tiny random-weight model about two regions
# of the photo shipped with the package; prints the answer and the regions' object tokens, draws them to out/demo.png.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh
mkdir -p out
pixelrefer describe --box 425,20,472,225 --box 405,215,492,385 --save-vis out/demo.png \
    "What is <region>, and how does it relate to <region>?" "$@"
