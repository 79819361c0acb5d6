"""Run under ``mpiexec -n 2`` as ``python failing_rank0.py CONFIG``: ``lwroi fit CONFIG`` with a bug on rank 0.

Rank 0's pre-work input check raises an exception lwroi does not expect (a ``KeyError``) while
rank 1 waits in ``bcast`` for that check's verdict: the launch must abort both ranks with rank 0's
traceback, not leave rank 1 waiting.
"""

from __future__ import annotations

import sys

from mpi4py import MPI

from lwroi.cli import main
from lwroi.orchestration import driver


def buggy_check_inputs(*args: object, **kwargs: object) -> None:
    raise KeyError("planted bug in rank 0's input check")


if MPI.COMM_WORLD.rank == 0:
    driver.check_inputs = buggy_check_inputs
sys.exit(main(["fit", sys.argv[1], "--mpi", "mpi"]))
