"""LayerWeightedEncoder.layer_profile: each layer's share of the predicted variance, for every solver."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from lwroi.encoding import LayerWeightedEncoder

DIMS = (6, 8, 10, 12)
SHARES = np.array([0.4, 0.3, 0.2, 0.1])
SETTINGS = {
    "sgd": {"wc": 0.01, "lay": 0.01,
            "solver_params": {"lr": 3e-2, "max_epochs": 80, "patience": 20, "min_delta": 1e-4}},
    "kernel": {},
}


def orthogonal_blocks(n: int, dims=DIMS, seed: int = 0) -> list[np.ndarray]:
    """Layer blocks whose columns are centred, mutually orthogonal across all layers, variance 1."""
    rng = np.random.default_rng(seed)
    centred = rng.standard_normal((n, sum(dims)))
    centred -= centred.mean(axis=0)
    q, _ = np.linalg.qr(centred)
    return [block * np.sqrt(n) for block in np.split(q, np.cumsum(dims)[:-1], axis=1)]


def planted_terms(X: list[np.ndarray], shares: np.ndarray, n_voxels: int, rng) -> list[np.ndarray]:
    """Per layer l the voxels' term sqrt(s_l) * z_lv, z_lv a unit-variance random combination of X_l."""
    terms = []
    for share, x in zip(shares, X, strict=True):
        z = x @ rng.standard_normal((x.shape[1], n_voxels))
        terms.append(np.sqrt(share) * z / z.std(axis=0))
    return terms


def covariance_shares(terms: list[np.ndarray]) -> np.ndarray:
    """The reference: per voxel each term's covariance with the prediction over its variance (np.cov), voxel mean."""
    prediction = sum(terms)
    voxels = range(prediction.shape[1])
    shares = [[np.cov(term[:, v], prediction[:, v])[0, 1] / np.cov(prediction[:, v]) for v in voxels] for term in terms]
    return np.asarray(shares).mean(axis=1)


def coef_terms(model: LayerWeightedEncoder, X: list[np.ndarray]) -> list[np.ndarray]:
    """Each layer's prediction term from the public coef_ (primal, whatever form the solver keeps)."""
    bounds = np.cumsum([0, *model.layer_dims_])
    return [x @ model.coef_[start:stop] for x, start, stop in zip(X, bounds[:-1], bounds[1:], strict=True)]


@pytest.fixture(scope="module")
def toy():
    """Orthogonal layer blocks, responses with the planted shares, voxel gains and offsets, little noise."""
    rng = np.random.default_rng(1)
    X = orthogonal_blocks(240)
    signal = sum(planted_terms(X, SHARES, 24, rng))
    gains, offsets = np.exp(rng.normal(0, 0.5, 24)), rng.normal(0, 1, 24)
    Y = gains * signal + offsets + 0.1 * rng.standard_normal(signal.shape)
    return [x.astype(np.float32) for x in X], Y.astype(np.float32)


@pytest.fixture(scope="module")
def overlapping():
    """Layer blocks that share a common 6-dimensional signal, as a DNN's layers do, and responses to all of them."""
    rng = np.random.default_rng(3)
    common = rng.standard_normal((240, 6))
    X = [(common @ rng.standard_normal((6, d)) + rng.standard_normal((240, d))).astype(np.float32) for d in DIMS]
    Y = sum(planted_terms(X, SHARES, 24, rng)) + 0.1 * rng.standard_normal((240, 24))
    return X, Y.astype(np.float32)


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def fitted(request, toy):
    X, Y = toy
    return LayerWeightedEncoder(solver=request.param, device="cpu", **SETTINGS[request.param]).fit(X, Y)


@pytest.mark.parametrize("solver", sorted(SETTINGS))
def test_profile_splits_the_predicted_variance_by_covariance_with_the_prediction(overlapping, solver):
    """Where the layers' terms correlate (cross terms of 10-40 % of the variance here), the shares
    are Cov(p_l, p) / Var(p), not the terms' own variances."""
    X, Y = overlapping
    model = LayerWeightedEncoder(solver=solver, device="cpu", **SETTINGS[solver]).fit(X, Y)
    terms = coef_terms(model, X)
    profile = model.layer_profile(X)
    np.testing.assert_allclose(profile, covariance_shares(terms), rtol=1e-4, atol=1e-6)
    assert profile.sum() == pytest.approx(1.0)
    own = np.array([t.var(axis=0) for t in terms])
    assert not np.allclose(profile, (own / own.sum(axis=0)).mean(axis=1), atol=0.01)  # the cross terms matter here


def test_profile_of_uncorrelated_terms_is_their_variance_share(fitted, toy):
    X, _ = toy
    terms = coef_terms(fitted, X)
    own = np.array([t.var(axis=0) for t in terms])
    np.testing.assert_allclose(fitted.layer_profile(X), (own / own.sum(axis=0)).mean(axis=1), rtol=1e-4, atol=1e-6)


def test_profile_recovers_planted_shares_of_orthogonal_layers(fitted, toy):
    X, _ = toy
    np.testing.assert_allclose(fitted.layer_profile(X), SHARES, atol=0.03)


def test_profile_ignores_moving_scale_between_layer_weights_and_coefficients(toy):
    """a_l -> c_l a_l with W_l -> W_l / c_l predicts the same: the layer weights change, the profile does not."""
    X, Y = toy
    model = LayerWeightedEncoder(solver="sgd", device="cpu", **SETTINGS["sgd"]).fit(X, Y)
    rescaled = copy.deepcopy(model)
    rescaled.layer_weights_ = model.layer_weights_ * np.array([4.0, 0.25, 2.0, 0.5], dtype=np.float32)
    np.testing.assert_allclose(rescaled.predict(X), model.predict(X), rtol=1e-6)
    np.testing.assert_allclose(rescaled.layer_profile(X), model.layer_profile(X), rtol=1e-12)
    assert not np.allclose(rescaled.layer_weights_ / rescaled.layer_weights_.sum(),
                           model.layer_weights_ / model.layer_weights_.sum(), atol=0.05)  # fmt: skip


def test_profile_ignores_voxel_gains():
    """Voxels with different profiles and very different gains: every voxel counts alike.

    Half the voxels carry layer 0 only, half layer 3 only, and the second half has 30 times the
    gain: the profile stays near (1/2, 0, 0, 1/2), where a variance pooled over voxels would give
    layer 3 almost everything.
    """
    rng = np.random.default_rng(2)
    X = orthogonal_blocks(240)
    first = planted_terms(X, np.array([1.0, 0, 0, 0]), 10, rng)[0]
    last = 30 * planted_terms(X, np.array([0, 0, 0, 1.0]), 10, rng)[3]
    Y = np.hstack([first, last]) + 0.05 * rng.standard_normal((240, 20))
    model = LayerWeightedEncoder(solver="kernel", device="cpu").fit([x.astype(np.float32) for x in X], Y)
    np.testing.assert_allclose(model.layer_profile(X), [0.5, 0, 0, 0.5], atol=0.02)
