#!/usr/bin/env bash
# The whole test suite from a fresh clone: start a one-node Slurm + Apptainer (as root), install, install
# chromium (as root), run pytest.
# Usage: bash scripts/test.sh [pytest args]    (LWROI_NO_CLUSTER=1 skips the cluster set-up step;
# the slurm/container tests then fail loudly rather than skip)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${LWROI_NO_CLUSTER:-0}" != 1 ] && [ -x scripts/testcluster.sh ]; then
    bash scripts/testcluster.sh up
fi
# The whole suite builds the test image (tests/cluster/image.py) in the background while the environment
# installs, each keeping about one core busy; the cluster tests wait for it. Not with pytest arguments
# (a subset may not need it) or a prebuilt image (LWROI_TEST_IMAGE).
if [ $# -eq 0 ] && [ -z "${LWROI_TEST_IMAGE:-}" ] && command -v apptainer >/dev/null; then
    LWROI_TEST_IMAGE_BUILD=$(mktemp -d /tmp/lwroi-test-image-XXXXXX)
    export LWROI_TEST_IMAGE_BUILD
    trap 'python3 tests/cluster/image.py remove "$LWROI_TEST_IMAGE_BUILD"' EXIT
    python3 tests/cluster/image.py start "$LWROI_TEST_IMAGE_BUILD"
fi
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
# The report test opens the page in a real headless browser (Debian's chromium package).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "test: installing chromium for the report test"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
             --no-install-recommends chromium >/dev/null; }
fi
# Two workers, each taking whole test files (their module fixtures are built once); LWROI_TEST_WORKERS=0
# runs in this one process.
python -m pytest -n "${LWROI_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
