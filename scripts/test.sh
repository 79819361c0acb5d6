#!/usr/bin/env bash
# The whole test suite from a fresh clone: install (setup.sh), start a one-node Slurm + Apptainer and
# install chromium (both as root, meanwhile), run pytest.
# Usage: bash scripts/test.sh [pytest args]    (LWROI_NO_CLUSTER=1 skips the cluster set-up step;
# the slurm/container tests then fail loudly rather than skip)
set -euo pipefail
cd "$(dirname "$0")/.."
# The Python install mostly waits on downloads and disks, as the cluster's and chromium's packages do:
# it runs beside them.
bash scripts/setup.sh &
setup=$!
trap 'kill "$setup" 2>/dev/null || true' EXIT
if [ "${LWROI_NO_CLUSTER:-0}" != 1 ] && [ -x scripts/testcluster.sh ]; then
    bash scripts/testcluster.sh up
fi
# The whole suite builds the test image (tests/cluster/image.py) in the background while the environment
# installs, each keeping about one core busy; the cluster tests wait for it. Not with pytest arguments
# (a subset may not need it) or a prebuilt image (LWROI_TEST_IMAGE).
if [ $# -eq 0 ] && [ -z "${LWROI_TEST_IMAGE:-}" ] && command -v apptainer >/dev/null; then
    LWROI_TEST_IMAGE_BUILD=$(mktemp -d /tmp/lwroi-test-image-XXXXXX)
    export LWROI_TEST_IMAGE_BUILD
    trap 'kill "$setup" 2>/dev/null || true; python3 tests/cluster/image.py remove "$LWROI_TEST_IMAGE_BUILD"' EXIT
    python3 tests/cluster/image.py start "$LWROI_TEST_IMAGE_BUILD"
fi
# The report test opens the page in a real headless browser (Debian's chromium package). After the
# cluster's packages: apt installs one thing at a time.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "test: installing chromium for the report test"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
             --no-install-recommends chromium >/dev/null; }
fi
wait "$setup" || { echo "test: scripts/setup.sh failed" >&2; exit 1; }
# shellcheck disable=SC1091
source .venv/bin/activate
# Two workers, each taking whole test files (their module fixtures are built once); LWROI_TEST_WORKERS=0
# runs in this one process.
python -m pytest -n "${LWROI_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
