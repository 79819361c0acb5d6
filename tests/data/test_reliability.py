"""Noise ceilings from repetitions: the split-half reliability recovers a known noise level."""

from __future__ import annotations

import numpy as np
import pytest

from lwroi.data import noise_ceiling, noise_normalised, split_half_reliability


@pytest.mark.parametrize("noise_sd", [0.5, 1.0, 2.0])
def test_reliability_matches_the_noise_level(noise_sd):
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((1000, 1, 400))
    reps = signal + noise_sd * rng.standard_normal((1000, 3, 400))
    ceiling = np.sqrt(split_half_reliability(reps))
    assert ceiling.mean() == pytest.approx(noise_ceiling(noise_sd), abs=0.01)


def test_two_repetitions_give_the_spearman_brown_corrected_split_half_r():
    rng = np.random.default_rng(1)
    reps = rng.standard_normal((50, 2, 4)) + rng.standard_normal((50, 1, 4))
    r = np.array([np.corrcoef(reps[:, 0, v], reps[:, 1, v])[0, 1] for v in range(4)])
    np.testing.assert_allclose(split_half_reliability(reps), 2 * r / (1 + r), rtol=1e-12)


def test_missing_repetitions_are_skipped_pairwise_and_chunks_agree(monkeypatch):
    rng = np.random.default_rng(2)
    reps = rng.standard_normal((200, 3, 30)) + rng.standard_normal((200, 1, 30))
    whole = split_half_reliability(reps)
    monkeypatch.setattr("lwroi.data.reliability.CHUNK_ELEMENTS", 200 * 3 * 7)  # several voxel chunks
    np.testing.assert_allclose(split_half_reliability(reps), whole, rtol=1e-12)
    holed = reps.copy()
    holed[:100, 2, 0] = np.nan  # voxel 0: repetition 2 missing for half the videos
    holed[:, 1:, 1] = np.nan  # voxel 1: one repetition only -> undefined
    rel = split_half_reliability(holed)
    assert np.isfinite(rel[0]) and rel[0] == pytest.approx(whole[0], abs=0.1)
    assert np.isnan(rel[1])
    np.testing.assert_allclose(rel[2:], whole[2:], rtol=1e-12)


def test_pure_noise_voxels_have_non_positive_reliability_and_no_normalised_score():
    rng = np.random.default_rng(3)
    reps = rng.standard_normal((300, 3, 200))
    rel = split_half_reliability(reps)
    assert (rel <= 0).sum() > 50  # no signal: about half the voxels come out non-positive
    normalised = noise_normalised(np.full(200, 0.1), rel)
    assert np.isnan(normalised[rel <= 0]).all() and np.isfinite(normalised[rel > 0]).all()
    np.testing.assert_allclose(normalised[rel > 0], 0.1 / np.sqrt(rel[rel > 0]))


def test_shape_is_checked():
    with pytest.raises(ValueError, match=r"n_repetitions >= 2"):
        split_half_reliability(np.zeros((10, 1, 3)))
