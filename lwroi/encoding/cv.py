"""Hyper-parameter search: every (wc, lay) grid point times every CV fold in one batched solve."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lwroi.config import SolverOptions
from lwroi.data.splits import kfold_splits
from lwroi.encoding._solvers import get_solver, make_options
from lwroi.encoding.devices import resolve_device
from lwroi.encoding.model import stack_layer_features

GridPoint = tuple[float, float]


@dataclass(frozen=True)
class TuneResult:
    """Cross-validated scores of a (wc, lay) grid.

    Attributes
    ----------
    grid : list of (wc, lay)
        In the order trained: wc-major, as ``itertools.product(wc_grid, lay_grid)``.
    scores : dict of (wc, lay) to float
        Mean over folds of the fold's validation score: mean voxel correlation (the solver's
        ``pcc`` kind) of the restored best state on the fold's held-out rows (the same rows
        that decided early stopping, as in the original).
    fold_scores, best_epochs, n_epochs : dict of (wc, lay) to array of shape (n_folds,)
    layer_weights : dict of (wc, lay) to array of shape (n_folds, n_layers)
    best : (wc, lay)
        ``select_best(scores)``.
    """

    grid: list[GridPoint]
    scores: dict[GridPoint, float]
    fold_scores: dict[GridPoint, np.ndarray]
    best_epochs: dict[GridPoint, np.ndarray]
    n_epochs: dict[GridPoint, np.ndarray]
    layer_weights: dict[GridPoint, np.ndarray]
    best: GridPoint


GridModel = tuple[float, float, int]
"""One model of a CV grid: (wc, lay, fold)."""


def evaluate_grid_models(
    X_layers: Sequence[np.ndarray],
    Y: np.ndarray,
    models: Sequence[GridModel],
    *,
    folds: int,
    seed: int,
    device: str | torch.device = "auto",
    solver: str = "sgd",
    solver_params: Mapping[str, object] | SolverOptions | None = None,
    pcc: str = "pearson",
    layer_scaling: str = "balanced",
    fold_split: str = "shuffled",
    state: dict | None = None,
    on_epoch: Callable[[int, Callable[[], dict]], None] | None = None,
    workspace: dict | None = None,
) -> dict[str, np.ndarray]:
    """Train any slice of a CV grid in ONE batched solve and score each model on its fold.

    Model (wc, lay, fold) trains on the other folds of ``kfold_splits(n, folds, seed, fold_split)``
    with the stream seeded by ``(seed, fold)``, so its result does not depend on which other
    models share the solve: a grid cut into several work units gives the same numbers as the
    whole grid. ``fold_split="contiguous"`` is the original's ``KFold(folds, shuffle=False)`` over
    the rows as given. ``solver_params`` are the solver's own options (see
    ``lwroi.encoding.make_options``: an option it does not have is refused); ``pcc`` is the
    correlation of the scores; ``workspace`` is passed to the solver (see ``lwroi.encoding.SOLVERS``).

    Returns
    -------
    dict of str to array of shape (n_models,) or (n_models, n_layers)
        "score" (mean voxel correlation, the solver's ``pcc`` kind, of the restored best state
        on the fold's held-out rows), "best_epoch", "n_epochs", "layer_weights".
    """
    entry, options = get_solver(solver), make_options(solver, solver_params)
    Y = np.asarray(Y, dtype=np.float32)
    features, layer_of_feature, _ = stack_layer_features(X_layers, layer_scaling)
    if features.shape[0] != Y.shape[0]:
        raise ValueError(f"X_layers have {features.shape[0]} rows but Y has {Y.shape[0]}")
    splits = kfold_splits(Y.shape[0], folds, seed, fold_split)
    dev = resolve_device(device)
    result = entry.solve(
        torch.from_numpy(features).to(dev),
        torch.from_numpy(layer_of_feature).to(dev),
        torch.from_numpy(Y).to(dev),
        train_idx=[splits[fold][0] for _, _, fold in models],
        val_idx=[splits[fold][1] for _, _, fold in models],
        wc=[float(w) for w, _, _ in models],
        lay=[float(a) for _, a, _ in models],
        seed=[(seed, fold) for _, _, fold in models],
        options=options,
        pcc=pcc,
        primal=False,  # the grid needs scores only
        state=state,
        on_epoch=on_epoch,
        workspace=workspace,
    )
    return {"score": result.val_mean_r, "best_epoch": result.best_step, "n_epochs": result.n_steps,
            "layer_weights": result.layer_weights}


def tune_grid(
    X_layers: Sequence[np.ndarray],
    Y: np.ndarray,
    *,
    wc_grid: Sequence[float],
    lay_grid: Sequence[float],
    folds: int,
    seed: int,
    **options: object,
) -> TuneResult:
    """Score every (wc, lay) pair by k-fold CV over the rows, training all pairs x folds at once.

    Model g = grid_index * folds + fold (see :func:`evaluate_grid_models`; ``options`` are its
    keyword arguments: device, solver, solver_params, pcc, layer_scaling, fold_split, state, on_epoch,
    workspace).
    """
    for name, values in (("wc_grid", wc_grid), ("lay_grid", lay_grid)):
        if len(values) == 0 or len(set(values)) != len(values):
            raise ValueError(f"{name}={list(values)}: must be a non-empty list of distinct values")
    grid = [(float(w), float(a)) for w, a in itertools.product(wc_grid, lay_grid)]
    models = [(w, a, fold) for w, a in grid for fold in range(folds)]
    result = evaluate_grid_models(X_layers, Y, models, folds=folds, seed=seed, **options)

    def per_point(values: np.ndarray) -> dict[GridPoint, np.ndarray]:
        return {point: values[k * folds : (k + 1) * folds] for k, point in enumerate(grid)}

    fold_scores = per_point(result["score"])
    scores = {point: float(v.mean()) for point, v in fold_scores.items()}
    return TuneResult(
        grid=grid,
        scores=scores,
        fold_scores=fold_scores,
        best_epochs=per_point(result["best_epoch"]),
        n_epochs=per_point(result["n_epochs"]),
        layer_weights=per_point(result["layer_weights"]),
        best=select_best(scores),
    )


def select_best(scores: dict[GridPoint, float]) -> GridPoint:
    """Pick the (wc, lay) with the highest score; ties go to the smaller wc, then the smaller lay.

    A NaN score ranks below every number, so one failed grid point cannot win.
    """
    if not scores:
        raise ValueError("select_best: no scores to choose from")

    def rank(point: GridPoint) -> tuple[float, float, float]:
        score = scores[point]
        return (-score if np.isfinite(score) else np.inf, point[0], point[1])

    return min(scores, key=rank)
