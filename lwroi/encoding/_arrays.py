"""Input checks every solver shares, so each fails before any work with the same message; content digests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

_DIGEST_CHUNK = 16 * 2**20
"""Bytes hashed as one piece by :func:`content_digest` (fixed, so the digest never depends on threads)."""


def content_digest(arrays: Sequence[np.ndarray]) -> str:
    """sha1 of arrays' shapes, dtypes and bytes: what caches of work on feature matrices are keyed by.

    Content, not identity: reloading the same feature store finds the work again, and an array
    changed in place never does. The bytes are hashed in fixed 16 MB pieces on the process's
    torch threads (hashlib releases the GIL), then the pieces' digests in order: a store's
    training rows (130 MB) take 0.07 s on 2 cores instead of 0.1 s.

    An array that maps a whole ``.npy`` file read-only and carries that file's sha256 (the feature
    store's ``load(split, mmap=True)``, as the pipeline reads a store) is identified by it, hashed
    once per process, so a fit unit does not hash the store's rows again (0.07 s, twice a unit).
    """
    header, pieces = hashlib.sha1(), []
    for array in arrays:
        file_sha = _file_sha256(array)
        if file_sha is not None:
            header.update(str(("file", file_sha, array.shape, array.dtype.str)).encode())
            continue
        array = np.ascontiguousarray(array)
        header.update(str((array.shape, array.dtype.str)).encode())
        data = array.reshape(-1).view(np.uint8)
        pieces += [data[k : k + _DIGEST_CHUNK] for k in range(0, len(data), _DIGEST_CHUNK)]
    with ThreadPoolExecutor(max_workers=max(1, min(torch.get_num_threads(), len(pieces)))) as pool:
        for digest in pool.map(lambda piece: hashlib.sha1(piece).digest(), pieces):
            header.update(digest)
    return header.hexdigest()


_FINITE_FILES: set[str] = set()
"""sha256 of the mapped ``.npy`` files this process found finite (content-addressed, so never stale)."""


def all_finite(array: np.ndarray) -> bool:
    """``np.isfinite(array).all()``, found once per process for a mapped file that carries its sha256.

    A fit unit checks its feature store's rows at fit, scoring, contributions and profile; the
    file's sha256 stands for its content, as in :func:`content_digest`.
    """
    file_sha = _file_sha256(array)
    if file_sha is None:
        return bool(np.isfinite(array).all())
    if file_sha not in _FINITE_FILES:
        if not np.isfinite(array).all():
            return False
        _FINITE_FILES.add(file_sha)
    return True


def _file_sha256(array: np.ndarray) -> str | None:
    """The sha256 of the file an array maps whole (its mapping's ``content_sha256``), else None.

    A plain view of all of the mapping (``np.asarray``) maps it too; a slice is a new object
    without the attribute (and not all of the file's bytes): hashed by content.
    """
    whole = array if isinstance(array, np.memmap) else array.base
    file_sha = getattr(whole, "content_sha256", None) if isinstance(whole, np.memmap) else None
    if file_sha is None or array is whole:
        return file_sha
    same = (array.shape, array.strides, array.dtype, array.ctypes.data) == \
        (whole.shape, whole.strides, whole.dtype, whole.ctypes.data)
    return file_sha if same else None


def check_solver_arrays(X: torch.Tensor, layer_of_feature: torch.Tensor, Y: torch.Tensor) -> None:
    """Check shapes, dtypes and devices of a solver's (X, layer_of_feature, Y)."""
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X must be (n_samples, n_features) and Y (n_samples, n_voxels) with the same rows; "
            f"got {tuple(X.shape)} and {tuple(Y.shape)}"
        )
    if not X.is_floating_point() or Y.dtype != X.dtype or Y.device != X.device:
        raise ValueError(f"X and Y must share a float dtype and device; got {X.dtype}/{X.device}, {Y.dtype}/{Y.device}")
    if layer_of_feature.shape != (X.shape[1],) or layer_of_feature.dtype != torch.int64:
        raise ValueError(
            f"layer_of_feature must be a long tensor of shape ({X.shape[1]},); "
            f"got {layer_of_feature.dtype} {tuple(layer_of_feature.shape)}"
        )
