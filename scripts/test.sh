#!/usr/bin/env bash
# Installs pixelrefer-hf into ./.venv (CPU torch, no torchvision) and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh
source scripts/install_eval.sh
python -m pip install -q -c constraints.txt -e ".[demo,browser-check]"
# The demo page in a real browser (Debian's Chromium driven by Selenium), on request: PIXELREFER_BROWSER_CHECK=1 with
# Chromium installed (`apt-get install chromium chromium-driver`); before the tests, so their summary stays last.
if [ "${PIXELREFER_BROWSER_CHECK:-0}" = 1 ]; then
    python scripts/browser_check.py --screenshot "${TMPDIR:-/tmp}/pixelrefer-demo.png"
fi
python -m pytest -q tests "$@"
