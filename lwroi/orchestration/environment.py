"""The launch environment, read once: ranks, node-local rank, Slurm ids and CPUs (submitit's JobEnvironment idea).

Only this module reads environment variables; the object is built at start-up, logged, and
passed down. :func:`threads_per_rank` turns it into a rank's CPU thread count.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

LOCAL_RANK_VARIABLES = ("SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK")
LOCAL_SIZE_VARIABLES = ("SLURM_NTASKS_PER_NODE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE")
LAUNCHER_SIZE_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
GPU_ALLOCATION_VARIABLES = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES")
"""Variables through which a scheduler hands a process GPUs, in the order :func:`allocated_gpus` reads them."""
_NO_GPU_VALUES = ("NoDevFiles", "-1")


@dataclass(frozen=True)
class JobEnvironment:
    """Where this process sits in the job."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    hostname: str
    job_id: str | None
    array_job_id: str | None
    array_task_id: str | None
    restart_count: int
    launcher_size: int | None
    """Ranks the launcher says it started (SLURM_NTASKS, PMI_SIZE...), to catch an MPI mismatch."""
    launcher_size_variable: str | None
    visible_devices: str | None
    cpus_per_task: int | None = None
    """Slurm's ``--cpus-per-task`` (``SLURM_CPUS_PER_TASK``), when Slurm started the job."""

    def __str__(self) -> str:
        job = f" job={self.job_id}" if self.job_id else ""
        arr = f" array={self.array_job_id}_{self.array_task_id}" if self.array_task_id else ""
        restart = f" restarts={self.restart_count}" if self.restart_count else ""
        return (f"rank {self.rank}/{self.size} (local {self.local_rank}/{self.local_size}) on {self.hostname}"
                f"{job}{arr}{restart} CUDA_VISIBLE_DEVICES={self.visible_devices}")


def _first_int(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[int | None, str | None]:
    for name in names:
        value = env.get(name, "")
        head = value.split("(")[0].split(",")[0]
        if head.strip().isdigit():
            return int(head), name
    return None, None


def visible_devices(env: Mapping[str, str] | None = None) -> str | None:
    """``CUDA_VISIBLE_DEVICES``: the GPUs the launcher gave this process (None: not restricted)."""
    return (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")


def allocated_gpus(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(variable, value)`` when the launcher gave this process GPUs, else None.

    The first of :data:`GPU_ALLOCATION_VARIABLES` that is set and non-empty; Slurm's
    ``NoDevFiles`` and the conventional ``-1`` (hide every GPU) mean none.
    """
    env = os.environ if env is None else env
    for name in GPU_ALLOCATION_VARIABLES:
        value = env.get(name, "").strip()
        if value and not value.startswith(_NO_GPU_VALUES):
            return name, value
    return None


def read_environment(rank: int, size: int, *, local_rank: int | None = None, local_size: int | None = None,
                     env: Mapping[str, str] | None = None) -> JobEnvironment:
    """Build the environment from MPI's rank/size and the launcher's variables.

    ``local_rank``/``local_size`` from a node-local split of the communicator win when given;
    otherwise the launcher's variables are used, then ``rank``.
    """
    env = os.environ if env is None else env
    if local_rank is None:
        local_rank = _first_int(env, LOCAL_RANK_VARIABLES)[0]
        local_rank = rank if local_rank is None else local_rank
    if local_size is None:
        local_size = _first_int(env, LOCAL_SIZE_VARIABLES)[0] or size
    launcher_size, launcher_var = _first_int(env, LAUNCHER_SIZE_VARIABLES)
    return JobEnvironment(
        rank=rank,
        size=size,
        local_rank=local_rank,
        local_size=max(local_size, 1),
        hostname=socket.gethostname(),
        job_id=env.get("SLURM_JOB_ID"),
        array_job_id=env.get("SLURM_ARRAY_JOB_ID"),
        array_task_id=env.get("SLURM_ARRAY_TASK_ID"),
        restart_count=int(env.get("SLURM_RESTART_COUNT", "0") or 0),
        launcher_size=launcher_size,
        launcher_size_variable=launcher_var,
        visible_devices=visible_devices(env),
        cpus_per_task=_first_int(env, ("SLURM_CPUS_PER_TASK",))[0],
    )


def threads_per_rank(requested: int, *, node_cpus: int, bound_cpus: int, local_size: int,
                     cpus_per_task: int | None = None) -> int:
    """CPU threads for one rank.

    ``requested`` (``run.threads``) if set; else Slurm's ``--cpus-per-task`` (``SLURM_CPUS_PER_TASK``);
    else the CPUs the launcher bound this rank to, when it bound it to fewer than the node has;
    else the node's CPUs shared by the ranks on it. ``os.cpu_count()`` alone counts the whole node,
    so on a shared cluster node every rank would start a thread per core of the node.
    """
    if requested > 0:
        return requested
    if cpus_per_task:
        return cpus_per_task
    if 0 < bound_cpus < node_cpus:
        return bound_cpus
    return max(1, node_cpus // max(1, local_size))


def check_launch(job: JobEnvironment) -> None:
    """Stop when the launcher started more processes than MPI sees (every process 'rank 0 of 1').

    That happens when the launcher and the MPI library do not match (e.g. srun without
    ``--mpi=pmi2``, or an Open MPI ``mpirun`` with an MPICH-built mpi4py).
    """
    if job.launcher_size is not None and job.launcher_size > 1 and job.size != job.launcher_size:
        raise RuntimeError(
            f"started {job.size} MPI rank(s) but {job.launcher_size_variable}={job.launcher_size}: launcher and MPI "
            "library do not match (use `srun --mpi=pmi2` or the mpiexec of the MPI that mpi4py uses; "
            "README: 'MPI launchers')"
        )
