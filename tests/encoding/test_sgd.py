"""solve_sgd: equal to a plain autograd loop, batched == alone, deterministic, resumable, early stopping."""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lwroi.config import SGDOptions
from lwroi.encoding import SOLVERS, get_solver, solve_sgd, stack_layer_features
from lwroi.encoding._sgd import model_seed
from lwroi.encoding.metrics import pearson_r_columns
from tests.encoding.original import vectorized_correlation
from tests.encoding.test_model import planted_layers

N_TRAIN = [70, 61, 53]
TRAIN = [np.arange(n) for n in N_TRAIN]
VAL = [np.arange(80, 120), np.arange(75, 120), np.arange(90, 120)]
SETTINGS = {"lr": 5e-2, "batch_size": 16, "max_epochs": 40, "patience": 4, "min_delta": 1e-3}


@pytest.fixture(scope="module")
def problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    X_layers, Y = planted_layers(n=120)
    X, layer_of_feature, _ = stack_layer_features(X_layers, "balanced")
    return torch.from_numpy(X), torch.from_numpy(layer_of_feature), torch.from_numpy(Y)


OPTIONS = {f.name for f in dataclasses.fields(SGDOptions)}


def solve(problem, **overrides):
    """``solve_sgd`` on the problem with SETTINGS; an override that is an option goes into ``options``."""
    kwargs = {"train_idx": TRAIN, "val_idx": VAL, "wc": [0.01, 0.1, 1.0], "lay": [0.01, 1.0, 0.1], "seed": 3}
    kwargs.update(SETTINGS)
    kwargs.update(overrides)
    options = SGDOptions(**{key: kwargs.pop(key) for key in OPTIONS & set(kwargs)})
    return solve_sgd(*problem, options=options, **kwargs)


def reference_fit(X, layer_of_feature, Y, train, *, wc, lay, lr, batch_size, epochs, seed, drop_last=False):
    """The model as the original wrote it: autograd, torch.optim.Adam, per-layer weight repeat.

    Minibatches come from a DataLoader over the training rows that visits each epoch's
    ``torch.randperm`` of the model's generator (what ``shuffle=True`` draws).
    """
    gen = torch.Generator().manual_seed(model_seed(seed))
    D, V = X.shape[1], Y.shape[1]
    dims = torch.bincount(layer_of_feature).tolist()
    W = (torch.randn((D, V), generator=gen) * math.sqrt(2.0 / (D + V))).requires_grad_()
    a = torch.full((len(dims),), 1.0 / len(dims), requires_grad=True)
    b = torch.zeros(V, requires_grad=True)
    optimizer = torch.optim.Adam([a, W, b], lr=lr)
    rows = TensorDataset(X[train], Y[train])
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=gen).tolist()
        for x, y in DataLoader(rows, batch_size=batch_size, sampler=order, drop_last=drop_last):
            scale = torch.cat([a.abs()[i].repeat(d) for i, d in enumerate(dims)])
            pred = (x * scale) @ W + b
            loss = ((pred - y) ** 2).mean() + wc * W.pow(2).mean(0).sqrt().mean() + lay * a.abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return (W * torch.cat([a.abs()[i].repeat(d) for i, d in enumerate(dims)]).unsqueeze(1)).detach().numpy()


@pytest.mark.parametrize("drop_last", [False, True])
def test_matches_plain_autograd_adam_loop(problem, drop_last):
    # 61 rows: 3 full minibatches and one of 13, which drop_last leaves out of every epoch
    result = solve(problem, train_idx=TRAIN[1:2], val_idx=VAL[1:2], wc=[0.1], lay=[0.5], seed=[11],
                   max_epochs=3, patience=100, drop_last=drop_last)  # fmt: skip
    epochs = int(result.best_step[0])  # the state returned
    assert epochs >= 2
    expected = reference_fit(*problem, TRAIN[1], wc=0.1, lay=0.5, lr=SETTINGS["lr"], batch_size=16, epochs=epochs,
                             seed=11, drop_last=drop_last)  # fmt: skip
    np.testing.assert_allclose(result.coef[0], expected, atol=1e-5)


def test_drop_last_in_batched_models_equals_each_model_alone(problem):
    seeds = [5, 6, (7, 1)]
    settings = {"drop_last": True, "max_epochs": 6, "patience": 100}
    batched = solve(problem, seed=seeds, **settings)
    for g in range(3):
        alone = solve(problem, train_idx=[TRAIN[g]], val_idx=[VAL[g]], wc=[[0.01, 0.1, 1.0][g]],
                      lay=[[0.01, 1.0, 0.1][g]], seed=[seeds[g]], **settings)  # fmt: skip
        np.testing.assert_allclose(batched.coef[g], alone.coef[0], atol=1e-5)
        np.testing.assert_allclose(batched.history["train_loss"][g], alone.history["train_loss"][0], atol=1e-6)


def test_batched_models_equal_each_model_alone(problem):
    seeds = [5, 6, (7, 1)]
    batched = solve(problem, seed=seeds)
    assert len(set(batched.n_steps)) > 1, "the test needs models that stop at different epochs"
    for g in range(3):
        alone = solve(problem, train_idx=[TRAIN[g]], val_idx=[VAL[g]], wc=[[0.01, 0.1, 1.0][g]],
                      lay=[[0.01, 1.0, 0.1][g]], seed=[seeds[g]])  # fmt: skip
        np.testing.assert_allclose(batched.coef[g], alone.coef[0], atol=1e-5)
        np.testing.assert_allclose(batched.intercept[g], alone.intercept[0], atol=1e-5)
        assert batched.best_step[g] == alone.best_step[0] and batched.n_steps[g] == alone.n_steps[0]


def test_int_seed_gives_model_g_the_stream_of_seed_and_g(problem):
    np.testing.assert_array_equal(
        solve(problem, seed=3, max_epochs=3).coef, solve(problem, seed=[(3, 0), (3, 1), (3, 2)], max_epochs=3).coef
    )


def test_same_seed_gives_bit_identical_results(problem):
    first, second = solve(problem, max_epochs=8), solve(problem, max_epochs=8)
    np.testing.assert_array_equal(first.coef, second.coef)
    np.testing.assert_array_equal(first.history["val_score"], second.history["val_score"])


@pytest.mark.parametrize("tile_rows", [1, 20, 37])
def test_the_tiled_sweep_gives_the_numbers_of_whole_tensors(monkeypatch, tile_rows):
    """Rows of W updated tile by tile = one whole-tensor Adam step: bit for bit with tiles of many rows.

    One-row tiles agree to float32 rounding only: BLAS computes a one-row product with its
    matrix-vector kernel, which sums in another order (the solver never makes such tiles).
    """
    import lwroi.encoding._sgd as sgd

    rng = np.random.default_rng(0)
    dims, n_voxels = (60, 90, 50), 48
    X = torch.from_numpy(rng.standard_normal((100, sum(dims))).astype(np.float32))
    layer_of_feature = torch.from_numpy(np.repeat(np.arange(3), dims))
    Y = torch.from_numpy(rng.standard_normal((100, n_voxels)).astype(np.float32))
    kwargs = {"train_idx": [np.arange(70), np.arange(60)], "val_idx": [np.arange(70, 100)] * 2, "wc": [0.1, 1.0],
              "lay": [0.1, 0.01], "options": SGDOptions(lr=1e-2, max_epochs=6, patience=100), "seed": 0}
    whole = solve_sgd(X, layer_of_feature, Y, **kwargs)
    monkeypatch.setattr(sgd, "_TILE_BYTES", tile_rows * n_voxels * 4)
    tiled = solve_sgd(X, layer_of_feature, Y, **kwargs)
    check = np.testing.assert_array_equal if tile_rows > 1 else partial(np.testing.assert_allclose, atol=1e-5)
    for name in ("coef", "intercept", "layer_weights"):
        check(getattr(tiled, name), getattr(whole, name), err_msg=name)
    check(tiled.history["val_score"], whole.history["val_score"])
    np.testing.assert_array_equal(tiled.best_step, whole.best_step)


def test_resume_from_saved_state_equals_uninterrupted(problem, tmp_path):
    settings = {"max_epochs": 30, "patience": 6}
    full = solve(problem, **settings)

    class Stop(Exception):
        pass

    def save_and_stop(epoch, get_state):
        if epoch == 20:
            torch.save(get_state(), tmp_path / "state.pt")
            raise Stop

    with pytest.raises(Stop):
        solve(problem, on_epoch=save_and_stop, **settings)
    resumed = solve(problem, state=torch.load(tmp_path / "state.pt", weights_only=True), **settings)
    np.testing.assert_allclose(resumed.coef, full.coef, atol=1e-6)
    np.testing.assert_array_equal(resumed.best_step, full.best_step)
    np.testing.assert_allclose(resumed.history["val_score"], full.history["val_score"], atol=1e-6)


def test_resuming_leaves_the_state_as_it_was(problem):
    states = []
    solve(problem, max_epochs=2, on_epoch=lambda epoch, get_state: states.append(get_state()))
    before = {name: x.clone() for name, x in states[0]["tensors"].items()}
    first, second = (solve(problem, max_epochs=4, state=states[0]) for _ in range(2))
    assert all(torch.equal(states[0]["tensors"][name], x) for name, x in before.items())
    np.testing.assert_array_equal(first.coef, second.coef)


def test_resume_refuses_state_of_other_settings(problem):
    states = []
    solve(problem, max_epochs=1, on_epoch=lambda epoch, get_state: states.append(get_state()))
    with pytest.raises(ValueError, match=r"saved state has wc=\[0.01, 0.1, 1.0\] but this run has"):
        solve(problem, wc=[0.5, 0.1, 1.0], state=states[0])


def test_early_stopping_restores_best_state_after_patience(problem):
    result = solve(problem, train_idx=TRAIN[2:], val_idx=VAL[2:], wc=[0.01], lay=[0.01], lr=1e-1, max_epochs=60)
    best, stopped = int(result.best_step[0]), int(result.n_steps[0])
    assert stopped == best + SETTINGS["patience"] < 60
    history = result.history["val_score"][0]
    assert result.best_score[0] == pytest.approx(history[best - 1])
    assert np.all(history[best:] < history[best - 1] + SETTINGS["min_delta"])
    until_best = solve(problem, train_idx=TRAIN[2:], val_idx=VAL[2:], wc=[0.01], lay=[0.01], lr=1e-1,
                       max_epochs=best, patience=1000)  # fmt: skip
    np.testing.assert_allclose(result.coef, until_best.coef, atol=1e-6)


def replay_early_stopping(history: np.ndarray, patience: int, min_delta: float) -> tuple[int, int]:
    """(best_epoch, n_epochs), 1-based, of the original's EarlyStopping fed ``history``."""
    best, best_epoch, counter = history[0], 1, 0
    for epoch, score in enumerate(history[1:], start=2):
        if score < best + min_delta:
            counter += 1
            if counter >= patience:
                return best_epoch, epoch
        else:
            best, best_epoch, counter = score, epoch, 0
    return best_epoch, len(history)


@pytest.mark.parametrize("min_delta", [0.0, 1e-3, 1e-2])
def test_early_stopping_is_the_originals_rule(problem, min_delta):
    result = solve(problem, min_delta=min_delta, max_epochs=40)
    for g in range(3):
        history = result.history["val_score"][g, : result.n_steps[g]]
        replayed = replay_early_stopping(history, SETTINGS["patience"], min_delta)
        assert (result.best_step[g], result.n_steps[g]) == replayed


def test_an_equal_score_counts_as_an_improvement(problem):
    # Validation responses equal on every row: every voxel is constant, every score exactly 0.
    # The original's rule (score >= best + min_delta) then improves every epoch and never stops.
    X, layer_of_feature, Y = problem
    Y = Y.clone()
    Y[VAL[0]] = Y[VAL[0][0]].clone()
    result = solve((X, layer_of_feature, Y), train_idx=TRAIN[:1], val_idx=VAL[:1], wc=[0.1], lay=[0.1], seed=0,
                   min_delta=0.0, max_epochs=12)
    assert np.all(result.history["val_score"][0] == 0.0)
    assert result.best_step[0] == result.n_steps[0] == 12


def test_stopped_model_is_frozen_while_others_train(problem):
    snapshots = []

    def model_tensors(state, g):
        adam = state["adam"]
        return [state["tensors"][name][g] for name in ("a", "W", "b")] + [adam["step"][g]] + [
            adam[key][name][g] for name in ("a", "W", "b") for key in ("exp_avg", "exp_avg_sq")
        ]

    result = solve(problem, on_epoch=lambda epoch, get_state: snapshots.append(get_state()))
    first = int(np.argmin(result.n_steps))
    stop = int(result.n_steps[first])
    assert stop < len(snapshots), "the test needs a model that stops before the others"
    frozen = model_tensors(snapshots[stop - 1], first)
    for later in snapshots[stop:]:
        assert all(torch.equal(x, y) for x, y in zip(model_tensors(later, first), frozen, strict=True))
    assert not torch.equal(snapshots[-1]["tensors"]["W"], snapshots[stop - 1]["tensors"]["W"])


def original_pcc(true: np.ndarray, pred: np.ndarray) -> float:
    return float(vectorized_correlation(true, pred).mean())


def pearson_pcc(true: np.ndarray, pred: np.ndarray) -> float:
    return float(pearson_r_columns(true, pred).mean())


@pytest.mark.parametrize(
    ("metric", "val_pcc", "pcc"),
    [("pcc", "full", "pearson"), ("pcc", "batch", "pearson"), ("mse", "full", "pearson"), ("mse", "batch", "pearson"),
     ("pcc", "full", "original"), ("pcc", "batch", "original"), ("mse", "batch", "original")],
)  # fmt: skip
def test_best_score_is_documented_metric_of_returned_state(problem, metric, val_pcc, pcc):
    X, _, Y = (t.numpy() for t in problem)
    result = solve(problem, metric=metric, val_pcc=val_pcc, pcc=pcc, max_epochs=6)
    correlation = original_pcc if pcc == "original" else pearson_pcc
    for g, val in enumerate(VAL):
        pred, true = X[val] @ result.coef[g] + result.intercept[g], Y[val]
        counted = slice(0, len(val) // 16 * 16) if val_pcc == "batch" else slice(None)
        if metric == "mse":
            expected = np.mean((pred - true)[counted] ** 2)
        elif val_pcc == "full":
            expected = correlation(true, pred)
        else:  # the original's validation loader: consecutive 16-row batches, the short last one dropped
            expected = np.mean([correlation(true[i : i + 16], pred[i : i + 16]) for i in range(0, len(val) - 15, 16)])
        assert result.best_score[g] == pytest.approx(expected, abs=1e-5)
        assert result.val_mean_r[g] == pytest.approx(correlation(true, pred), abs=1e-5)


def test_history_is_nan_after_a_model_stopped(problem):
    result = solve(problem)
    for g, n in enumerate(result.n_steps):
        assert np.isfinite(result.history["val_score"][g, :n]).all()
        assert np.isnan(result.history["train_loss"][g, n:]).all()


def test_batch_validation_needs_a_full_batch(problem):
    message = r"val_pcc='batch' needs >= batch_size=16 validation rows per model; models \[0\] have fewer"
    with pytest.raises(ValueError, match=message):
        solve(problem, val_idx=[np.arange(100, 110), *VAL[1:]], val_pcc="batch")


def test_drop_last_needs_a_full_minibatch(problem):
    message = r"drop_last=True needs >= batch_size=16 training rows per model; models \[1\] have fewer"
    with pytest.raises(ValueError, match=message):
        solve(problem, train_idx=[TRAIN[0], np.arange(10), TRAIN[2]], drop_last=True)


def test_unknown_pcc_is_named(problem):
    with pytest.raises(ValueError, match="pcc='r2': must be one of pearson, original"):
        solve(problem, pcc="r2")


def test_one_entry_per_model_is_required(problem):
    with pytest.raises(ValueError, match="wc has 2 entries but train_idx has 3"):
        solve(problem, wc=[0.1, 0.1])


def test_solver_registry_names_known_solvers():
    assert get_solver("sgd") is SOLVERS["sgd"]
    assert (SOLVERS["sgd"].solve, SOLVERS["sgd"].options) == (solve_sgd, SGDOptions)
    assert SOLVERS["sgd"].uses_grid and SOLVERS["sgd"].needs_validation
    with pytest.raises(ValueError, match=r"solver='kernal': unknown; known solvers: .*sgd"):
        get_solver("kernal")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(problem):
    settings = {"lr": 1e-3, "max_epochs": 3, "patience": 100}
    on_gpu, on_cpu = solve(tuple(t.cuda() for t in problem), **settings), solve(problem, **settings)
    np.testing.assert_allclose(on_gpu.layer_weights, on_cpu.layer_weights, atol=1e-3)
    np.testing.assert_allclose(on_gpu.val_mean_r, on_cpu.val_mean_r, atol=1e-3)
