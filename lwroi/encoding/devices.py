"""Devices and CPU threads: the one device policy (spec → device, which GPU a rank takes), GPU count, threads.

:func:`choose_device` is the policy, plain logic on the number of visible GPUs (so it is tested
without GPUs); :func:`resolve_device` applies it to this process. Both raise :class:`DeviceError`.
"""

from __future__ import annotations

import re

import torch

from lwroi.exceptions import DeviceError

_SPEC = re.compile(r"auto|cpu|cuda(?::([0-9]+))?")


def choose_device(spec: str, local_rank: int, n_visible_gpus: int) -> tuple[str, str]:
    """The device for a rank, as ``(device, reason)``: ``"cpu"`` or ``"cuda:N"``.

    ``auto`` (and a bare ``cuda``) takes GPU ``local_rank % n_visible_gpus`` (indices are relative
    to ``CUDA_VISIBLE_DEVICES``, so a Slurm ``--gpus-per-task=1`` rank always gets ``cuda:0``);
    ``auto`` takes the CPU when no GPU is visible. An explicit ``cpu`` or ``cuda:N`` is kept as given.
    A CUDA device that is not visible raises instead of silently falling back, so a GPU job never
    runs on the CPU.

    Raises
    ------
    DeviceError
        The spec is malformed, or names a CUDA device that is not visible.
    """
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise DeviceError(f"device {spec!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if spec == "cpu":
        return "cpu", "requested cpu"
    if spec != "auto" and n_visible_gpus == 0:
        raise DeviceError(f"device {spec!r}: no CUDA device is available (none visible: check "
                          "CUDA_VISIBLE_DEVICES, or apptainer's --nv); use device 'auto' or 'cpu'")
    if match.group(1) is not None:
        index = int(match.group(1))
        if index >= n_visible_gpus:
            raise DeviceError(f"device {spec!r}: only {n_visible_gpus} CUDA device(s) visible "
                              f"(cuda:0..cuda:{n_visible_gpus - 1}); check CUDA_VISIBLE_DEVICES")
        return spec, "requested"
    if n_visible_gpus == 0:
        return "cpu", "no GPU visible"
    index = local_rank % n_visible_gpus
    return f"cuda:{index}", f"local rank {local_rank} % {n_visible_gpus} visible GPU(s)"


def check_allocated_gpus(spec: str, allocated: tuple[str, str] | None, n_visible_gpus: int,
                         cuda_build: str | None) -> None:
    """Stop a job that was given GPUs when torch sees none, instead of letting ``auto`` run it on the CPU.

    ``allocated`` is ``(variable, value)`` from
    :func:`lwroi.orchestration.environment.allocated_gpus`; ``cuda_build`` is the CUDA version
    torch was built for (``torch.version.cuda``, None for a CPU-only torch). The usual cause is a
    node driver older than that CUDA version needs. ``spec="cpu"`` asks for the CPU on purpose.

    Raises
    ------
    DeviceError
        GPUs were allocated, none is visible to torch, and the spec is not ``cpu``.
    """
    if spec == "cpu" or allocated is None or n_visible_gpus > 0:
        return
    variable, value = allocated
    if cuda_build:
        why = (f"this torch is built for CUDA {cuda_build}, which needs an NVIDIA driver that supports CUDA "
               f"{cuda_build} on the node (check `nvidia-smi`; on an older driver build the image with the "
               "matching CUDA wheel variant, containers/README.md 'CUDA wheel variant'), and the GPUs must be "
               "passed into the container (apptainer --nv)")
    else:
        why = "this torch is a CPU-only build (torch.version.cuda is None): install a CUDA build of torch"
    raise DeviceError(f"GPUs were allocated ({variable}={value}) but torch sees none: {why}. Stopping rather "
                      "than running on the CPU while holding GPUs; set run.device: cpu to use the CPU on purpose")


def cuda_build() -> str | None:
    """The CUDA version this torch was built for (``torch.version.cuda``; None: a CPU-only build)."""
    return torch.version.cuda


def resolve_device(spec: str | torch.device) -> torch.device:
    """Resolve ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` to a usable ``torch.device`` of this process.

    :func:`choose_device` for local rank 0: ``"auto"`` is the first CUDA device when one is
    visible, else the CPU.

    Raises
    ------
    DeviceError
        The spec is malformed, or names a CUDA device that is not visible.
    """
    return torch.device(choose_device(str(spec), 0, visible_gpu_count())[0])


def visible_gpu_count() -> int:
    """CUDA devices this process can see (respects ``CUDA_VISIBLE_DEVICES``)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def set_cpu_threads(n: int) -> None:
    """Limit torch's intra-op CPU threads, so ranks sharing a node do not oversubscribe its cores."""
    torch.set_num_threads(max(1, int(n)))
