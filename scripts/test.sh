#!/usr/bin/env bash
# The whole test suite from a fresh clone: install, start a one-node Slurm + Apptainer and install chromium
# (as root), run pytest.
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
# The report test opens the page in a real headless browser (Debian's chromium package).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "test: installing chromium for the report test"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
             --no-install-recommends chromium >/dev/null; }
fi
python -m pytest "$@"
