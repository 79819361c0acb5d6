from __future__ import annotations

import json
import time

import numpy as np
import pytest

from lwroi.exceptions import DataLayoutError
from lwroi.features.store import (
    feature_store_complete,
    load_raw_shards,
    open_feature_store,
    raw_shard_complete,
    save_raw_shard,
    write_feature_store,
)

META = {"model": "alexnet", "weights": {"random_init": True, "seed": 0}, "reduction": {"method": "srp"}}
SHARD_META = {"weights": {"random_init": True, "seed": 0}, "spatial": {"features.2": True, "fc8": False}}


@pytest.fixture
def arrays(rng):
    return {
        split: {
            "features.2": rng.standard_normal((n, 6)).astype(np.float32),
            "fc6": rng.standard_normal((n, 3)).astype(np.float32),
        }
        for split, n in (("train", 8), ("test", 2))
    }


def test_feature_store_round_trip(tmp_path, arrays):
    write_feature_store(tmp_path / "store", arrays, META)
    store = open_feature_store(tmp_path / "store")
    assert store.layers == ["features.2", "fc6"]
    assert store.dims == {"features.2": 6, "fc6": 3}
    assert store.n_samples("train") == 8
    assert store.n_samples("test") == 2
    assert store.meta["model"] == "alexnet"
    assert store.meta["weights"]["random_init"] is True
    for split in arrays:
        for mmap in (False, True):
            loaded = store.load(split, mmap=mmap)
            for got, want in zip(loaded, arrays[split].values(), strict=True):
                np.testing.assert_array_equal(got, want)
                assert got.dtype == np.float32


def test_feature_store_file_names_are_sanitised(tmp_path, arrays):
    write_feature_store(tmp_path, arrays, META)
    assert (tmp_path / "features-2__train.npy").is_file()
    assert json.loads((tmp_path / "meta.json").read_text())["files"]["features.2"]["test"] == "features-2__test.npy"


def test_store_without_meta_is_incomplete(tmp_path, arrays):
    write_feature_store(tmp_path, arrays, META)
    (tmp_path / "meta.json").unlink()
    assert not feature_store_complete(tmp_path)
    with pytest.raises(DataLayoutError, match=r"incomplete feature store: no meta.json"):
        open_feature_store(tmp_path)


def test_store_with_a_missing_array_names_it(tmp_path, arrays):
    write_feature_store(tmp_path, arrays, META)
    (tmp_path / "fc6__test.npy").unlink()
    assert not feature_store_complete(tmp_path)
    with pytest.raises(DataLayoutError, match=r"fc6__test.npy \(layer 'fc6', split 'test'\) is missing"):
        open_feature_store(tmp_path)


def test_store_with_a_wrong_shape_names_it(tmp_path, arrays):
    write_feature_store(tmp_path, arrays, META)
    np.save(tmp_path / "fc6__train.npy", np.zeros((7, 3), np.float32))
    with pytest.raises(DataLayoutError, match=r"fc6__train.npy: shape \[7, 3\], meta.json says \[8, 3\]"):
        open_feature_store(tmp_path)


def test_a_failed_rewrite_leaves_no_complete_store(tmp_path, arrays):
    write_feature_store(tmp_path, arrays, META)
    arrays["test"]["fc6"] = np.empty((2, 3), dtype=object)  # .npy without pickle refuses it mid-write
    with pytest.raises(ValueError, match=r"allow_pickle"):
        write_feature_store(tmp_path, arrays, META)
    assert not feature_store_complete(tmp_path)


def test_meta_may_not_override_store_keys(tmp_path, arrays):
    with pytest.raises(ValueError, match=r"meta key 'layers' is reserved"):
        write_feature_store(tmp_path, arrays, {"layers": ["x"]})


def test_splits_must_hold_the_same_layers(tmp_path, arrays):
    arrays["test"].pop("fc6")
    with pytest.raises(ValueError, match=r"split 'test' has layers"):
        write_feature_store(tmp_path, arrays, META)


def test_unknown_split_lists_the_stored_ones(tmp_path, arrays):
    write_feature_store(tmp_path, arrays, META)
    with pytest.raises(KeyError, match=r"no split 'val'; splits: train, test"):
        open_feature_store(tmp_path).load("val")


def test_raw_shards_concatenate_in_order(tmp_path, rng):
    shards = []
    for k, idx in enumerate([np.array([0, 1, 2]), np.array([3, 4])]):
        feats = {
            "features.2": rng.standard_normal((len(idx), 5)).astype(np.float32),
            "fc8": rng.standard_normal((len(idx), 2)),
        }
        save_raw_shard(tmp_path / f"shard{k}", feats, idx, meta=SHARD_META)
        shards.append(feats)
    features, indices, meta = load_raw_shards([tmp_path / "shard0", tmp_path / "shard1"])
    assert list(features) == ["features.2", "fc8"]
    np.testing.assert_array_equal(indices, np.arange(5))
    for layer in features:
        np.testing.assert_array_equal(features[layer], np.concatenate([s[layer] for s in shards]))
    assert meta == SHARD_META


def test_raw_shards_of_different_extractions_are_refused(tmp_path, rng):
    save_raw_shard(tmp_path / "a", {"fc8": rng.standard_normal((2, 3))}, np.array([0, 1]), meta=SHARD_META)
    other = {**SHARD_META, "weights": {"random_init": False}}
    save_raw_shard(tmp_path / "b", {"fc8": rng.standard_normal((2, 3))}, np.array([2, 3]), meta=other)
    with pytest.raises(DataLayoutError, match=r"b: shard meta .* differs from .*a's"):
        load_raw_shards([tmp_path / "a", tmp_path / "b"])


def test_raw_shard_of_an_older_lwroi_without_meta_is_extracted_again(tmp_path, rng):
    save_raw_shard(tmp_path / "shard0", {"fc8": rng.standard_normal((2, 3))}, np.array([0, 1]))
    marker = json.loads((tmp_path / "shard0" / "shard.json").read_text())
    del marker["meta"]
    (tmp_path / "shard0" / "shard.json").write_text(json.dumps(marker))
    assert not raw_shard_complete(tmp_path / "shard0")
    with pytest.raises(DataLayoutError, match=r"shard0: extraction shard of an older lwroi"):
        load_raw_shards([tmp_path / "shard0"])


def test_incomplete_raw_shard_is_named(tmp_path, rng):
    save_raw_shard(tmp_path / "shard0", {"fc8": rng.standard_normal((2, 3))}, np.array([0, 1]))
    (tmp_path / "shard1").mkdir()
    with pytest.raises(DataLayoutError, match=r"shard1: incomplete extraction shard: no shard.json"):
        load_raw_shards([tmp_path / "shard0", tmp_path / "shard1"])


def test_raw_shard_with_a_missing_array_is_named(tmp_path, rng):
    save_raw_shard(tmp_path / "shard0", {"fc8": rng.standard_normal((2, 3))}, np.array([0, 1]))
    (tmp_path / "shard0" / "fc8.npy").unlink()
    with pytest.raises(DataLayoutError, match=r"shard0: incomplete extraction shard: fc8.npy \(layer 'fc8'\)"):
        load_raw_shards([tmp_path / "shard0"])


def test_raw_shards_of_different_layers_are_refused(tmp_path, rng):
    save_raw_shard(tmp_path / "a", {"fc8": rng.standard_normal((2, 3))}, np.array([0, 1]))
    save_raw_shard(tmp_path / "b", {"fc8": rng.standard_normal((2, 4))}, np.array([2, 3]))
    with pytest.raises(DataLayoutError, match=r"b: shard layers or feature sizes differ"):
        load_raw_shards([tmp_path / "a", tmp_path / "b"])


def garble(path, offset: int = -4) -> None:
    """Flip bytes inside a file, keeping its size (as a bad disk or a stray write would)."""
    time.sleep(0.02)  # past the filesystem's timestamp tick: the write must move the mtime
    data = bytearray(path.read_bytes())
    data[offset:] = bytes(b ^ 0xFF for b in data[offset:])
    path.write_bytes(bytes(data))


def test_garbled_store_array_of_the_same_size_is_refused_naming_it(tmp_path, arrays):
    write_feature_store(tmp_path, arrays, META)
    assert feature_store_complete(tmp_path)
    garble(tmp_path / "fc6__train.npy")
    assert not feature_store_complete(tmp_path)
    with pytest.raises(DataLayoutError, match=r"fc6__train.npy: corrupt feature store array: its sha256 differs"):
        open_feature_store(tmp_path)


def test_store_without_checksums_is_not_trusted(tmp_path, arrays):
    """A store written before checksums: rebuilt once rather than used unverified."""
    write_feature_store(tmp_path, arrays, META)
    meta = json.loads((tmp_path / "meta.json").read_text())
    del meta["sha256"]
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataLayoutError, match=r"meta.json: not a feature store description \(KeyError: 'sha256'\)"):
        open_feature_store(tmp_path)


def test_store_lists_every_file_it_holds(tmp_path, arrays):
    write_feature_store(tmp_path, arrays, META)
    files = open_feature_store(tmp_path).file_paths()
    assert sorted(p.name for p in files) == sorted(p.name for p in tmp_path.iterdir())


def test_garbled_raw_shard_is_named_and_not_complete(tmp_path, rng):
    save_raw_shard(tmp_path / "shard0", {"fc8": rng.standard_normal((2, 3))}, np.array([0, 1]))
    assert raw_shard_complete(tmp_path / "shard0")
    garble(tmp_path / "shard0" / "fc8.npy")
    assert not raw_shard_complete(tmp_path / "shard0")
    with pytest.raises(DataLayoutError, match=r"fc8.npy: corrupt extraction shard: its sha256 differs"):
        load_raw_shards([tmp_path / "shard0"])
