"""Whole-brain maps: per-voxel scores of the WB ROI put back into the scanner volume as NIfTI.

The WB responses list the voxels where ``voxel_mask`` is 1, in C order (as the Algonauts
development kit indexes them), so ``volume[mask == 1] = scores`` restores their places and the
map opens in any NIfTI viewer (FSLeyes, nilearn, MRIcroGL). nibabel is imported only to write a
map, so the tables of ``lwroi summarize`` need no nibabel (a login node's lwroi may lack it).
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lwroi._io import atomic_write_bytes

log = logging.getLogger("lwroi")


def scores_volume(scores: np.ndarray, voxel_mask: np.ndarray) -> np.ndarray:
    """A float32 volume of ``voxel_mask``'s shape: the scores at the mask's voxels, NaN elsewhere.

    Raises
    ------
    ValueError
        The mask does not select exactly one voxel per score.
    """
    mask = np.asarray(voxel_mask) == 1
    scores = np.asarray(scores, dtype=np.float32).ravel()
    if int(mask.sum()) != scores.size:
        raise ValueError(f"voxel_mask selects {int(mask.sum())} voxels but there are {scores.size} scores")
    volume = np.full(mask.shape, np.nan, dtype=np.float32)
    volume[mask] = scores
    return volume


def volume_affine(flat: Sequence[float]) -> np.ndarray:
    """The 4x4 voxel-to-world affine from ``data.wb_affine`` (16 values, row-major); identity if empty."""
    if not flat:
        log.warning("data.wb_affine is not set: the NIfTI maps get an identity affine (voxel = mm), so they "
                    "will not align with an anatomical image; copy the affine of the data's own NIfTI")
        return np.eye(4)
    return np.asarray(flat, dtype=np.float64).reshape(4, 4)


def nifti_writable() -> bool:
    """Whether :func:`write_nifti` can run here: nibabel is importable."""
    return importlib.util.find_spec("nibabel") is not None


def write_nifti(path: str | Path, volume: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``volume`` as a gzipped NIfTI-1 file atomically; return its path."""
    import nibabel

    image = nibabel.Nifti1Image(np.asarray(volume, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm", "sec")
    atomic_write_bytes(path, gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))
    return Path(path)
