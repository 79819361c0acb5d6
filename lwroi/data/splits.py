"""Sample splits: the held-out test videos, k-fold tuning folds, and the inner validation split.

Every split is a pure function of its sizes and seed, so all ranks and all reruns agree.
Each returns sorted index arrays, so selected rows keep the videos' order, except where an
option asks for the original implementation's order (held-out rows in permutation order).
"""

from __future__ import annotations

import numpy as np

HELDOUT_ORDERS = ("sorted", "permutation")
"""Values of ``data.test_order``."""
FOLD_SPLITS = ("shuffled", "contiguous")
"""Values of ``encoding.fold_split``."""


def heldout_split(n_videos: int, n_test: int, seed: int = 400, order: str = "sorted") -> tuple[np.ndarray, np.ndarray]:
    """Split training-video indices into (train, test) with the original's fixed permutation.

    The original permutes ``range(n_videos)`` with ``numpy.random.RandomState(400)`` and holds
    out the first 100, so with the defaults the test videos are the paper's. Training rows are
    always sorted (the original drops the test rows with ``np.delete``, which keeps the order).

    Parameters
    ----------
    order : {"sorted", "permutation"}
        Order of the test rows: sorted, or the permutation's (the original indexes with the
        permuted indices, so its 16-row validation batches, and the rows its ``drop_last``
        leaves out, follow that order).

    Raises
    ------
    ValueError
        ``n_test`` is not in ``[1, n_videos - 1]``, or ``order`` is unknown.
    """
    if not 1 <= n_test < n_videos:
        raise ValueError(f"n_test = {n_test}: must be between 1 and n_videos - 1 = {n_videos - 1}")
    if order not in HELDOUT_ORDERS:
        raise ValueError(f"test_order={order!r}: must be one of {', '.join(HELDOUT_ORDERS)}")
    perm = np.random.RandomState(seed).permutation(n_videos)
    test = perm[:n_test]
    return np.sort(perm[n_test:]), (np.sort(test) if order == "sorted" else test)


def kfold_splits(
    n_samples: int, n_folds: int, seed: int, split: str = "shuffled"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k-fold (train, validation) position pairs over ``range(n_samples)``.

    Parameters
    ----------
    split : {"shuffled", "contiguous"}
        "shuffled": folds of a permutation seeded by ``seed``; "contiguous": consecutive blocks
        (the first ``n_samples % n_folds`` one row longer), i.e. the original's
        ``KFold(n_folds, shuffle=False)``, where ``seed`` plays no part.

    Raises
    ------
    ValueError
        ``n_folds`` is below 2 or above ``n_samples``, or ``split`` is unknown.
    """
    if not 2 <= n_folds <= n_samples:
        raise ValueError(f"cannot make {n_folds} folds from {n_samples} samples: need 2 <= n_folds <= n_samples")
    if split not in FOLD_SPLITS:
        raise ValueError(f"fold_split={split!r}: must be one of {', '.join(FOLD_SPLITS)}")
    order = np.arange(n_samples) if split == "contiguous" else np.random.default_rng(seed).permutation(n_samples)
    chunks = np.array_split(order, n_folds)
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
