#!/usr/bin/env bash
# Set-up + the main job: music from the bundled example image on the embedded default model.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/melfusion generate --image examples/lakeside.png --text "a calm folk song played on acoustic guitar" \
  --out examples/output/lakeside.wav --seed 0 "$@"
