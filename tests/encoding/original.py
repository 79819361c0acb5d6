"""The original implementation's training and evaluation, transcribed as a test oracle.

Written from QYiZhou/LWNeuralEncoding (``code/perform_encoding.py``: ``vectorized_correlation``,
``FC_reg``, ``predict_fmri_fc2``, the ``hyper_tune`` and ``train`` modes and the layer
contributions; ``code/earlystopping.py``; ``code/aver_from_csv.py``) in plain torch with autograd:
``nn.Linear`` on the input scaled by |a| repeated per layer, ``nn.MSELoss``, ``optim.Adam``,
``DataLoader``s, the per-batch PCC in numpy. Nothing of lwroi's training code is used.

What the original leaves to chance is an argument, so a test can replay another run's draws:
``initial_weight`` (the ``xavier_normal_`` draw of the ``nn.Linear`` weight) and
``epoch_order`` (the permutation the training loader's ``shuffle=True`` draws each epoch).

Differences from the original that change no number: CPU instead of CUDA, the best state kept
in memory instead of ``model.pth``, no tensorboard or CSV files (values are returned), and only
the ``pcc`` early-stopping metric (the paper's).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import KFold
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

EpochOrder = Callable[[int], Sequence[int]]
"""epoch (0-based) -> the permutation of the training rows the shuffling loader visits."""


def vectorized_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-column covariance over n - 1, divided by the ddof-0 standard deviations plus 1e-8."""
    centered_x = x - x.mean(axis=0, keepdims=True)
    centered_y = y - y.mean(axis=0, keepdims=True)
    covariance = (centered_x * centered_y).sum(axis=0, keepdims=True) / (x.shape[0] - 1)
    x_std = x.std(axis=0, keepdims=True) + 1e-8
    y_std = y.std(axis=0, keepdims=True) + 1e-8
    return (covariance / (x_std * y_std)).ravel()


class FCReg(nn.Module):
    """``FC_reg``: one ``nn.Linear`` applied to the input times |a|, a repeated over each layer's columns."""

    def __init__(self, n_voxels: int, dim_list: Sequence[int], initial_weight: torch.Tensor) -> None:
        super().__init__()
        self.dim_list = list(dim_list)
        self.model = nn.Linear(sum(self.dim_list), n_voxels)
        self.layer_weight = nn.Parameter(torch.ones(len(self.dim_list)) / len(self.dim_list))
        with torch.no_grad():  # weights_init: xavier_normal_ (drawn by the caller), bias 0
            self.model.weight.copy_(initial_weight)
            self.model.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positive = torch.abs(self.layer_weight)
        fil = torch.cat([positive[i].repeat(d) for i, d in enumerate(self.dim_list)], 0).unsqueeze(0)
        return self.model(torch.mul(x, fil))

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.forward(torch.from_numpy(np.asarray(x)).float()).numpy()


class EarlyStopping:
    """``earlystopping.EarlyStopping`` with the checkpoint kept in memory."""

    def __init__(self, patience: int, delta: float) -> None:
        self.patience, self.delta = patience, delta
        self.counter, self.best_score, self.early_stop, self.epoch = 0, None, False, 0
        self.state: dict | None = None

    def __call__(self, val_loss: float, model: nn.Module, epoch: int) -> None:
        score = -val_loss
        if self.best_score is None:
            self.best_score, self.epoch = score, epoch
            self.state = copy.deepcopy(model.state_dict())
        elif score < self.best_score + self.delta:
            self.counter += 1
            if self.counter >= self.patience:
                self.early_stop = True
        else:
            self.best_score, self.epoch, self.counter = score, epoch, 0
            self.state = copy.deepcopy(model.state_dict())


@dataclass
class Trained:
    """What ``predict_fmri_fc2`` returns (the model and ``early_stopping.epoch``), plus its trace."""

    model: FCReg
    best_epoch: int
    """0-based, as the original's ``early_stopping.epoch``."""
    n_epochs: int
    best_score: float
    val_scores: list[float]
    train_losses: list[float]


@dataclass(frozen=True)
class Settings:
    """The original's command-line settings of one run."""

    lr: float = 1e-4
    batch_size: int = 16
    epochs: int = 500
    patience: int = 30
    delta: float = 1e-3


def _loader(x: np.ndarray, y: np.ndarray, batch_size: int, sampler: Sequence[int] | None = None) -> DataLoader:
    data = TensorDataset(torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(y)))
    return DataLoader(data, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=True)


def predict_fmri_fc2(
    train_x: np.ndarray,
    val_x: np.ndarray,
    train_y: np.ndarray,
    val_y: np.ndarray,
    *,
    dim_list: Sequence[int],
    w_coe: float,
    layer_coe: float,
    settings: Settings,
    initial_weight: torch.Tensor,
    epoch_order: EpochOrder,
) -> Trained:
    """Train with Adam on 16-row shuffled batches (last short one dropped), early stopping on val PCC."""
    reg = FCReg(train_y.shape[1], dim_list, initial_weight)
    optimizer = optim.Adam(reg.parameters(), lr=settings.lr)
    mseloss = nn.MSELoss()
    early_stopping = EarlyStopping(settings.patience, settings.delta)
    val_loader = _loader(val_x, val_y, settings.batch_size)
    val_scores, train_losses = [], []
    n_epochs = 0
    for epoch in range(settings.epochs):
        n_epochs = epoch + 1
        train_loader = _loader(train_x, train_y, settings.batch_size, sampler=list(epoch_order(epoch)))
        tot_losses, n_batches = 0.0, 0
        for activ, fmri in train_loader:
            pred_fmri = reg(activ.float())
            loss = mseloss(pred_fmri, fmri.float())
            w_reg = torch.sqrt(torch.mean(reg.model.weight**2, 1)).mean()
            layer_spar_reg = torch.mean(torch.abs(reg.layer_weight))
            tot_loss = loss + w_coe * w_reg + layer_coe * layer_spar_reg
            tot_losses += tot_loss.item()
            reg.zero_grad()
            tot_loss.backward()
            optimizer.step()
            n_batches += 1
        train_losses.append(tot_losses / n_batches)
        pccs, n_batches = 0, 0
        for activ, fmri in val_loader:
            pred_fmri = reg(activ.float())
            pccs += vectorized_correlation(fmri.float().numpy(), pred_fmri.detach().numpy()).mean()
            n_batches += 1
        valid_loss = -pccs / n_batches
        val_scores.append(float(-valid_loss))
        early_stopping(valid_loss, reg, epoch)
        if early_stopping.early_stop:
            break
    reg.load_state_dict(early_stopping.state)
    return Trained(reg, early_stopping.epoch, n_epochs, float(early_stopping.best_score), val_scores, train_losses)


Draws = Callable[[float, float, int, int], tuple[torch.Tensor, EpochOrder]]
"""(w_coe, layer_coe, fold, n_train_rows) -> (initial_weight, epoch_order) of that training run."""


def hyper_tune(
    train_x: np.ndarray,
    train_y: np.ndarray,
    *,
    dim_list: Sequence[int],
    grid: Sequence[tuple[float, float]],
    fold_num: int,
    settings: Settings,
    draws: Draws,
) -> dict[tuple[float, float], float]:
    """Mode ``hyper_tune``: per (wc, lay), mean over ``KFold(fold_num, shuffle=False)`` folds of the fold's PCC."""
    scores = {}
    for w_coe, layer_coe in grid:
        score_avg = 0.0
        for i, (train_idx, val_idx) in enumerate(KFold(n_splits=fold_num, shuffle=False).split(train_x)):
            initial_weight, epoch_order = draws(w_coe, layer_coe, i, len(train_idx))
            trained = predict_fmri_fc2(train_x[train_idx], train_x[val_idx], train_y[train_idx], train_y[val_idx],
                                       dim_list=dim_list, w_coe=w_coe, layer_coe=layer_coe, settings=settings,
                                       initial_weight=initial_weight, epoch_order=epoch_order)  # fmt: skip
            score_avg += vectorized_correlation(train_y[val_idx], trained.model.predict(train_x[val_idx])).mean()
        scores[(w_coe, layer_coe)] = score_avg / fold_num
    return scores


def best_hyper(scores: dict[tuple[float, float], float]) -> tuple[float, float]:
    """Mode ``train``'s choice: the highest score of the tuning CSV, the first row on ties."""
    best = max(scores.values())
    return next(point for point, score in scores.items() if score == best)


@dataclass
class Evaluated:
    """Mode ``train`` of one subject x ROI: the held-out scores and the layer contributions."""

    trained: Trained
    voxel_scores: np.ndarray
    contributions: np.ndarray


def evaluate(trained: Trained, test_x: np.ndarray, test_y: np.ndarray) -> Evaluated:
    """Mode ``train`` after the fit: per-voxel test PCC, and each layer's share with the others zeroed."""
    model = trained.model
    score = vectorized_correlation(test_y, model.predict(test_x))
    bounds = np.cumsum([0, *model.dim_list])
    per_layer = []
    for layer in range(len(model.dim_list)):
        only = np.zeros_like(test_x)
        only[:, bounds[layer] : bounds[layer + 1]] = test_x[:, bounds[layer] : bounds[layer + 1]]
        per_layer.append(vectorized_correlation(test_y, model.predict(only)).mean())
    total = sum(per_layer)
    return Evaluated(trained, score, np.array([s / total for s in per_layer]))


def train_and_evaluate(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    dim_list: Sequence[int],
    w_coe: float,
    layer_coe: float,
    settings: Settings,
    initial_weight: torch.Tensor,
    epoch_order: EpochOrder,
) -> Evaluated:
    """Mode ``train``: fit on all training rows, early stopping on and scoring the test rows."""
    trained = predict_fmri_fc2(train_x, test_x, train_y, test_y, dim_list=dim_list, w_coe=w_coe,
                               layer_coe=layer_coe, settings=settings, initial_weight=initial_weight,
                               epoch_order=epoch_order)  # fmt: skip
    return evaluate(trained, test_x, test_y)


def heldout_rows(n_videos: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The original's split: ``np.delete`` of the first ``n_test`` of a seeded permutation, and those rows."""
    test_idx = np.random.RandomState(seed).permutation(n_videos)[:n_test]  # = np.random.seed(seed); permutation
    return np.delete(np.arange(n_videos), test_idx, 0), test_idx


def aver_from_csv(scores: dict[str, Sequence[float]]) -> pd.DataFrame:
    """``aver_from_csv.py``: per ROI, mean and pandas ``std`` (ddof 1) of the subjects' scores."""
    return pd.DataFrame({roi: {"mean": pd.Series(v).mean(), "std": pd.Series(v).std()} for roi, v in scores.items()})
