#!/bin/sh
# The image's self-test (`apptainer test lwroi.sif`, the %test section of both
# definitions): imports, versions, a torchvision op, and the baked weights' checksum.
set -eu
python - <<'PY'
from importlib.metadata import version

import av
import lwroi
import mpi4py
import torch
import torchvision
from mpi4py import MPI

print("lwroi", lwroi.__version__)
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("torchvision", torchvision.__version__)
print("mpi4py", mpi4py.__version__, "mpich", version("mpich"))
print("MPI", MPI.Get_library_version().splitlines()[0])
print("av", av.__version__)
torch.ops.torchvision.nms(torch.zeros(1, 4), torch.ones(1), 0.5)
PY
if [ -e /opt/lwroi/weights/SHA256SUMS ]; then
    cd /opt/lwroi/weights && sha256sum --check --strict SHA256SUMS
fi
