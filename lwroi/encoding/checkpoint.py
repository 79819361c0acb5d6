"""Save and restore a running fit's state (model, optimiser, early stopping, RNG), atomically.

The state is a dict of tensors and plain values, loaded with ``torch.load(weights_only=True)``
so a checkpoint can never execute code. The config fingerprint is stored beside the state so
a checkpoint of another configuration is never resumed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from lwroi._io import atomic_path

log = logging.getLogger("lwroi")


def save_checkpoint(path: str | Path, state: dict[str, Any], *, fingerprint: str) -> None:
    """Write ``state`` to ``path`` (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        torch.save({"fingerprint": fingerprint, "state": state}, tmp)


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
    return saved["state"]
