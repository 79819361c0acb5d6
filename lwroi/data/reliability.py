"""Noise ceilings from the repetitions: how well any model could predict a voxel's averaged response.

A voxel's responses to R repetitions of each video share the stimulus-driven signal and differ
by noise. The correlation between single repetitions over videos, ``r1``, estimates the share
of a single repetition's variance that is signal; the Spearman-Brown formula carries it to the
mean of R repetitions (the response lwroi fits and scores)::

    reliability = R r1 / (1 + (R - 1) r1),    ceiling = sqrt(reliability)

``ceiling`` is the expected Pearson r between the noise-free signal and the averaged response,
so ``r / ceiling`` (the Algonauts challenge's noise-normalised score) is 1 for a perfect model.
r1 is the mean over every pair of repetitions, each pair over the videos where both are finite:
with R = 2 this is the classic split-half reliability, and with more repetitions the finest split.
"""

from __future__ import annotations

import itertools

import numpy as np

MIN_VIDEOS = 3
"""Fewest videos with both repetitions finite for a pair to count for a voxel."""
CHUNK_ELEMENTS = 1 << 22
"""Values (videos x repetitions x voxels) converted to float64 at a time."""


def split_half_reliability(repetitions: np.ndarray) -> np.ndarray:
    """Reliability of each voxel's repetition mean, array of shape (n_voxels,).

    Parameters
    ----------
    repetitions : array of shape (n_videos, n_repetitions, n_voxels)
        NaN marks a missing repetition.

    Returns
    -------
    reliability : float64 array of shape (n_voxels,)
        Spearman-Brown corrected where the mean pairwise r1 is positive; where it is not
        (no reliable signal) the raw r1 (<= 0), so callers can count such voxels; NaN where no
        pair of repetitions has ``MIN_VIDEOS`` finite videos with any variance.

    Raises
    ------
    ValueError
        ``repetitions`` is not 3-D or has fewer than 2 repetitions.
    """
    reps = np.asarray(repetitions)
    if reps.ndim != 3 or reps.shape[1] < 2:
        raise ValueError(f"repetitions: expected (n_videos, n_repetitions >= 2, n_voxels), got shape {reps.shape}")
    n_videos, n_reps, n_voxels = reps.shape
    chunk = max(1, CHUNK_ELEMENTS // max(1, n_videos * n_reps))  # a whole-brain ROI in float64 is ~0.5 GB
    out = np.empty(n_voxels)
    for start in range(0, n_voxels, chunk):
        out[start : start + chunk] = _reliability(reps[:, :, start : start + chunk].astype(np.float64))
    return out


def _reliability(reps: np.ndarray) -> np.ndarray:
    n_reps = reps.shape[1]
    pairs = [pearson_columns(reps[:, i], reps[:, j]) for i, j in itertools.combinations(range(n_reps), 2)]
    stacked = np.stack(pairs)
    counted = np.isfinite(stacked).sum(0)
    r1 = np.divide(np.nansum(stacked, axis=0), counted, out=np.full(stacked.shape[1], np.nan), where=counted > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corrected = n_reps * r1 / (1.0 + (n_reps - 1) * r1)
    return np.where(r1 > 0, corrected, r1)


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each column pair over the rows where both are finite; NaN if fewer than MIN_VIDEOS or constant."""
    both = np.isfinite(a) & np.isfinite(b)
    n = both.sum(0)
    a, b = np.where(both, a, 0.0), np.where(both, b, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ma, mb = a.sum(0) / n, b.sum(0) / n
        da, db = np.where(both, a - ma, 0.0), np.where(both, b - mb, 0.0)
        r = (da * db).sum(0) / np.sqrt((da * da).sum(0) * (db * db).sum(0))
    return np.where((n >= MIN_VIDEOS) & np.isfinite(r), r, np.nan)


def noise_normalised(scores: np.ndarray, reliability: np.ndarray) -> np.ndarray:
    """``r / sqrt(reliability)`` per voxel; NaN where the reliability is not positive or the score is NaN."""
    rel = np.asarray(reliability, dtype=np.float64)
    ceiling = np.sqrt(np.where(rel > 0, rel, np.nan))
    return np.asarray(scores, dtype=np.float64) / ceiling
