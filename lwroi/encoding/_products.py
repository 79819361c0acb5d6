"""Matrix products of numpy arrays on torch's CPU threads, the ones the solvers use.

A process with two BLAS thread pools, torch's (OpenMP, MKL) and numpy's (OpenBLAS), keeps each
pool's threads spinning for a while after a call; a pipeline that alternates between them has
those idle spinners take the cores the other pool's threads need. The estimator's products (dual
predictions, the layer profile, primal coefficients) ran on numpy, between the solver's torch
work: the kernel paper pipeline (``python scripts/bench.py --methods kernel``, 2 cores) took
64.7 s with them on numpy and 53.5-55.2 s with them here, at the same held-out PCC. Holding
numpy's pool to one thread (``OPENBLAS_NUM_THREADS=1``) recovered part of it, which is how the
cause was found.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The product ``a @ b`` of 2-D numpy arrays, in numpy's result dtype (views and read-only maps allowed)."""
    dtype = np.result_type(a, b)
    with warnings.catch_warnings():  # a store's rows are mapped read-only; torch only reads them here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return (torch.from_numpy(np.asarray(a, dtype=dtype)) @ torch.from_numpy(np.asarray(b, dtype=dtype))).numpy()
