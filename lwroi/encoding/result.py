"""What every solver returns: the fitted state of G models, in terms no solver owns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SeedLike = int | Sequence[int | Sequence[int]]
"""A seed for all G models (model g gets the stream of (seed, g)) or one seed per model."""


@dataclass(frozen=True)
class SolverResult:
    """The G models a solver fitted over the rows of one feature matrix; the estimator and the grid search read it.

    A "step" is the solver's unit of progress: an epoch of the sgd solver, a candidate layer
    weighting evaluated by the kernel solver's search.

    Attributes
    ----------
    layer_weights : array of shape (n_models, n_layers)
        Non-negative layer weights of the returned state.
    coef : array of shape (n_models, n_features, n_voxels), or None
        Effective coefficients on the solver's input X, layer weights folded in, so a prediction
        is ``X @ coef + intercept``. None when the caller asked for the dual form alone (``primal=False``).
    intercept : array of shape (n_models, n_voxels)
    best_step : int array of shape (n_models,)
        Step (1-based) of the returned state.
    n_steps : int array of shape (n_models,)
        Steps each model ran (the sgd solver: epochs before it stopped, or ``max_epochs``).
    best_score : array of shape (n_models,)
        The solver's own criterion at the returned state (sgd: its early-stopping metric;
        kernel: the mean voxel GCV R^2 of its search).
    val_mean_r : array of shape (n_models,)
        Mean voxel correlation (the ``pcc`` kind) of the returned state over each model's
        validation rows, whatever the solver's criterion, so solvers and metrics compare alike;
        NaN when a model has fewer than 2 validation rows.
    history : dict of str to array of shape (n_models, n_steps_run)
        Per-step traces (sgd: ``"val_score"``, ``"train_loss"``; kernel: ``"cv_score"``); NaN after a model stopped.
    dual_coef : array of shape (n_models, n_samples, n_voxels), optional
        Dual-form solvers only: coefficients on X's rows (zero outside the training rows) with
        ``coef = (layer_weights[layer_of_feature] ** 2)[:, None] * X.T @ dual_coef``.
    layer_kernels : float64 array of shape (n_layers, n_samples, n_samples), optional
        Dual-form solvers only: each layer's Gram matrix ``X_l @ X_l.T`` of X's rows, which the
        solver had anyway; the layer terms of the training rows are made of them (shared with the
        solver's cache, never written).
    """

    layer_weights: np.ndarray
    coef: np.ndarray | None
    intercept: np.ndarray
    best_step: np.ndarray
    n_steps: np.ndarray
    best_score: np.ndarray
    val_mean_r: np.ndarray
    history: dict[str, np.ndarray]
    dual_coef: np.ndarray | None = None
    layer_kernels: np.ndarray | None = None
