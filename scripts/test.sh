#!/usr/bin/env bash
# Set-up + the test suite and lint.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# Optional system packages some tests exercise (fluidsynth + a GM soundfont, chromium for tests/test_app.py);
# never fails the run.
bash scripts/install_system_deps.sh || true
export HF_HUB_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
