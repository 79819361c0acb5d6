"""The solver contract: options refused by name, sklearn's estimator checks, 2-D input, and a third solver."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from lwroi.config import SGDOptions, SolverOptions, config_from_dict
from lwroi.data.splits import kfold_splits
from lwroi.encoding import SOLVERS, LayerWeightedEncoder, Solver, SolverResult, make_options, tune_grid
from lwroi.encoding.metrics import pearson_r_columns
from lwroi.orchestration.plan import uses_grid
from tests.encoding.test_model import FAST, planted_layers

EXPECTED_FAILED_CHECKS = {
    "check_regressor_multioutput": "predictions are float32, the precision the features are stacked and solved in "
                                   "(a whole-brain prediction in float64 would double its memory); sklearn wants "
                                   "float64 from a multi-output regressor",
}
"""The checks of ``sklearn.utils.estimator_checks`` the estimator does not meet, and why. Every other one passes
(``check_array_api_input`` skips itself unless SCIPY_ARRAY_API is set)."""

CHECKED = [
    LayerWeightedEncoder(solver="kernel", solver_params={"search_steps": 2, "refine_steps": 1}, device="cpu"),
    # 60 epochs: sklearn 1.9's regression check needs r2 > 0.5, which 20 epochs of Adam at 1e-2 no longer reach
    LayerWeightedEncoder(solver="sgd", solver_params={"max_epochs": 60, "lr": 1e-2, "batch_size": 8}, device="cpu"),
]


AT_FLOAT32 = {"check_methods_sample_order_invariance"}
"""Checks sklearn runs at float64 tolerance (rtol 1e-7) on float32 predictions: a BLAS kernel's row tail may
round one product 1 ulp apart when the rows come in another order. Checked here at float32's tolerance."""


@parametrize_with_checks(CHECKED, expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    if check.func.__name__ in AT_FLOAT32:
        predictions_do_not_depend_on_row_order(estimator)
    else:
        check(estimator)


def predictions_do_not_depend_on_row_order(estimator) -> None:
    """sklearn's ``check_methods_sample_order_invariance`` at float32's rounding (rtol 1e-5)."""
    from sklearn.base import clone

    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 4))
    y = X @ rng.standard_normal(4) + 0.1 * rng.standard_normal(20)
    model = clone(estimator).set_params(random_state=0).fit(X, y)
    order = rng.permutation(20)
    np.testing.assert_allclose(model.predict(X[order]), model.predict(X)[order], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(("solver", "params", "message"), [
    ("kernel", {"lr": 5}, r"solver_params: 'lr' is not an option of solver 'kernel' \(it is an option of solver "
                          r"'sgd'\); its options: alphas, search_steps"),
    ("sgd", {"learning_rate": 5}, r"'learning_rate' is not an option of solver 'sgd'; its options: lr, batch_size"),
    ("sgd", {"pcc": "original"}, r"'pcc' is a parameter of LayerWeightedEncoder, not an option of solver 'sgd': "
                                 r"pass it as LayerWeightedEncoder\(pcc=...\)"),
    ("sgd", {"lr": -1.0}, r"lr \(an option of solver 'sgd'\) = -1.0: must be > 0"),
    ("kernel", SGDOptions(), r"a SGDOptions is not the options of solver 'kernel' \(those are KernelOptions\)"),
    ("lbfgs", {}, r"solver='lbfgs': unknown; known solvers: kernel, sgd"),
])
def test_unknown_or_misplaced_options_are_refused_naming_option_and_solver(solver, params, message):
    X, Y = planted_layers(n=40)
    with pytest.raises(ValueError, match=message):
        LayerWeightedEncoder(solver=solver, solver_params=params, device="cpu").fit(X, Y)


def test_an_option_passed_to_the_estimator_itself_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="'lr'"):
        LayerWeightedEncoder(solver="kernel", lr=5)


def test_the_options_the_solver_ran_with_are_recorded():
    X, Y = planted_layers(n=60)
    est = LayerWeightedEncoder(wc=0.01, lay=0.01, **FAST).fit(X, Y)
    assert est.solver_options_ == SGDOptions(**FAST["solver_params"])
    assert est.get_params()["solver_params"] == FAST["solver_params"]


# ------------------------------------------------------------------ input layouts


@pytest.mark.parametrize("solver", ["sgd", "kernel"])
def test_one_2d_array_cut_by_layer_dims_equals_the_list_of_blocks(solver):
    X, Y = planted_layers(n=80)
    dims = [x.shape[1] for x in X]
    params = FAST["solver_params"] if solver == "sgd" else {"search_steps": 3, "refine_steps": 1}
    blocks = LayerWeightedEncoder(solver=solver, solver_params=params, device="cpu").fit(X, Y)
    flat = LayerWeightedEncoder(solver=solver, solver_params=params, layer_dims=dims, device="cpu").fit(np.hstack(X), Y)
    assert flat.n_features_in_ == blocks.n_features_in_ == sum(dims)
    assert flat.layer_dims_ == blocks.layer_dims_ == dims
    np.testing.assert_array_equal(flat.layer_weights_, blocks.layer_weights_)
    np.testing.assert_array_equal(flat.predict(np.hstack(X)), blocks.predict(X))
    np.testing.assert_array_equal(flat.layer_contributions(np.hstack(X), Y), blocks.layer_contributions(X, Y))
    with pytest.raises(ValueError, match=r"layer_dims=\[8, 12\]: must be positive and sum to the 56 columns of X"):
        LayerWeightedEncoder(layer_dims=[8, 12], **FAST).fit(np.hstack(X), Y)


# ------------------------------------------------------------------ a third solver


@dataclass(frozen=True)
class RidgeOptions(SolverOptions):
    """Options of a plain ridge solver: every layer weighs the same; its strength is the grid's wc."""

    solver: ClassVar[str] = "ridge"
    uses_grid: ClassVar[bool] = True
    needs_validation: ClassVar[bool] = False

    alpha_scale: float = 1.0
    """Ridge strength = wc * alpha_scale * n_train."""

    _constraints: ClassVar[dict[str, Callable[[Any], str | None]]] = {
        "alpha_scale": lambda v: None if v > 0 else "must be > 0",
    }


def solve_ridge(X, layer_of_feature, Y, *, train_idx, val_idx, wc, lay, options=None, pcc="pearson", primal=True,
                seed=0, state=None, on_epoch=None, workspace=None, x_key=None) -> SolverResult:
    """Ridge with an intercept on each model's training rows, layer weights fixed at 1 / L (lay is ignored)."""
    options = options or RidgeOptions()
    X, Y = X.cpu().double().numpy(), Y.cpu().double().numpy()
    n_layers = int(layer_of_feature.max()) + 1
    out = {"coef": [], "intercept": [], "val_mean_r": []}
    for train, val, strength in zip(train_idx, val_idx, wc, strict=True):
        x_mean, y_mean = X[train].mean(0), Y[train].mean(0)
        Xc, Yc = X[train] - x_mean, Y[train] - y_mean
        alpha = strength * options.alpha_scale * len(train)
        coef = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)
        intercept = y_mean - x_mean @ coef
        out["coef"].append(coef.astype(np.float32))
        out["intercept"].append(intercept.astype(np.float32))
        scored = len(val) >= 2
        out["val_mean_r"].append(pearson_r_columns(Y[val], X[val] @ coef + intercept, kind=pcc).mean() if scored
                                 else np.nan)
        if on_epoch is not None:
            on_epoch(1, lambda: {"epoch": 1})
    G = len(train_idx)
    return SolverResult(layer_weights=np.full((G, n_layers), 1.0 / n_layers), coef=np.stack(out["coef"]),
                        intercept=np.stack(out["intercept"]), best_step=np.ones(G, dtype=np.int64),
                        n_steps=np.ones(G, dtype=np.int64), best_score=np.array(out["val_mean_r"]),
                        val_mean_r=np.array(out["val_mean_r"]), history={})


@pytest.fixture
def ridge(monkeypatch):
    """The third solver, registered for one test: one function, one options class, one registry entry."""
    monkeypatch.setitem(SOLVERS, "ridge", Solver(solve_ridge, RidgeOptions))
    return SOLVERS["ridge"]


def test_a_third_solver_fits_through_the_estimator(ridge):
    X, Y = planted_layers(n=100)
    est = LayerWeightedEncoder(solver="ridge", wc=0.1, solver_params={"alpha_scale": 2.0}, device="cpu").fit(X, Y)
    Xh = np.hstack(X).astype(np.float64)
    scale = np.concatenate([np.full(x.shape[1], 1.0 / np.sqrt((x.var(0)).sum())) for x in X])
    Z = Xh * scale
    Zc, Yc = Z - Z.mean(0), Y - Y.mean(0)
    coef = np.linalg.solve(Zc.T @ Zc + 0.1 * 2.0 * len(Y) * np.eye(Z.shape[1]), Zc.T @ Yc) * scale[:, None]
    np.testing.assert_allclose(est.coef_, coef, rtol=1e-3, atol=1e-4 * np.abs(coef).max())
    np.testing.assert_allclose(est.predict(X), Xh @ coef + (Y.mean(0) - Xh.mean(0) @ coef), atol=1e-3)
    assert np.isnan(est.val_mean_r_), "needs_validation=False: every row trains, none is held out"
    np.testing.assert_array_equal(est.layer_weights_, np.full(4, 0.25))
    with pytest.raises(ValueError, match=r"alpha_scale \(an option of solver 'ridge'\) = 0.0: must be > 0"):
        LayerWeightedEncoder(solver="ridge", solver_params={"alpha_scale": 0}).fit(X, Y)
    with pytest.raises(ValueError, match=r"'lr' is not an option of solver 'ridge' \(it is an option of solver 'sgd"):
        make_options("ridge", {"lr": 1.0})


def test_a_third_solver_runs_the_grid_search(ridge):
    X, Y = planted_layers(n=100)
    tuned = tune_grid(X, Y, wc_grid=[1e-3, 10.0], lay_grid=[0.0], folds=2, seed=5, device="cpu", solver="ridge",
                      solver_params={"alpha_scale": 1.0}, layer_scaling="none")
    assert tuned.best == (1e-3, 0.0), "the weaker ridge wins on data with little noise"
    train, val = kfold_splits(len(Y), 2, seed=5)[1]
    est = LayerWeightedEncoder(solver="ridge", wc=10.0, layer_scaling="none", device="cpu")
    est.fit([x[train] for x in X], Y[train])
    assert tuned.fold_scores[(10.0, 0.0)][1] == pytest.approx(est.score([x[val] for x in X], Y[val]), abs=1e-4)


def test_the_solver_registry_entries_say_what_the_plan_needs():
    assert {name: (entry.uses_grid, entry.needs_validation) for name, entry in SOLVERS.items()} == {
        "sgd": (True, True), "kernel": (False, False)}
    for name, entry in SOLVERS.items():
        assert entry.name == name and dataclasses.is_dataclass(entry.options)
        cfg = config_from_dict({"encoding": {"solver": name}})
        assert type(cfg.encoding.options) is entry.options and uses_grid(cfg) == entry.uses_grid
