#!/usr/bin/env bash
# Set up lwroi and run the main job on the built-in synthetic dataset with 2 MPI ranks.
# Usage: bash scripts/demo.sh [N_RANKS]   -> runs/demo/summary.csv, runs/demo/results.csv
set -euo pipefail
cd "$(dirname "$0")/.."
RANKS=${1:-2}
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
[ -f data/demo/ground_truth.json ] || lwroi synth data/demo --config configs/demo.yaml
mpiexec -n "$RANKS" lwroi run configs/demo.yaml
