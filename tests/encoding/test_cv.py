"""tune_grid and select_best: one batched solve over grid x folds, scored per fold, chosen deterministically."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.model_selection import KFold

from lwroi.config import SGDOptions
from lwroi.data.splits import kfold_splits
from lwroi.encoding import select_best, solve_sgd, stack_layer_features, tune_grid
from tests.encoding.test_model import planted_layers

SGD = SGDOptions(lr=5e-2, max_epochs=15, patience=5, min_delta=1e-4)
TRAIN = {"solver_params": dataclasses.asdict(SGD)}
ALONE = {"options": SGD}


@pytest.fixture(scope="module")
def data():
    return planted_layers(n=120)


@pytest.fixture(scope="module")
def tuned(data):
    X, Y = data
    return tune_grid(X, Y, wc_grid=[0.01, 100.0], lay_grid=[0.01, 1.0], folds=2, seed=4, device="cpu", **TRAIN)


def test_scores_every_grid_point_as_mean_over_folds(tuned):
    assert tuned.grid == [(0.01, 0.01), (0.01, 1.0), (100.0, 0.01), (100.0, 1.0)]
    for point in tuned.grid:
        assert tuned.fold_scores[point].shape == (2,)
        assert tuned.scores[point] == pytest.approx(tuned.fold_scores[point].mean())
        assert tuned.layer_weights[point].shape == (2, 4)
        assert (tuned.best_epochs[point] <= tuned.n_epochs[point]).all()


def test_weak_penalty_wins_on_low_noise_data(tuned):
    assert tuned.best[0] == 0.01
    assert tuned.best == select_best(tuned.scores)


def test_fold_score_equals_that_fold_trained_alone(tuned, data):
    X, Y = data
    features, layer_of_feature, _ = stack_layer_features(X, "balanced")
    train, val = kfold_splits(len(Y), 2, seed=4)[1]
    alone = solve_sgd(torch.from_numpy(features), torch.from_numpy(layer_of_feature), torch.from_numpy(Y),
                      train_idx=[train], val_idx=[val], wc=[100.0], lay=[1.0], seed=[(4, 1)], **ALONE)  # fmt: skip
    assert tuned.fold_scores[(100.0, 1.0)][1] == pytest.approx(alone.val_mean_r[0], abs=1e-5)


def test_contiguous_folds_train_on_the_originals_kfold(data):
    X, Y = data
    tuned = tune_grid(X, Y, wc_grid=[1.0], lay_grid=[0.1], folds=2, seed=4, device="cpu", fold_split="contiguous",
                      pcc="original", **TRAIN)  # fmt: skip
    features, layer_of_feature, _ = stack_layer_features(X, "balanced")
    for fold, (train, val) in enumerate(KFold(n_splits=2, shuffle=False).split(features)):
        alone = solve_sgd(torch.from_numpy(features), torch.from_numpy(layer_of_feature), torch.from_numpy(Y),
                          train_idx=[train], val_idx=[val], wc=[1.0], lay=[0.1], seed=[(4, fold)], pcc="original",
                          **ALONE)  # fmt: skip
        assert tuned.fold_scores[(1.0, 0.1)][fold] == pytest.approx(alone.val_mean_r[0], abs=1e-6)
    shuffled = tune_grid(X, Y, wc_grid=[1.0], lay_grid=[0.1], folds=2, seed=4, device="cpu", pcc="original", **TRAIN)
    assert not np.allclose(shuffled.fold_scores[(1.0, 0.1)], tuned.fold_scores[(1.0, 0.1)])


def test_select_best_breaks_ties_by_smaller_wc_then_lay():
    scores = {(10.0, 1.0): 0.5, (1.0, 10.0): 0.5, (1.0, 0.1): 0.5, (100.0, 0.1): 0.4}
    assert select_best(scores) == (1.0, 0.1)
    assert select_best({(1.0, 1.0): float("nan"), (10.0, 1.0): -0.2}) == (10.0, 1.0)


def test_unknown_training_option_is_named(data):
    X, Y = data
    with pytest.raises(ValueError, match=r"'learning_rate' is not an option of solver 'sgd'; its options: lr, "):
        tune_grid(X, Y, wc_grid=[1.0], lay_grid=[1.0], folds=2, seed=0, solver_params={"learning_rate": 0.1})
    with pytest.raises(ValueError, match=r"'alphas' is not an option of solver 'sgd' \(it is an option of solver "
                                         r"'kernel'\)"):
        tune_grid(X, Y, wc_grid=[1.0], lay_grid=[1.0], folds=2, seed=0, solver_params={"alphas": [1.0]})
    with pytest.raises(TypeError, match="learning_rate"):
        tune_grid(X, Y, wc_grid=[1.0], lay_grid=[1.0], folds=2, seed=0, learning_rate=0.1)


def test_repeated_grid_values_are_rejected(data):
    X, Y = data
    with pytest.raises(ValueError, match=r"wc_grid=\[1.0, 1.0\]: must be a non-empty list of distinct values"):
        tune_grid(X, Y, wc_grid=[1.0, 1.0], lay_grid=[1.0], folds=2, seed=0)
