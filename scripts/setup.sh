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
python -m pip install --quiet --upgrade pip uv
# uv installs what pip would, faster: torch's CUDA build is GBs of wheels, which pip unpacks and compiles
# one file at a time and uv in parallel. Compiled at install as pip does (--compile-bytecode): where
# PYTHONDONTWRITEBYTECODE is set, every process would otherwise compile torch and sklearn again. uv does
# not read pip's settings, so the wheel folders and constraints pip is configured with (a site's mirror,
# a machine's cap) are handed to it.
pip_setting() {  # the value of pip's setting $1 from any scope (environment, user, global), if set
    python -m pip config list 2>/dev/null | sed -n "s/^[^.]*\.$1='\(.*\)'\$/\1/p" | head -n 1
}
uv_options=()
for path in $(pip_setting find-links); do uv_options+=(--find-links "$path"); done
for path in $(pip_setting constraint); do uv_options+=(--constraint "$path"); done
echo "setup: installing lwroi and its dependencies (torch is large: a minute or more on a fresh machine)"
python -m uv pip install --quiet --compile-bytecode "${uv_options[@]}" -e ".[test]"
# The editable install leaves lwroi's own modules uncompiled; where PYTHONDONTWRITEBYTECODE is set (CI
# machines, some clusters) every process would compile them again (about 0.5 s each). Compile them once.
python -m compileall -q lwroi >/dev/null
python -c "import lwroi, torch, torchvision, av, mpi4py; print('setup: lwroi', lwroi.__version__, '| torch', torch.__version__, '| torchvision', torchvision.__version__)"
