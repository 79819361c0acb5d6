"""Encoding accuracy: the correlation between measured and predicted responses, per voxel (column).

Two definitions, chosen by a run's ``encoding.pcc`` and used for every correlation of that run
(early stopping, tuning, held-out scores, layer contributions):

- ``"pearson"``: Pearson r, ``sum(t p) / sqrt(sum(t^2) sum(p^2))`` over the centred columns.
- ``"original"``: the original implementation's ``vectorized_correlation``, the covariance with
  Bessel's correction over the product of the ddof-0 standard deviations, each plus 1e-8:
  ``(sum(t p) / (n - 1)) / ((std_t + 1e-8) (std_p + 1e-8))``, i.e. about r * n / (n - 1), so a
  score over 16-row batches is ~7% above r.

A column whose values are all equal (a constant voxel, or a model that predicts a constant) has no
defined correlation; it scores 0 rather than NaN, so means over voxels stay finite and a
degenerate model ranks as "no better than chance" instead of poisoning a grid search.

Both are written once, in torch (batched over leading dimensions, with a row mask, on the
training device); the numpy form runs the same code in float64 on the CPU.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import torch

from lwroi.config import PCCKind

PCC_KINDS = get_args(PCCKind)

_ORIGINAL_STD_EPS = 1e-8
"""Added to each standard deviation by the original's ``vectorized_correlation``."""


def pearson_r_columns(Y_true: np.ndarray, Y_pred: np.ndarray, *, kind: str = "pearson") -> np.ndarray:
    """Correlation of each column of ``Y_true`` with the same column of ``Y_pred``.

    Parameters
    ----------
    Y_true, Y_pred : array of shape (n_samples, n_voxels)
        Measured and predicted responses. Computed in float64.
    kind : {"pearson", "original"}
        Which correlation (see the module docstring).

    Returns
    -------
    r : array of shape (n_voxels,)
        Per-column correlation; 0 where either column is constant.
    """
    # writable arrays: torch cannot wrap a read-only one (a memory-mapped store) without a warning
    Y_true = np.require(Y_true, dtype=np.float64, requirements="W")
    Y_pred = np.require(Y_pred, dtype=np.float64, requirements="W")
    if Y_true.ndim != 2 or Y_true.shape != Y_pred.shape:
        raise ValueError(
            f"Y_true and Y_pred must be 2-D arrays of the same shape (n_samples, n_voxels); "
            f"got {Y_true.shape} and {Y_pred.shape}"
        )
    if Y_true.shape[0] < 2:
        raise ValueError(f"Pearson r needs at least 2 samples; got {Y_true.shape[0]}")
    return pearson_r_columns_torch(torch.from_numpy(Y_true), torch.from_numpy(Y_pred), kind=kind).numpy()


def mean_pcc(Y_true: np.ndarray, Y_pred: np.ndarray, *, kind: str = "pearson") -> float:
    """Mean over voxels of the per-voxel correlation: the ROI's encoding accuracy."""
    return float(pearson_r_columns(Y_true, Y_pred, kind=kind).mean())


def pearson_r_columns_torch(
    Y_true: torch.Tensor, Y_pred: torch.Tensor, mask: torch.Tensor | None = None, *, kind: str = "pearson"
) -> torch.Tensor:
    """Per-column correlation on the tensors' device, batched over leading dimensions.

    Stays on the device so training loops score validation sets without a host round-trip.

    Parameters
    ----------
    Y_true, Y_pred : tensor of shape (..., n_samples, n_voxels)
        E.g. (n_models, n_samples, n_voxels).
    mask : tensor of shape (..., n_samples), optional
        1 for rows that count, 0 for padding rows (models with validation sets of different
        sizes share one padded tensor). Every slice needs at least 2 rows that count.
    kind : {"pearson", "original"}
        Which correlation (see the module docstring); n is the number of rows that count.

    Returns
    -------
    r : tensor of shape (..., n_voxels)
        0 where a column is constant over the rows that count.
    """
    if kind not in PCC_KINDS:
        raise ValueError(f"pcc={kind!r}: must be one of {', '.join(PCC_KINDS)}")
    if Y_true.shape != Y_pred.shape or Y_true.ndim < 2:
        raise ValueError(
            f"Y_true and Y_pred must have the same shape (..., n_samples, n_voxels); "
            f"got {tuple(Y_true.shape)} and {tuple(Y_pred.shape)}"
        )
    if mask is None:
        mask = Y_true.new_ones(Y_true.shape[:-1])
    w = mask.to(Y_true.dtype).unsqueeze(-1)
    count = w.sum(dim=-2)
    t = (Y_true - (Y_true * w).sum(dim=-2, keepdim=True) / count.unsqueeze(-2)) * w
    p = (Y_pred - (Y_pred * w).sum(dim=-2, keepdim=True) / count.unsqueeze(-2)) * w
    cross, ss_true, ss_pred = (t * p).sum(dim=-2), (t * t).sum(dim=-2), (p * p).sum(dim=-2)
    if kind == "pearson":
        numerator, denom = cross, torch.sqrt(ss_true * ss_pred)
    else:
        numerator = cross / (count - 1)
        denom = (torch.sqrt(ss_true / count) + _ORIGINAL_STD_EPS) * (torch.sqrt(ss_pred / count) + _ORIGINAL_STD_EPS)
    constant = _is_constant(Y_true, w) | _is_constant(Y_pred, w)
    r = numerator / torch.where(constant, torch.ones_like(denom), denom)
    return torch.where(constant, torch.zeros_like(r), r)


def _is_constant(Y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Whether each column's counted values are all equal (exactly, like ``np.ptp == 0``)."""
    valid = w > 0
    inf = torch.tensor(float("inf"), dtype=Y.dtype, device=Y.device)
    high = torch.where(valid, Y, -inf).amax(dim=-2)
    low = torch.where(valid, Y, inf).amin(dim=-2)
    return high == low
