"""Content digests and finiteness checks of feature blocks, read or mapped from a store's ``.npy`` files."""

from __future__ import annotations

import os

import numpy as np

from lwroi.encoding._arrays import all_finite, content_digest
from lwroi.features.store import map_npy


def _mapped(path, array: np.ndarray) -> np.memmap:
    np.save(path, array)
    return map_npy(path)


def test_a_mapped_file_is_identified_by_its_bytes_as_a_read_array_is(tmp_path):
    """A store's file mapped read-only is keyed by its sha256: reloads agree, any change of content does not."""
    rng = np.random.default_rng(0)
    block = rng.standard_normal((30, 7)).astype(np.float32)
    first = _mapped(tmp_path / "a.npy", block)
    np.testing.assert_array_equal(first, block)
    again = map_npy(tmp_path / "a.npy")
    assert content_digest([first]) == content_digest([again]) == content_digest([np.asarray(again)])
    assert content_digest([_mapped(tmp_path / "b.npy", block)]) == content_digest([first])  # same bytes
    before = content_digest([first])
    changed = block.copy()
    changed[3, 2] += 1.0
    os.replace(tmp_path / "a.npy", tmp_path / "old.npy")  # the store replaces files, it never edits them
    assert content_digest([_mapped(tmp_path / "a.npy", changed)]) != before
    # the old mapping keeps the hash of the file it maps, not of the file its name now holds
    assert content_digest([first]) == before
    # a slice carries the file's name but not all of its bytes: hashed by content, as the read array's slice
    assert content_digest([first[:10]]) == content_digest([block[:10]]) != before
    assert content_digest([np.asarray(first)[:, :3]]) == content_digest([block[:, :3]])


def test_a_mapped_file_with_a_nan_is_not_finite_and_a_finite_one_is_remembered(tmp_path):
    block = np.ones((5, 4), dtype=np.float32)
    assert all_finite(_mapped(tmp_path / "ok.npy", block))
    assert all_finite(np.asarray(map_npy(tmp_path / "ok.npy")))
    bad = block.copy()
    bad[2, 1] = np.nan
    assert not all_finite(_mapped(tmp_path / "bad.npy", bad))
    assert not all_finite(map_npy(tmp_path / "bad.npy")[1:3])
    assert not all_finite(bad) and all_finite(block)
