"""The MPI-coordinated driver: one entry point for a plain process, ``mpiexec``, ``srun`` and array shards.

Rank 0 checks the run directory and the data once and tells every rank; then all ranks pull
units from the shared plan until it is empty or a stop signal arrives.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lwroi.config import Config
from lwroi.exceptions import LwroiError
from lwroi.orchestration.devices import choose_device, threads_per_rank
from lwroi.orchestration.environment import JobEnvironment, check_launch, read_environment
from lwroi.orchestration.journal import Journal
from lwroi.orchestration.plan import Unit, build_plan, shard_units
from lwroi.orchestration.progress import StatusConsole
from lwroi.orchestration.results import ResultStore
from lwroi.orchestration.rundir import prepare_run_dir
from lwroi.orchestration.schedule import (
    EXIT_USAGE,
    StopFlag,
    combine_exit_codes,
    execute,
    node_local_rank,
    world_communicator,
)
from lwroi.orchestration.tasks import UnitRunner

log = logging.getLogger("lwroi")


@dataclass
class LaunchResult:
    """What one launch did, for the CLI to report and (on rank 0) reduce."""

    exit_code: int
    rank: int
    run_dir: Path
    units: list[Unit]
    store: ResultStore


class LaunchError(LwroiError):
    """Raised on every rank when rank 0 found the run cannot start (bad run dir, bad data)."""


def setup_logging(run_dir: Path | None, rank: int, size: int, level: int = logging.INFO) -> None:
    """Log to stderr (rank prefix under MPI, a live status line on a terminal) and to the run's logs/."""
    logger = logging.getLogger("lwroi")
    logger.setLevel(level)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    prefix = f"[rank {rank}] " if size > 1 else ""
    fmt = logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s", "%H:%M:%S")
    console = StatusConsole(sys.stderr)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if run_dir is not None:
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(run_dir / "logs" / f"rank{rank:03d}.log")
        file_handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s"))
        logger.addHandler(file_handler)
    logger.propagate = False


def _agree(comm: Any, action: Any) -> Any:
    """Run ``action`` on rank 0 and share its result or its error with every rank."""
    result: tuple[str, Any] = ("ok", None)
    if comm.rank == 0:
        try:
            result = ("ok", action())
        except (LwroiError, OSError, ValueError, RuntimeError) as exc:
            result = ("error", f"{exc}")
    status, value = comm.bcast(result, root=0)
    if status == "error":
        raise LaunchError(value)
    return value


def _gpu_count() -> int:
    from lwroi.encoding.devices import visible_gpu_count

    return visible_gpu_count()


def launch(cfg: Config, *, up_to: str = "fit", shard: tuple[int, int] | None = None, mpi: str = "auto",
           restart: bool = False, tune_split: str = "roi") -> LaunchResult:
    """Run (or resume) the plan of ``cfg`` up to phase ``up_to`` on every rank of the world communicator.

    Raises
    ------
    LaunchError
        The launch cannot start (same message on every rank); nothing was computed.
    """
    comm = world_communicator(mpi)
    local_rank, local_size = node_local_rank(comm)
    job = read_environment(comm.rank, comm.size, local_rank=local_rank, local_size=local_size)
    try:
        check_launch(job)
    except RuntimeError as exc:
        raise LaunchError(str(exc)) from None
    run_dir = _agree(comm, lambda: prepare_run_dir(cfg, restart=restart))
    setup_logging(run_dir, comm.rank, comm.size)
    log.info("%s", job)
    device = _pick_device(cfg, job)
    stop = StopFlag()
    stop.install()
    launch_id = _agree(comm, lambda: time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6])
    journal = Journal(run_dir, comm.rank, launch_id)
    store = ResultStore(run_dir, cfg.fingerprint())
    runner = UnitRunner(cfg, store, journal, stop, device)
    _agree(comm, runner.check_data)
    units = build_plan(cfg, runner.roi_cost, up_to=up_to, tune_split=tune_split)
    if shard is not None:
        units = shard_units(units, *shard)
        log.info("shard %d/%d: %d units", shard[0], shard[1], len(units))
    outcome = execute(units, runner, store=store, comm=comm, stop=stop, journal=journal)
    code = combine_exit_codes(comm, outcome.exit_code)
    log.info("this rank: %d units done, %d failed%s; job exit code %d", len(outcome.done), len(outcome.failed),
             ", interrupted" if outcome.interrupted else "", code)
    return LaunchResult(code, comm.rank, run_dir, units, store)


def _pick_device(cfg: Config, job: JobEnvironment) -> str:
    """One GPU per rank (node-local rank modulo visible GPUs), else the CPU; sets CPU threads."""
    requested = cfg.run.device
    n_gpus = 0 if requested == "cpu" else _gpu_count()
    device, why = choose_device(requested, job.local_rank, n_gpus)
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
    node_cpus = os.cpu_count() or 1
    bound = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else node_cpus  # Linux only
    threads = threads_per_rank(cfg.run.threads, node_cpus=node_cpus, bound_cpus=bound, local_size=job.local_size,
                               cpus_per_task=int(per_task) if per_task.isdigit() else None)
    from lwroi.encoding.devices import set_cpu_threads

    set_cpu_threads(threads)
    log.info("device %s (%s), %d CPU thread(s)", device, why, threads)
    return device


__all__ = ["EXIT_USAGE", "LaunchError", "LaunchResult", "launch", "setup_logging"]
