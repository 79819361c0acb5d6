"""Encoding accuracy: Pearson r between measured and predicted responses, per voxel (column).

A column whose values are all equal (a constant voxel, or a model that predicts a constant) has no
defined correlation; it scores r = 0 rather than NaN, so means over voxels stay finite and a
degenerate model ranks as "no better than chance" instead of poisoning a grid search.
"""

from __future__ import annotations

import numpy as np
import torch


def pearson_r_columns(Y_true: np.ndarray, Y_pred: np.ndarray) -> np.ndarray:
    """Pearson r of each column of ``Y_true`` with the same column of ``Y_pred``.

    Parameters
    ----------
    Y_true, Y_pred : array of shape (n_samples, n_voxels)
        Measured and predicted responses. Computed in float64.

    Returns
    -------
    r : array of shape (n_voxels,)
        Per-column correlation; 0 where either column is constant.
    """
    Y_true = np.asarray(Y_true, dtype=np.float64)
    Y_pred = np.asarray(Y_pred, dtype=np.float64)
    if Y_true.ndim != 2 or Y_true.shape != Y_pred.shape:
        raise ValueError(
            f"Y_true and Y_pred must be 2-D arrays of the same shape (n_samples, n_voxels); "
            f"got {Y_true.shape} and {Y_pred.shape}"
        )
    if Y_true.shape[0] < 2:
        raise ValueError(f"Pearson r needs at least 2 samples; got {Y_true.shape[0]}")
    t = Y_true - Y_true.mean(axis=0)
    p = Y_pred - Y_pred.mean(axis=0)
    denom = np.sqrt((t * t).sum(axis=0) * (p * p).sum(axis=0))
    constant = (np.ptp(Y_true, axis=0) == 0) | (np.ptp(Y_pred, axis=0) == 0)
    r = (t * p).sum(axis=0) / np.where(constant, 1.0, denom)
    r[constant] = 0.0
    return r


def mean_pcc(Y_true: np.ndarray, Y_pred: np.ndarray) -> float:
    """Mean over voxels of the per-voxel Pearson r: the ROI's encoding accuracy."""
    return float(pearson_r_columns(Y_true, Y_pred).mean())


def pearson_r_columns_torch(
    Y_true: torch.Tensor, Y_pred: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-column Pearson r on the tensors' device, batched over leading dimensions.

    Stays on the device so training loops score validation sets without a host round-trip.

    Parameters
    ----------
    Y_true, Y_pred : tensor of shape (..., n_samples, n_voxels)
        E.g. (n_models, n_samples, n_voxels).
    mask : tensor of shape (..., n_samples), optional
        1 for rows that count, 0 for padding rows (models with validation sets of different
        sizes share one padded tensor). Every slice needs at least 2 rows that count.

    Returns
    -------
    r : tensor of shape (..., n_voxels)
        0 where a column is constant over the rows that count.
    """
    if Y_true.shape != Y_pred.shape or Y_true.ndim < 2:
        raise ValueError(
            f"Y_true and Y_pred must have the same shape (..., n_samples, n_voxels); "
            f"got {tuple(Y_true.shape)} and {tuple(Y_pred.shape)}"
        )
    if mask is None:
        mask = Y_true.new_ones(Y_true.shape[:-1])
    w = mask.to(Y_true.dtype).unsqueeze(-1)
    count = w.sum(dim=-2)
    t = Y_true - (Y_true * w).sum(dim=-2, keepdim=True) / count.unsqueeze(-2)
    p = Y_pred - (Y_pred * w).sum(dim=-2, keepdim=True) / count.unsqueeze(-2)
    t = t * w
    p = p * w
    denom = torch.sqrt((t * t).sum(dim=-2) * (p * p).sum(dim=-2))
    constant = _is_constant(Y_true, w) | _is_constant(Y_pred, w)
    r = (t * p).sum(dim=-2) / torch.where(constant, torch.ones_like(denom), denom)
    return torch.where(constant, torch.zeros_like(r), r)


def _is_constant(Y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Whether each column's counted values are all equal (exactly, like ``np.ptp == 0``)."""
    valid = w > 0
    inf = torch.tensor(float("inf"), dtype=Y.dtype, device=Y.device)
    high = torch.where(valid, Y, -inf).amax(dim=-2)
    low = torch.where(valid, Y, inf).amin(dim=-2)
    return high == low
