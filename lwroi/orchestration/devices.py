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


def threads_per_rank(requested: int, n_cpus: int, local_size: int) -> int:
    """CPU threads for one rank: ``requested`` if set, else the node's CPUs shared by its ranks."""
    if requested > 0:
        return requested
    return max(1, n_cpus // max(1, local_size))
