"""Sample splits: the held-out test videos, k-fold tuning folds, and the inner validation split.

Every split is a pure function of its sizes and seed, so all ranks and all reruns agree.
Each returns sorted index arrays, so selected rows keep the videos' order.
"""

from __future__ import annotations

import numpy as np


def heldout_split(n_videos: int, n_test: int, seed: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Split training-video indices into (train, test) with the original's fixed permutation.

    The original permutes ``range(n_videos)`` with ``numpy.random.RandomState(400)`` and holds
    out the first 100, so with the defaults the test videos are the paper's.

    Raises
    ------
    ValueError
        ``n_test`` is not in ``[1, n_videos - 1]``.
    """
    if not 1 <= n_test < n_videos:
        raise ValueError(f"n_test = {n_test}: must be between 1 and n_videos - 1 = {n_videos - 1}")
    perm = np.random.RandomState(seed).permutation(n_videos)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def kfold_splits(n_samples: int, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k-fold (train, validation) position pairs over ``range(n_samples)``.

    Raises
    ------
    ValueError
        ``n_folds`` is below 2 or above ``n_samples``.
    """
    if not 2 <= n_folds <= n_samples:
        raise ValueError(f"cannot make {n_folds} folds from {n_samples} samples: need 2 <= n_folds <= n_samples")
    perm = np.random.default_rng(seed).permutation(n_samples)
    chunks = np.array_split(perm, n_folds)
    return [
        (np.sort(np.concatenate([c for j, c in enumerate(chunks) if j != k])), np.sort(chunks[k]))
        for k in range(n_folds)
    ]


def inner_validation_split(n_samples: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) positions for early stopping inside the training data.

    The validation part has at least 2 samples (a Pearson r needs two) and leaves at least 2 to fit.

    Raises
    ------
    ValueError
        Fewer than 4 samples, or ``fraction`` not in (0, 1).
    """
    if n_samples < 4 or not 0 < fraction < 1:
        raise ValueError(f"n_samples = {n_samples}, fraction = {fraction}: need n_samples >= 4 and 0 < fraction < 1")
    n_val = min(max(2, round(fraction * n_samples)), n_samples - 2)
    perm = np.random.default_rng(seed).permutation(n_samples)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
