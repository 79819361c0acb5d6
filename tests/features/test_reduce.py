from __future__ import annotations

import numpy as np
import pytest
from sklearn.random_projection import johnson_lindenstrauss_min_dim

from lwroi.features.reduce import fit_layer_reducer, layer_seed, reduce_features

N_VIDEOS = 60
ROWS = {"train": np.arange(0, 40), "test": np.arange(40, 50), "challenge": np.arange(50, 60)}
OPTIONS = {"srp_eps": 0.5, "pca_ratio": 0.9, "seed": 0}


@pytest.fixture
def raw(rng):
    """Two layers of low-rank features; 'conv' is big enough for SRP at eps=0.5 (177 dims for 40 rows)."""
    basis = rng.standard_normal((N_VIDEOS, 5))
    return {
        "conv": (basis @ rng.standard_normal((5, 400)) + 0.1 * rng.standard_normal((N_VIDEOS, 400))).astype(np.float32),
        "fc": (basis @ rng.standard_normal((5, 30)) + 0.1 * rng.standard_normal((N_VIDEOS, 30))).astype(np.float32),
    }


def _reduce(raw, method, test_scaler="train"):
    return _reduce_rows(raw, ROWS, method, test_scaler)


def _reduce_rows(raw, rows, method="srp", test_scaler="train"):
    reduce = {"conv": True, "fc": False}
    return reduce_features(raw, rows, reduce=reduce, method=method, test_scaler=test_scaler, **OPTIONS)


@pytest.mark.parametrize("method", ["srp", "pca"])
def test_held_out_rows_never_shape_the_reduction(raw, method):
    changed = {layer: X.copy() for layer, X in raw.items()}
    for X in changed.values():
        X[40:] = 100 * np.random.default_rng(1).standard_normal(X[40:].shape)
    before, _ = _reduce(raw, method)
    after, _ = _reduce(changed, method)
    for layer in raw:
        np.testing.assert_array_equal(before["train"][layer], after["train"][layer])
    train_only = fit_layer_reducer(
        raw["conv"][ROWS["train"]], method=method, seed=layer_seed(0, 0), srp_eps=0.5, pca_ratio=0.9
    )
    np.testing.assert_allclose(after["test"]["conv"], train_only.transform(changed["conv"][ROWS["test"]]), atol=1e-5)


def test_srp_uses_the_johnson_lindenstrauss_size(raw):
    arrays, description = _reduce(raw, "srp")
    expected = johnson_lindenstrauss_min_dim(40, eps=0.5)
    assert description["dims"] == {"conv": expected, "fc": 30}
    assert {split: a["conv"].shape for split, a in arrays.items()} == {
        "train": (40, expected),
        "test": (10, expected),
        "challenge": (10, expected),
    }
    assert arrays["test"]["conv"].dtype == np.float32


def test_srp_keeps_a_layer_whole_when_it_cannot_reduce(raw):
    reducer = fit_layer_reducer(raw["conv"][:40], method="srp", srp_eps=0.1, pca_ratio=0.9, seed=0)
    assert reducer.n_components_ == 400
    assert reducer.describe()["projected"] is False
    assert "kept unprojected" in reducer.describe()["note"]


def test_pca_keeps_the_requested_variance(raw):
    reducer = fit_layer_reducer(raw["conv"][:40], method="pca", srp_eps=0.1, pca_ratio=0.9, seed=0)
    ratios = reducer.projection_.explained_variance_ratio_
    assert ratios.sum() >= 0.9
    assert ratios[:-1].sum() < 0.9


def test_pca_ratio_one_keeps_every_component(raw):
    reducer = fit_layer_reducer(raw["fc"][:40], method="pca", srp_eps=0.1, pca_ratio=1.0, seed=0)
    assert reducer.n_components_ == 30


def test_layers_get_different_projections(raw):
    same = {"a": raw["conv"], "b": raw["conv"]}
    arrays, description = reduce_features(
        same, ROWS, reduce={"a": True, "b": True}, method="srp", test_scaler="train", **OPTIONS
    )
    assert description["layers"]["a"]["seed"] != description["layers"]["b"]["seed"]
    assert not np.allclose(arrays["train"]["a"], arrays["train"]["b"])


def test_unreduced_layers_are_standardised_with_the_training_scaler(raw):
    arrays, description = _reduce(raw, "srp")
    np.testing.assert_allclose(arrays["train"]["fc"].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(arrays["train"]["fc"].std(0), 1, atol=1e-4)
    train = raw["fc"][:40].astype(np.float64)
    expected = (raw["fc"][40:50] - train.mean(0)) / train.std(0)
    np.testing.assert_allclose(arrays["test"]["fc"], expected, rtol=1e-4, atol=1e-4)
    assert description["layers"]["fc"]["method"] == "none"


def test_test_scaler_compat_standardises_held_out_splits_by_themselves(raw):
    arrays, description = _reduce(raw, "none", test_scaler="test")
    for split in ("test", "challenge"):
        np.testing.assert_allclose(arrays[split]["fc"].mean(0), 0, atol=1e-5)
    assert description["test_scaler"] == "test"


def test_constant_features_stay_finite(raw):
    X = raw["fc"].copy()
    X[:, 3] = 7.0
    arrays, _ = reduce_features({"fc": X}, ROWS, reduce={"fc": False}, method="none", test_scaler="train", **OPTIONS)
    assert all(np.isfinite(a["fc"]).all() for a in arrays.values())
    np.testing.assert_array_equal(arrays["test"]["fc"][:, 3], 0)


def test_reduce_features_requires_a_train_split(raw):
    with pytest.raises(ValueError, match="'train' split is required"):
        _reduce_rows(raw, {"test": ROWS["test"]})


def test_reduce_features_requires_a_flag_per_layer(raw):
    with pytest.raises(ValueError, match="no entry for layer 'fc'"):
        reduce_features(raw, ROWS, reduce={"conv": True}, method="srp", test_scaler="train", **OPTIONS)


def _with_odd_columns(X):
    """Column 2 nearly constant on the training rows, column 3 constant there (7) but 9 on the others."""
    X = X.copy()
    X[:40, 2] = 1e-3 * np.random.default_rng(2).standard_normal(40)
    X[:40, 3], X[40:, 3] = 7.0, 9.0
    return X


def test_scale_floor_off_is_plain_standard_scaler(raw):
    X = _with_odd_columns(raw["fc"])
    arrays, description = reduce_features(
        {"fc": X}, ROWS, reduce={"fc": False}, method="none", test_scaler="train", scale_floor=False, **OPTIONS
    )
    train = X[:40].astype(np.float64)
    scale = np.where(train.std(0) > 0, train.std(0), 1.0)  # sklearn: a constant column gets scale 1
    for split, idx in ROWS.items():
        np.testing.assert_allclose(arrays[split]["fc"], (X[idx] - train.mean(0)) / scale, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(arrays["test"]["fc"][:, 3], 2.0, rtol=1e-6)
    assert description["scale_floor"] is False


def test_scale_floor_on_tames_nearly_constant_training_columns(raw):
    X = _with_odd_columns(raw["fc"])
    options = {"reduce": {"fc": False}, "method": "none", "test_scaler": "train", **OPTIONS}
    floored, _ = reduce_features({"fc": X}, ROWS, scale_floor=True, **options)
    plain, _ = reduce_features({"fc": X}, ROWS, scale_floor=False, **options)
    # the floor (0.01 x median std, about 0.02 here) divides instead of the tiny std (about 1e-3)
    assert np.abs(plain["test"]["fc"][:, 2]).max() > 10 * np.abs(floored["test"]["fc"][:, 2]).max()
    std = X[:40].astype(np.float64).std(0)
    np.testing.assert_allclose(floored["test"]["fc"][:, 3], 2.0 / (0.01 * np.median(std[std > 0])), rtol=1e-4)


@pytest.mark.parametrize("test_scaler", ["train", "test"])
def test_restandardize_standardises_every_output_column_again(raw, test_scaler):
    options = {
        "reduce": {"conv": True, "fc": False},
        "method": "srp",
        "test_scaler": test_scaler,
        "scale_floor": False,
        **OPTIONS,
    }
    once, _ = reduce_features(raw, ROWS, restandardize=False, **options)
    again, description = reduce_features(raw, ROWS, restandardize=True, **options)
    for layer in raw:
        train = once["train"][layer].astype(np.float64)
        for split in ROWS:
            Z = once[split][layer].astype(np.float64)
            ref = Z if test_scaler == "test" and split != "train" else train
            np.testing.assert_allclose(again[split][layer], (Z - ref.mean(0)) / ref.std(0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(again["train"][layer].std(0), 1, atol=1e-4)
    assert not np.allclose(once["train"]["conv"].std(0), 1, atol=0.05)  # the projection changed the scales
    assert description["restandardize"] is True
