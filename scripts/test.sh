#!/usr/bin/env bash
# Installs pixelrefer-hf into ./.venv (CPU torch, no torchvision) and runs the test suite on two pytest-xdist workers
# (PYTEST_WORKERS=N for another count; extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install.sh
source scripts/install_eval.sh
python -m pip install -q -c constraints.txt -e ".[demo,browser-check]"
# The demo page in a real browser (Debian's Chromium driven by Selenium), before the tests so that their summary stays
# last: run where `chromium` and `chromedriver` are installed; PIXELREFER_BROWSER_CHECK=1 requires it, =0 skips it.
browser_check=${PIXELREFER_BROWSER_CHECK:-auto}
if [ "$browser_check" != 0 ]; then
    if [ "$browser_check" = 1 ] || { command -v chromium && command -v chromedriver; } >/dev/null; then
        python scripts/browser_check.py --screenshot "${TMPDIR:-/tmp}/pixelrefer-demo.png"
    else
        echo "browser check not run: no chromium/chromedriver (apt-get install chromium chromium-driver)"
    fi
fi
python -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadfile tests "$@"
