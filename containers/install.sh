#!/bin/sh
# Install lwroi into the image: Python venv in /opt/lwroi/venv with torch,
# torchvision, mpi4py + PyPI's MPICH, PyAV and lwroi from the staged source.
# Run by the %post section of containers/lwroi.def and containers/lwroi-oci.def,
# inside the image root, after containers/stage.sh staged /opt/lwroi:
#   TORCH_VERSION=... TORCHVISION_VERSION=... PIP_INDEX_URL=... \
#       PIP_EXTRA_INDEX_URL=... sh /opt/lwroi/install.sh
# Needs only a python3 with venv and a CA store (update-ca-certificates).
set -eu
export LC_ALL=C.UTF-8
if [ -e /usr/local/share/ca-certificates/lwroi-extra-ca.crt ]; then
    update-ca-certificates
fi
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

# pip: the image's CA store (with the extra bundle) and the site's index.
export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
export PIP_INDEX_URL="${PIP_INDEX_URL:-https://pypi.org/simple}"
export PIP_EXTRA_INDEX_URL="${PIP_EXTRA_INDEX_URL:-}"
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
python3 -m venv /opt/lwroi/venv

# The wheelhouse becomes the last extra index: for equal versions pip takes
# the last index's file (with --find-links the index's would win).
wheelhouse=/opt/lwroi/build-wheelhouse
/opt/lwroi/venv/bin/python - "$wheelhouse" <<'PY'
import os
import re
import sys

root = sys.argv[1]
wheels = {}
for folder, _, names in os.walk(root):
    for name in names:
        if name.endswith(".whl"):
            project = re.sub(r"[-_.]+", "-", name.split("-")[0]).lower()
            wheels.setdefault(project, []).append(os.path.join(folder, name))
for project, paths in wheels.items():
    os.makedirs(os.path.join(root, "simple", project))
    with open(os.path.join(root, "simple", project, "index.html"), "w") as page:
        page.writelines(f'<a href="file://{p}">{os.path.basename(p)}</a>\n' for p in paths)
print(f"wheelhouse: {sum(map(len, wheels.values()))} wheels of {len(wheels)} projects")
PY
if [ -d "$wheelhouse/simple" ]; then
    export PIP_EXTRA_INDEX_URL="$PIP_EXTRA_INDEX_URL file://$wheelhouse/simple"
fi

# mpich from PyPI gives mpi4py an MPICH-ABI library: it runs under the
# host's MPICH-family mpiexec and under srun --mpi=pmi2.
/opt/lwroi/venv/bin/pip install --prefer-binary \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
    "/opt/lwroi/src[mpich,timm]"
rm -rf /opt/lwroi/build-wheelhouse /opt/lwroi/src /opt/lwroi/install.sh

# torchvision looks for pretrained weights in $TORCH_HOME/hub/checkpoints.
ln -s ../../weights /opt/lwroi/torch/hub/checkpoints
