"""The estimator's products on torch's threads give numpy's product, in numpy's dtype, for every input it gets."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lwroi.encoding._products import matmul


@pytest.mark.parametrize(("left", "right"), [(np.float32, np.float32), (np.float64, np.float64),
                                             (np.float32, np.float64)])
def test_matmul_is_numpys_product_in_numpys_dtype(rng, left, right):
    a, b = rng.standard_normal((37, 53)).astype(left), rng.standard_normal((53, 11)).astype(right)
    product = matmul(a, b)
    expected = a @ b
    assert product.dtype == expected.dtype and product.shape == expected.shape
    np.testing.assert_allclose(product, expected, rtol=1e-5 if expected.dtype == np.float32 else 1e-12, atol=1e-5)


def test_matmul_takes_transposed_views_of_read_only_maps(tmp_path, rng):
    """As the cross-Grams take a store's mapped training rows: a transposed view of a read-only map."""
    rows = rng.standard_normal((20, 30)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    mapped = np.load(tmp_path / "rows.npy", mmap_mode="r")
    new = rng.standard_normal((5, 30)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's warning about a non-writable array included
        product = matmul(new, mapped.T)
    np.testing.assert_allclose(product, new @ rows.T, rtol=1e-5, atol=1e-5)
