"""Devices and CPU threads: turn a device spec into a ``torch.device``, count GPUs, set threads."""

from __future__ import annotations

import re

import torch


def resolve_device(spec: str | torch.device) -> torch.device:
    """Resolve ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` to a usable ``torch.device``.

    ``"auto"`` is the first CUDA device when one is visible, else the CPU. An explicit CUDA device
    that is not visible raises instead of silently falling back, so a GPU job never runs on the CPU.

    Raises
    ------
    ValueError
        The spec is malformed, or names a CUDA device that is not visible.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match is None:
        raise ValueError(f"device {spec!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {spec!r}: no CUDA device is available (torch.cuda.is_available() is False); "
            "use device 'auto' or 'cpu'"
        )
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(
            f"device {spec!r}: only {count} CUDA device(s) visible (cuda:0..cuda:{count - 1}); "
            "check CUDA_VISIBLE_DEVICES"
        )
    return torch.device("cuda", index)


def visible_gpu_count() -> int:
    """CUDA devices this process can see (respects ``CUDA_VISIBLE_DEVICES``)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def set_cpu_threads(n: int) -> None:
    """Limit torch's intra-op CPU threads, so ranks sharing a node do not oversubscribe its cores."""
    torch.set_num_threads(max(1, int(n)))
