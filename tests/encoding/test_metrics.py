"""Per-voxel Pearson r against scipy, the original's PCC against its transcription, and the conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from lwroi.encoding.metrics import mean_pcc, pearson_r_columns, pearson_r_columns_torch
from tests.encoding.original import vectorized_correlation


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_pearson_r_columns_matches_scipy(rng):
    Y_true = rng.standard_normal((40, 7))
    Y_pred = Y_true + rng.standard_normal((40, 7))
    expected = [pearsonr(Y_true[:, v], Y_pred[:, v])[0] for v in range(7)]
    np.testing.assert_allclose(pearson_r_columns(Y_true, Y_pred), expected, rtol=1e-12)


def test_constant_columns_score_zero(rng):
    Y_true = rng.standard_normal((20, 3))
    Y_true[:, 1] = 0.1  # a constant voxel: its float mean is not exactly 0.1
    Y_pred = rng.standard_normal((20, 3))
    Y_pred[:, 2] = 5.0  # a constant prediction
    r = pearson_r_columns(Y_true, Y_pred)
    assert r[1] == 0.0 and r[2] == 0.0
    assert np.isfinite(mean_pcc(Y_true, Y_pred))


def test_mean_pcc_is_mean_of_columns(rng):
    Y_true, Y_pred = rng.standard_normal((30, 5)), rng.standard_normal((30, 5))
    assert mean_pcc(Y_true, Y_pred) == pytest.approx(pearson_r_columns(Y_true, Y_pred).mean())


def test_shape_mismatch_is_rejected(rng):
    with pytest.raises(ValueError, match="same shape"):
        pearson_r_columns(rng.standard_normal((10, 3)), rng.standard_normal((10, 4)))


def test_torch_version_batched_over_models_matches_numpy(rng):
    Y_true = rng.standard_normal((4, 25, 6)).astype(np.float32)
    Y_pred = (Y_true + rng.standard_normal((4, 25, 6))).astype(np.float32)
    Y_true[2, :, 3] = 1.5
    r = pearson_r_columns_torch(torch.from_numpy(Y_true), torch.from_numpy(Y_pred))
    assert r.shape == (4, 6)
    expected = np.stack([pearson_r_columns(Y_true[g], Y_pred[g]) for g in range(4)])
    np.testing.assert_allclose(r.numpy(), expected, atol=1e-6)
    assert r[2, 3] == 0.0


def test_torch_mask_equals_dropping_rows(rng):
    Y_true = rng.standard_normal((2, 30, 4)).astype(np.float32)
    Y_pred = rng.standard_normal((2, 30, 4)).astype(np.float32)
    keep = [20, 30]
    mask = torch.tensor([[1.0] * k + [0.0] * (30 - k) for k in keep])
    r = pearson_r_columns_torch(torch.from_numpy(Y_true), torch.from_numpy(Y_pred), mask)
    for g, k in enumerate(keep):
        np.testing.assert_allclose(r[g].numpy(), pearson_r_columns(Y_true[g, :k], Y_pred[g, :k]), atol=1e-6)


def test_original_pcc_is_the_originals_vectorized_correlation(rng):
    Y_true = rng.standard_normal((16, 7))
    Y_pred = Y_true + rng.standard_normal((16, 7))
    expected = vectorized_correlation(Y_true, Y_pred)
    np.testing.assert_allclose(pearson_r_columns(Y_true, Y_pred, kind="original"), expected, rtol=1e-12)
    # about r * n / (n - 1): ~7% above Pearson r on a 16-row batch
    np.testing.assert_allclose(expected, pearson_r_columns(Y_true, Y_pred) * 16 / 15, rtol=1e-6)
    assert mean_pcc(Y_true, Y_pred, kind="original") == pytest.approx(expected.mean())


def test_original_pcc_torch_batched_and_masked_matches_the_original(rng):
    Y_true = rng.standard_normal((2, 30, 4)).astype(np.float32)
    Y_pred = (Y_true + rng.standard_normal((2, 30, 4))).astype(np.float32)
    keep = [16, 30]
    mask = torch.tensor([[1.0] * k + [0.0] * (30 - k) for k in keep])
    r = pearson_r_columns_torch(torch.from_numpy(Y_true), torch.from_numpy(Y_pred), mask, kind="original")
    for g, k in enumerate(keep):
        expected = vectorized_correlation(Y_true[g, :k].astype(np.float64), Y_pred[g, :k].astype(np.float64))
        np.testing.assert_allclose(r[g].numpy(), expected, atol=1e-6)


def test_original_pcc_scores_constant_columns_zero(rng):
    Y_true = rng.standard_normal((20, 3))
    Y_true[:, 1] = 0.1
    Y_pred = rng.standard_normal((20, 3))
    Y_pred[:, 2] = 5.0
    r = pearson_r_columns(Y_true, Y_pred, kind="original")
    assert r[1] == 0.0 and r[2] == 0.0 and r[0] != 0.0


def test_unknown_pcc_kind_is_named(rng):
    with pytest.raises(ValueError, match="pcc='spearman': must be one of pearson, original"):
        pearson_r_columns(rng.standard_normal((5, 2)), rng.standard_normal((5, 2)), kind="spearman")
