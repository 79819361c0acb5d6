"""Which device a rank uses: one GPU per rank, chosen from its node-local rank.

Pure logic on purpose (no torch import), so it is tested on machines without GPUs.
"""

from __future__ import annotations


def choose_device(requested: str, local_rank: int, n_visible_gpus: int) -> tuple[str, str]:
    """Return (device, reason).

    ``auto`` takes GPU ``local_rank % n_visible_gpus`` (indices are relative to
    ``CUDA_VISIBLE_DEVICES``, so a Slurm ``--gpus-per-task=1`` rank always gets ``cuda:0``),
    and the CPU when no GPU is visible. An explicit ``cpu`` or ``cuda:N`` is kept as given.
    """
    if requested == "cpu":
        return "cpu", "requested cpu"
    if requested.startswith("cuda") and requested != "cuda":
        index = int(requested.split(":", 1)[1])
        if index >= n_visible_gpus:
            raise RuntimeError(f"device {requested!r} requested but only {n_visible_gpus} GPU(s) are visible")
        return requested, "requested"
    if n_visible_gpus == 0:
        if requested == "cuda":
            raise RuntimeError("device 'cuda' requested but no GPU is visible (check CUDA_VISIBLE_DEVICES / --nv)")
        return "cpu", "no GPU visible"
    index = local_rank % n_visible_gpus
    return f"cuda:{index}", f"local rank {local_rank} % {n_visible_gpus} visible GPU(s)"


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
