"""Sample splits: pure functions of sizes and seed, disjoint, covering, sorted (or in the original's order)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import KFold

from lwroi.data import heldout_split, inner_validation_split, kfold_splits


def test_heldout_split_partitions_the_videos():
    train, test = heldout_split(1000, 100)
    assert len(train) == 900 and len(test) == 100
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1000))
    assert (np.diff(train) > 0).all() and (np.diff(test) > 0).all()


def test_heldout_split_reproduces_the_original_permutation():
    # numpy.random.seed(400); numpy.random.permutation(1000)[:100], as in the original code
    _, test = heldout_split(1000, 100, seed=400)
    assert test[:8].tolist() == [1, 4, 27, 34, 47, 55, 77, 80]
    np.testing.assert_array_equal(test, np.sort(np.random.RandomState(400).permutation(1000)[:100]))


def test_heldout_split_in_permutation_order_is_the_originals():
    # the original: test_idx = permutation(1000)[:100] after np.random.seed(400); training rows are
    # np.delete(rows, test_idx, 0) (video order), held-out rows rows[test_idx] (permutation order)
    test_idx = np.random.RandomState(400).permutation(1000)[:100]
    train, test = heldout_split(1000, 100, seed=400, order="permutation")
    np.testing.assert_array_equal(test, test_idx)
    np.testing.assert_array_equal(train, np.delete(np.arange(1000), test_idx, 0))
    assert test[:4].tolist() != sorted(test[:4].tolist())


def test_heldout_split_rejects_an_unknown_order():
    with pytest.raises(ValueError, match="test_order='shuffled': must be one of sorted, permutation"):
        heldout_split(10, 2, order="shuffled")


def test_heldout_split_depends_on_the_seed_only():
    np.testing.assert_array_equal(heldout_split(50, 10, seed=1)[1], heldout_split(50, 10, seed=1)[1])
    assert not np.array_equal(heldout_split(50, 10, seed=1)[1], heldout_split(50, 10, seed=2)[1])


@pytest.mark.parametrize("n_test", [0, 10])
def test_heldout_split_rejects_impossible_sizes(n_test):
    with pytest.raises(ValueError, match=f"n_test = {n_test}: must be between 1 and n_videos - 1 = 9"):
        heldout_split(10, n_test)


def test_kfold_validation_folds_cover_every_sample_once():
    folds = kfold_splits(23, 4, seed=0)
    validation = np.concatenate([val for _, val in folds])
    assert np.array_equal(np.sort(validation), np.arange(23))
    for train, val in folds:
        assert np.intersect1d(train, val).size == 0 and len(train) + len(val) == 23
        assert abs(len(val) - 23 / 4) < 1


def test_kfold_splits_are_reproducible():
    for (t1, v1), (t2, v2) in zip(kfold_splits(20, 2, seed=5), kfold_splits(20, 2, seed=5), strict=True):
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(v1, v2)


@pytest.mark.parametrize(("n_samples", "n_folds"), [(900, 2), (23, 4), (10, 3), (5, 5)])
def test_contiguous_folds_are_sklearn_kfold_without_shuffling(n_samples, n_folds):
    expected = KFold(n_splits=n_folds, shuffle=False).split(np.zeros((n_samples, 1)))
    folds = kfold_splits(n_samples, n_folds, seed=123, split="contiguous")
    for (train, val), (want_train, want_val) in zip(folds, expected, strict=True):
        np.testing.assert_array_equal(train, want_train)
        np.testing.assert_array_equal(val, want_val)


def test_kfold_rejects_an_unknown_split():
    with pytest.raises(ValueError, match="fold_split='random': must be one of shuffled, contiguous"):
        kfold_splits(10, 2, seed=0, split="random")


@pytest.mark.parametrize("n_folds", [1, 6])
def test_kfold_rejects_impossible_fold_counts(n_folds):
    with pytest.raises(ValueError, match=f"cannot make {n_folds} folds from 5 samples"):
        kfold_splits(5, n_folds, seed=0)


def test_inner_validation_split_holds_out_the_fraction():
    fit, val = inner_validation_split(200, 0.1, seed=0)
    assert len(val) == 20 and len(fit) == 180
    assert np.array_equal(np.sort(np.concatenate([fit, val])), np.arange(200))


def test_inner_validation_split_keeps_two_samples_on_each_side():
    assert len(inner_validation_split(10, 0.01, seed=0)[1]) == 2
    assert len(inner_validation_split(4, 0.9, seed=0)[0]) == 2


def test_inner_validation_split_rejects_too_few_samples():
    with pytest.raises(ValueError, match="need n_samples >= 4"):
        inner_validation_split(3, 0.5, seed=0)
