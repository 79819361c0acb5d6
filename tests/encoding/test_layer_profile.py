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


def variance_shares(terms: list[np.ndarray]) -> np.ndarray:
    """The reference: per voxel each term's variance over the sum, then the mean over voxels."""
    variances = np.array([t.var(axis=0) for t in terms])
    return (variances / variances.sum(axis=0)).mean(axis=1)


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


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def fitted(request, toy):
    X, Y = toy
    return LayerWeightedEncoder(solver=request.param, device="cpu", **SETTINGS[request.param]).fit(X, Y)


def test_profile_is_the_variance_share_of_each_layers_prediction_term(fitted, toy):
    X, _ = toy
    profile = fitted.layer_profile(X)
    np.testing.assert_allclose(profile, variance_shares(coef_terms(fitted, X)), rtol=1e-4, atol=1e-6)
    assert profile.sum() == pytest.approx(1.0)


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
