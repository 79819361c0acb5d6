#!/usr/bin/env bash
# Create .venv and install lwroi with its test extras (torch, torchvision, PyAV, mpi4py + MPICH, pytest).
# Idempotent: a second call only re-checks the install. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
python -m pip install --quiet --upgrade pip
echo "setup: installing lwroi and its dependencies (torch is large: a few minutes on a fresh machine)"
python -m pip install --quiet -e ".[test]"
# The editable install leaves lwroi's own modules uncompiled; where PYTHONDONTWRITEBYTECODE is set (CI
# machines, some clusters) every process would compile them again (about 0.5 s each). Compile them once.
python -m compileall -q lwroi >/dev/null
python -c "import lwroi, torch, torchvision, av, mpi4py; print('setup: lwroi', lwroi.__version__, '| torch', torch.__version__, '| torchvision', torchvision.__version__)"
