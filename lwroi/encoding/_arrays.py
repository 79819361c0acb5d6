"""Input checks every solver shares, so each fails before any work with the same message."""

from __future__ import annotations

import torch


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
