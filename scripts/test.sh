#!/usr/bin/env bash
# Installs pixelrefer-hf into ./.venv (CPU torch, no torchvision) and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh
source scripts/install_eval.sh
python -m pip install -q -c constraints.txt -e ".[demo,browser-check]"
# The demo page in a real browser (Debian's Chromium driven by Selenium), where Chromium is installed
# (`apt-get install chromium chromium-driver`); run before the tests, so that the test summary stays the last line.
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    python scripts/browser_check.py --screenshot "${TMPDIR:-/tmp}/pixelrefer-demo.png"
else
    echo "browser check skipped: no /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)"
fi
python -m pytest -q tests "$@"
