#!/usr/bin/env bash
# The whole test suite from a fresh clone: install, start a one-node Slurm + Apptainer (as root), run pytest.
# Usage: bash scripts/test.sh [pytest args]    (LWROI_NO_CLUSTER=1 skips the cluster set-up step;
# the slurm/container tests then fail loudly rather than skip)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
if [ "${LWROI_NO_CLUSTER:-0}" != 1 ] && [ -x scripts/testcluster.sh ]; then
    bash scripts/testcluster.sh up
fi
python -m pytest "$@"
