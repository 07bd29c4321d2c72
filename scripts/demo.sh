#!/usr/bin/env bash
# The main job on the embedded default: set up, make the synthetic demo pelvic CT, load it.
# Output goes to demo_output/ (replaced on every run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rm -rf demo_output
.venv/bin/ctv phantom demo_output/phantom --seed 0 --matrix 512
.venv/bin/ctv inspect demo_output/phantom/ct
echo "Demo CT series: demo_output/phantom/ct   truth masks: demo_output/phantom/masks"
