"""Run under ``mpiexec -n 2``: rank 0 spends 3 s per unit outside MPI, rank 1 10 ms.

Prints the JSON list of (rank, unit, finished_at) so the test can check that rank 1 kept
taking units while rank 0 was busy, as a rank inside a long torch loop is busy.
"""

from __future__ import annotations

import json
import sys
import time

from mpi4py import MPI

from lwroi.orchestration.journal import Journal
from lwroi.orchestration.plan import Unit
from lwroi.orchestration.results import ResultStore
from lwroi.orchestration.schedule import StopFlag, execute

run_dir = sys.argv[1]
comm = MPI.COMM_WORLD
store = ResultStore(run_dir, "probe")
finished: list[tuple[int, str, float]] = []


def run_unit(unit: Unit) -> None:
    time.sleep(3.0 if comm.rank == 0 else 0.01)  # no MPI call while "computing"
    store.write_ok(unit.key, {})
    finished.append((comm.rank, unit.key, time.time()))


units = [Unit(key=f"work/{i}", phase="work") for i in range(6)]
execute(units, run_unit, store=store, comm=comm, stop=StopFlag(), journal=Journal(run_dir, comm.rank, "probe"))
everything = comm.gather(finished, root=0)
if comm.rank == 0:
    print(json.dumps([item for part in everything for item in part]))
