"""The chunked reduction against the in-memory one it replaced, and its memory bound.

``_in_memory_reduce`` is the former implementation, frozen here as the oracle: every layer read
whole, ``StandardScaler.fit`` on all training rows, numpy's std for the scale floor, SRP and PCA
fitted on the standardised training rows.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from sklearn.random_projection import SparseRandomProjection, johnson_lindenstrauss_min_dim

from lwroi.exceptions import DataLayoutError
from lwroi.features.reduce import BYTES_PER_VALUE, LayerReducer, chunk_rows, layer_seed, reduce_features
from lwroi.features.store import load_raw_shards, save_raw_shard

N_VIDEOS = 61
TRAIN = np.arange(0, 41)
ROWS = {"train": TRAIN, "test": np.array([50, 41, 47, 44, 42, 49, 43]), "challenge": np.arange(51, 61)}
OPTIONS = {"srp_eps": 0.5, "pca_ratio": 0.9, "seed": 3}
REDUCE = {"conv": True, "fc": False, "odd": True}


def _train_scaler(X, scale_floor):
    scaler = StandardScaler().fit(X)
    if scale_floor:
        std = X.std(axis=0)
        positive = std[std > 0]
        floor = 0.01 * float(np.median(positive)) if positive.size else 1.0
        scaler.scale_ = np.maximum(std, floor).astype(scaler.scale_.dtype)
    return scaler


def _in_memory_reduce(raw, rows, *, reduce, method, srp_eps, pca_ratio, test_scaler, seed, scale_floor,
                      restandardize):
    own = test_scaler == "test"
    arrays = {split: {} for split in rows}
    for position, (layer, X) in enumerate(raw.items()):
        X_train = X[rows["train"]]
        scaler = _train_scaler(X_train, scale_floor)
        projection = None
        layer_method = method if reduce[layer] else "none"
        if layer_method == "srp" and johnson_lindenstrauss_min_dim(len(X_train), eps=srp_eps) < X.shape[1]:
            projection = SparseRandomProjection(eps=srp_eps, random_state=layer_seed(seed, position))
        elif layer_method == "pca":
            projection = PCA(n_components=None if pca_ratio >= 1 else pca_ratio, svd_solver="full")
        if projection is not None:
            projection.fit(scaler.transform(X_train))
        out = {}
        for split, idx in rows.items():
            Z = (StandardScaler().fit(X[idx]) if own and split != "train" else scaler).transform(X[idx])
            out[split] = np.asarray(Z if projection is None else projection.transform(Z), dtype=np.float32)
        if restandardize:
            train = _train_scaler(out["train"], scale_floor)
            out = {split: np.asarray((StandardScaler().fit(Z) if own and split != "train" else train).transform(Z),
                                     dtype=np.float32) for split, Z in out.items()}
        for split, Z in out.items():
            arrays[split][layer] = Z
    return arrays


@pytest.fixture(scope="module")
def raw():
    """Low-rank layers with awkward columns: nearly constant, constant, and a ReLU-like sparse one."""
    rng = np.random.default_rng(7)
    basis = rng.standard_normal((N_VIDEOS, 5))

    def layer(n_features):
        X = basis @ rng.standard_normal((5, n_features)) + 0.1 * rng.standard_normal((N_VIDEOS, n_features))
        X[:, 0] = 7.0
        X[:, 1] = 5.0 + 1e-3 * rng.standard_normal(N_VIDEOS)
        X[:, 2] = np.maximum(X[:, 2] - 1.5, 0)
        return X.astype(np.float32)

    return {"conv": layer(500), "fc": layer(30), "odd": layer(237)}


def _budget(rows: int, n_features: int) -> int:
    """The memory budget that gives chunks of ``rows`` rows for a layer of ``n_features``."""
    budget = rows * BYTES_PER_VALUE * n_features
    assert chunk_rows(n_features, budget) == rows
    return budget


SETTINGS = list(itertools.product(["srp", "pca", "none"], ["train", "test"], [True, False], [False, True]))


@pytest.mark.parametrize(("method", "test_scaler", "scale_floor", "restandardize"), SETTINGS)
@pytest.mark.parametrize("rows_per_chunk", [1, 7, 41, 1000])
def test_chunked_reduction_is_the_in_memory_one(raw, method, test_scaler, scale_floor, restandardize, rows_per_chunk):
    """Chunks of 1, 7 (dividing neither 41 training rows nor 7 or 10 held-out ones), all rows, more.

    Equal to float32 rounding; bit for bit where every split is one chunk and no floor is taken (the
    floor now takes sklearn's float64 variance where the former code took numpy's float32 std).
    """
    settings = {"reduce": REDUCE, "method": method, "test_scaler": test_scaler, "scale_floor": scale_floor,
                "restandardize": restandardize, **OPTIONS}
    want = _in_memory_reduce(raw, ROWS, **settings)
    # the budget counts the widest layer's values: narrower layers get more rows per chunk
    got, description = reduce_features(raw, ROWS, memory_budget=_budget(rows_per_chunk, 500), **settings)
    for split in ROWS:
        for layer in raw:
            a, b = got[split][layer], want[split][layer]
            assert a.dtype == np.float32 and a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * np.abs(b).max(), err_msg=f"{split} {layer}")
            if rows_per_chunk >= len(TRAIN) and not scale_floor:
                np.testing.assert_array_equal(a, b, err_msg=f"{split} {layer}")
    assert description["dims"]["fc"] == 30


def test_chunked_reduction_reads_raw_shards_as_it_reads_arrays(raw, tmp_path):
    """Shards of uneven sizes, read memory-mapped: the numbers of the same rows in one array."""
    folders = []
    for k, idx in enumerate(np.array_split(np.arange(N_VIDEOS), [5, 6, 40])):
        save_raw_shard(tmp_path / f"shard{k}", {layer: X[idx] for layer, X in raw.items()}, idx)
        folders.append(tmp_path / f"shard{k}")
    shards, order, _ = load_raw_shards(folders)
    np.testing.assert_array_equal(order, np.arange(N_VIDEOS))
    settings = {"reduce": REDUCE, "method": "srp", "test_scaler": "train", "memory_budget": _budget(3, 500), **OPTIONS}
    from_shards, _ = reduce_features(shards, ROWS, **settings)
    from_arrays, _ = reduce_features(raw, ROWS, **settings)
    for split in ROWS:
        for layer in raw:
            np.testing.assert_array_equal(from_shards[split][layer], from_arrays[split][layer])


def test_raw_layer_gathers_rows_across_shards_in_any_order(raw, tmp_path):
    X = raw["odd"]
    for k, idx in enumerate(np.array_split(np.arange(N_VIDEOS), 3)):
        save_raw_shard(tmp_path / f"s{k}", {"odd": X[idx]}, idx)
    layer = load_raw_shards([tmp_path / f"s{k}" for k in range(3)])[0]["odd"]
    rows = np.array([60, 0, 21, 20, 20, 59, 1])
    np.testing.assert_array_equal(layer[rows], X[rows])
    assert layer.shape == X.shape and layer.dtype == X.dtype
    np.testing.assert_array_equal(np.asarray(layer), X)
    with pytest.raises(IndexError, match="outside the 61 videos"):
        layer[np.array([61])]


def test_srp_components_are_those_of_a_fit_on_the_rows(raw):
    """The projection is made from the shape and seed alone: the very matrix of a fit on the standardised rows."""
    reducer = LayerReducer(method="srp", **OPTIONS).fit(raw["conv"], TRAIN)
    fitted = SparseRandomProjection(eps=0.5, random_state=3).fit(_train_scaler(raw["conv"][TRAIN], True).transform(
        raw["conv"][TRAIN]))
    ours, theirs = reducer.projection_.components_, fitted.components_
    assert ours.dtype == theirs.dtype == np.float32
    assert ours.shape == theirs.shape and (ours != theirs).nnz == 0


class _Recorder:
    """An array that records how many rows each read asks for, and refuses to be read whole."""

    def __init__(self, X: np.ndarray) -> None:
        self.X, self.shape, self.dtype, self.reads = X, X.shape, X.dtype, []

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        self.reads.append(len(rows))
        return self.X[rows]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole layer was read")


@pytest.mark.parametrize("method", ["srp", "none"])
def test_reads_are_bounded_by_the_memory_budget(raw, method):
    source = _Recorder(raw["conv"])
    budget = _budget(4, 500)
    arrays, _ = reduce_features({"conv": source}, ROWS, reduce={"conv": True}, method=method, test_scaler="test",
                                memory_budget=budget, **OPTIONS)
    assert max(source.reads) == 4
    # train: statistics, then the projection; held-out splits: own statistics, then the projection
    assert sum(source.reads) == 2 * sum(len(idx) for idx in ROWS.values())
    assert arrays["test"]["conv"].shape[0] == 7


def test_empty_held_out_split_gives_an_empty_array(raw):
    rows = {**ROWS, "challenge": np.arange(0)}
    arrays, _ = reduce_features(raw, rows, reduce=REDUCE, method="srp", test_scaler="test", restandardize=True,
                                **OPTIONS)
    assert arrays["challenge"]["conv"].shape == (0, arrays["train"]["conv"].shape[1])
    assert arrays["challenge"]["conv"].dtype == np.float32


def test_raw_layer_refuses_a_file_changed_since_it_was_verified(raw, tmp_path):
    save_raw_shard(tmp_path / "s0", {"fc": raw["fc"]}, np.arange(N_VIDEOS))
    layer = load_raw_shards([tmp_path / "s0"])[0]["fc"]
    save_raw_shard(tmp_path / "s0", {"fc": raw["fc"] + 1}, np.arange(N_VIDEOS))  # re-extracted meanwhile
    with pytest.raises(DataLayoutError, match=r"fc.npy: raw shard file changed since it was verified"):
        layer[np.array([0])]
