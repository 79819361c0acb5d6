"""LayerWeightedEncoder: recovery of a planted layer profile, sklearn conventions, input checks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from lwroi.data.splits import inner_validation_split
from lwroi.encoding import LayerWeightedEncoder, resolve_device
from lwroi.encoding.metrics import mean_pcc
from tests.encoding.original import vectorized_correlation

PROFILE = np.array([0.1, 0.3, 1.0, 0.5])
DIMS = (8, 12, 16, 20)
FAST_SGD = {"lr": 3e-2, "max_epochs": 60, "patience": 15, "min_delta": 1e-4}
FAST = {"solver_params": FAST_SGD, "device": "cpu"}


def fast(**options) -> dict:
    """FAST with some sgd options changed."""
    return {**FAST, "solver_params": {**FAST_SGD, **options}}


def planted_layers(
    n: int = 160, dims=DIMS, n_voxels: int = 10, profile=PROFILE, noise: float = 0.2, seed: int = 0
) -> tuple[list[np.ndarray], np.ndarray]:
    """Random layer blocks and Y = sum_l profile_l X_l W_l / sqrt(D_l) + noise."""
    rng = np.random.default_rng(seed)
    X = [rng.standard_normal((n, d)).astype(np.float32) for d in dims]
    Y = sum(p * x @ rng.standard_normal((d, n_voxels)) / np.sqrt(d) for p, x, d in zip(profile, X, dims, strict=True))
    return X, (Y + noise * rng.standard_normal(Y.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def planted():
    X, Y = planted_layers()
    return [x[:120] for x in X], Y[:120], [x[120:] for x in X], Y[120:]


@pytest.fixture(scope="module")
def fitted(planted):
    X, Y, _, _ = planted
    return LayerWeightedEncoder(wc=0.01, lay=0.01, **FAST).fit(X, Y)


def test_recovers_planted_layer_ranking(fitted):
    assert spearmanr(fitted.layer_weights_, PROFILE)[0] >= 0.8


def test_predicts_held_out_rows(fitted, planted):
    _, _, X_test, Y_test = planted
    assert fitted.score(X_test, Y_test) > 0.8


def test_predict_is_linear_in_unscaled_inputs(fitted, planted):
    _, _, X_test, _ = planted
    expected = np.hstack(X_test) @ fitted.coef_ + fitted.intercept_
    np.testing.assert_allclose(fitted.predict(X_test), expected, rtol=1e-4, atol=1e-5)


def test_fitted_attributes_have_documented_shapes(fitted):
    assert fitted.layer_weights_.shape == (4,) and (fitted.layer_weights_ >= 0).all()
    assert fitted.coef_.shape == (sum(DIMS), 10) and fitted.intercept_.shape == (10,)
    assert fitted.n_layers_ == 4 and fitted.layer_dims_ == list(DIMS) and fitted.solver_ == "sgd"
    assert 1 <= fitted.best_epoch_ <= fitted.n_epochs_ <= FAST_SGD["max_epochs"]
    assert fitted.history_["val_score"].shape == (fitted.n_epochs_,)


def test_early_stopping_uses_inner_split_by_default(fitted, planted):
    X, Y, _, _ = planted
    _, val = inner_validation_split(len(Y), fitted.val_fraction, fitted.random_state)
    assert fitted.best_score_ == pytest.approx(fitted.score([x[val] for x in X], Y[val]), abs=1e-5)


def test_early_stopping_uses_given_validation_set(planted):
    X, Y, X_test, Y_test = planted
    est = LayerWeightedEncoder(wc=0.01, lay=0.01, **fast(max_epochs=10)).fit(X, Y, X_val=X_test, Y_val=Y_test)
    assert est.best_score_ == pytest.approx(est.score(X_test, Y_test), abs=1e-5)


def test_original_compatibility_options_run(planted):
    X, Y, X_test, Y_test = planted
    est = LayerWeightedEncoder(layer_scaling="none", **fast(val_pcc="batch", metric="mse", max_epochs=5))
    est.fit(X, Y, X_val=X_test, Y_val=Y_test)
    assert np.isfinite(est.predict(X_test)).all()


def test_layer_contributions_sum_to_one(fitted, planted):
    _, _, X_test, Y_test = planted
    shares = fitted.layer_contributions(X_test, Y_test)
    assert shares.shape == (4,) and (shares >= 0).all()
    assert shares.sum() == pytest.approx(1.0)
    assert np.argmax(shares) == np.argmax(PROFILE)


def test_layer_contributions_uniform_when_no_layer_predicts(fitted, planted):
    _, _, X_test, Y_test = planted
    np.testing.assert_allclose(fitted.layer_contributions(X_test, -Y_test), np.full(4, 0.25))


def original_contributions(model: LayerWeightedEncoder, X: list[np.ndarray], Y: np.ndarray) -> np.ndarray:
    """The original's: the other layers' features zeroed, mean voxel PCC per layer, divided by the sum."""
    scores = []
    for layer in range(len(X)):
        only = [x if i == layer else np.zeros_like(x) for i, x in enumerate(X)]
        scores.append(vectorized_correlation(Y, model.predict(only)).mean())
    return np.array(scores) / sum(scores)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_original_contributions_divide_the_scores_by_their_sum(fitted, planted, sign):
    _, _, X_test, Y_test = planted
    model = copy.deepcopy(fitted).set_params(contributions="original", pcc="original")
    expected = original_contributions(model, X_test, sign * Y_test)
    np.testing.assert_allclose(model.layer_contributions(X_test, sign * Y_test), expected, atol=1e-6)
    if sign < 0:  # every layer scores below 0: shares of a negative sum, where clipping gives uniform shares
        assert not np.allclose(expected, 0.25)


def test_original_pcc_scores_voxels_as_the_original(fitted, planted):
    _, _, X_test, Y_test = planted
    model = copy.deepcopy(fitted).set_params(pcc="original")
    expected = vectorized_correlation(Y_test, fitted.predict(X_test))
    np.testing.assert_allclose(model.score_voxels(X_test, Y_test), expected, atol=1e-6)
    assert model.score(X_test, Y_test) == pytest.approx(expected.mean(), abs=1e-6)


def test_score_voxels_matches_mean_pcc(fitted, planted):
    _, _, X_test, Y_test = planted
    r = fitted.score_voxels(X_test, Y_test)
    assert r.shape == (10,)
    assert r.mean() == pytest.approx(mean_pcc(Y_test, fitted.predict(X_test)))


def test_clone_keeps_params_and_drops_fit(fitted):
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "coef_")
    assert copy.set_params(wc=3.0).wc == 3.0


def test_resume_through_estimator_equals_uninterrupted(planted, tmp_path):
    X, Y, _, _ = planted
    params = fast(max_epochs=12, patience=100)
    full = LayerWeightedEncoder(**params).fit(X, Y)

    class Stop(Exception):
        pass

    def stop_at_5(epoch, get_state):
        if epoch == 5:
            torch.save(get_state(), tmp_path / "state.pt")
            raise Stop

    with pytest.raises(Stop):
        LayerWeightedEncoder(**params).fit(X, Y, on_epoch=stop_at_5)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    resumed = LayerWeightedEncoder(**params).fit(X, Y, state=state)
    np.testing.assert_allclose(resumed.coef_, full.coef_, atol=1e-6)


def test_predict_before_fit_raises():
    with pytest.raises(NotFittedError, match="LayerWeightedEncoder"):
        LayerWeightedEncoder().predict([np.zeros((3, 2))])


def test_invalid_parameter_is_named_at_fit(planted):
    X, Y, _, _ = planted
    with pytest.raises(InvalidParameterError, match="'wc' parameter"):
        LayerWeightedEncoder(wc=-1.0).fit(X, Y)


def test_rows_mismatch_is_rejected(planted):
    X, Y, _, _ = planted
    with pytest.raises(ValueError, match=r"X\[1\] has 119 rows but X\[0\] has 120"):
        LayerWeightedEncoder(**FAST).fit([X[0], X[1][:-1], X[2], X[3]], Y)
    with pytest.raises(ValueError, match="Y has 119 rows but the features have 120"):
        LayerWeightedEncoder(**FAST).fit(X, Y[:-1])


def test_layer_dims_must_match_fit(fitted, planted):
    _, _, X_test, _ = planted
    with pytest.raises(ValueError, match=r"layer dims \[8, 12, 16, 19\] but the model was fitted with"):
        fitted.predict([X_test[0], X_test[1], X_test[2], X_test[3][:, :-1]])


def test_validation_set_needs_both_arrays(planted):
    X, Y, X_test, _ = planted
    with pytest.raises(ValueError, match="both X_val and Y_val"):
        LayerWeightedEncoder(**FAST).fit(X, Y, X_val=X_test)


def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when no CUDA device exists")
def test_resolve_device_refuses_absent_cuda():
    with pytest.raises(ValueError, match=r"device 'cuda:1': no CUDA device is available"):
        resolve_device("cuda:1")


def test_resolve_device_rejects_malformed_spec():
    with pytest.raises(ValueError, match=r"device 'gpu0': expected 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device("gpu0")
