"""Save and restore a running fit's state (model, optimiser, early stopping, RNG), atomically.

The state is a dict of tensors and plain values, loaded with ``torch.load(weights_only=True)``
so a checkpoint can never execute code. The config fingerprint is stored beside the state so
a checkpoint of another configuration is never resumed.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from lwroi._io import atomic_path, disk_full_error

log = logging.getLogger("lwroi")

FORMAT = 2
"""Layout of a saved solver state; raised when it changes, so an older lwroi's checkpoint is never read as
this one's (2: the sgd solver keeps Adam's moments itself, no longer a ``torch.optim.Adam`` state_dict)."""


def save_checkpoint(path: str | Path, state: dict[str, Any], *, fingerprint: str) -> None:
    """Write ``state`` to ``path`` (temporary file, fsync, rename).

    torch reports a full disk as a RuntimeError from its zip writer ("unexpected pos ..."), so a
    failed save is checked against the space left and re-raised as :class:`DiskFullError`.
    """
    nbytes = _tensor_bytes(state)
    with atomic_path(path, nbytes) as tmp:
        try:
            with open(tmp, "wb") as fh:  # closed on failure, so unlinking it frees the space at once
                torch.save({"fingerprint": fingerprint, "format": FORMAT, "state": state}, fh)
        except RuntimeError:
            tmp.unlink(missing_ok=True)
            if shutil.disk_usage(tmp.parent).free < nbytes:
                raise disk_full_error(Path(path), nbytes) from None
            raise


def _tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in a nested dict/list: about the size of the saved file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def load_checkpoint(path: str | Path, *, fingerprint: str) -> dict[str, Any] | None:
    """The saved state, or ``None`` when there is none, it is unreadable, or it belongs to another config."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: start the fit from scratch
        log.warning("%s: ignoring unreadable checkpoint (%s: %s)", path, type(exc).__name__, exc)
        return None
    if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
        log.warning("%s: ignoring checkpoint of another configuration", path)
        return None
    if saved.get("format") != FORMAT:
        log.warning("%s: ignoring checkpoint of another lwroi version (format %s, this one reads %s): the fit "
                    "starts over", path, saved.get("format", 1), FORMAT)
        return None
    return saved["state"]
