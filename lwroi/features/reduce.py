"""Standardise and reduce each layer's features, fitted on the training videos only, in row chunks.

Fitting on the training rows alone means held-out videos never shape the scaler or the
projection, so test scores are not inflated by leakage.

Big layers never sit in memory for all videos at once (VGG16's first block is 3.2 M values a
video: 14 GB for the 1,102 Algonauts videos). A layer is read in chunks of rows, as many as
``memory_budget`` holds (:func:`chunk_rows`): one pass over the training rows gathers the
standardisation statistics (sklearn's own ``StandardScaler.partial_fit``), then every split is
standardised and projected chunk by chunk into its float32 output. The sparse random projection
is data-independent: it is made from the layer's shape and seed alone, the components those of
a fit on the rows themselves. PCA needs the data: it materialises one layer's standardised
training rows (n_train x n_features).

Peak memory is thus ``memory_budget``, plus the outputs (n_rows x reduced dims, float32; a
layer left unprojected is its full width), plus one layer's SRP matrix (or, with PCA, its
training rows), plus sklearn's per-feature statistics (about 75 B a feature of the widest layer:
240 MB for 3.2 M). The SRP matrix of VGG16's first block for 900 training rows at eps 0.1 is
5,830 x 3.2 M with 10.4 M nonzeros: 80 MB held, about 400 MB while sklearn draws it (measured
by ``scripts/measure_memory.py``). An in-memory array is read the same way: one code path,
whatever the chunk size; the results depend on neither the chunk size (but for float rounding)
nor how the videos were sharded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from sklearn.random_projection import SparseRandomProjection, johnson_lindenstrauss_min_dim

METHODS = ("srp", "pca", "none")
TEST_SCALERS = ("train", "test")

DEFAULT_MEMORY_BUDGET = 256 * 2**20
"""Bytes a chunk of rows may take while it is read, standardised and projected."""

BYTES_PER_VALUE = 32
"""Working bytes per value of a chunk: the rows read (4 for float32), sklearn's ``partial_fit``
temporaries (its NaN mask and float64 deviations: 16 measured for float32 rows), the standardised
copy (4), with margin (float64 rows need more)."""


class RowSource(Protocol):
    """Rows read on demand: an ndarray, or one layer of the raw shards (:class:`~lwroi.features.store.RawLayer`).

    Indexing with a 1-D integer array returns a new ndarray of those rows, in that order.
    """

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def __getitem__(self, rows: np.ndarray) -> np.ndarray: ...


def chunk_rows(n_features: int, memory_budget: int) -> int:
    """Rows per chunk: as many as ``memory_budget`` holds at :data:`BYTES_PER_VALUE`, at least one."""
    return max(1, int(memory_budget) // (BYTES_PER_VALUE * max(n_features, 1)))


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """float32 rows are standardised in float32 (as ``StandardScaler`` keeps them), any other in float64."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float32 else np.dtype(np.float64)


class LayerReducer:
    """Standardisation followed by an optional projection, for one layer, fitted and applied in row chunks.

    Parameters
    ----------
    method : {"srp", "pca", "none"}
        Sparse random projection (Johnson-Lindenstrauss size from ``srp_eps``), PCA keeping
        ``pca_ratio`` of the variance, or standardisation only.
    srp_eps : float
    pca_ratio : float
    seed : int
        Seeds the random projection.
    scale_floor : bool, default=True
        Floor the training scales (see :func:`_floor_scale`); False: plain ``StandardScaler``,
        as the original.
    memory_budget : int, default=DEFAULT_MEMORY_BUDGET
        Bytes a chunk of rows may take (see :func:`chunk_rows`). The results do not depend on
        it but for float rounding.

    Attributes
    ----------
    scaler_ : StandardScaler
        Fitted on the training rows; constant features get scale 1 (no NaN).
    projection_ : SparseRandomProjection, PCA or None
        None for ``method="none"`` and when SRP would not reduce the layer.
    n_features_in_ : int
    n_components_ : int
        Output dimension.
    chunk_rows_ : int
        Rows read at a time.
    note_ : str
        Why the layer was kept unprojected, or "".
    """

    def __init__(self, *, method: str, srp_eps: float, pca_ratio: float, seed: int, scale_floor: bool = True,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET) -> None:
        self.method = method
        self.srp_eps = srp_eps
        self.pca_ratio = pca_ratio
        self.seed = seed
        self.scale_floor = scale_floor
        self.memory_budget = memory_budget

    def fit(self, X: RowSource, rows: np.ndarray | None = None) -> LayerReducer:
        """Fit the scaler and the projection on rows ``rows`` of ``X`` (all of them by default).

        Parameters
        ----------
        X : ndarray or RowSource of shape (n_videos, n_features)
        rows : int ndarray, optional
            The training rows.
        """
        if self.method not in METHODS:
            raise ValueError(f"method = {self.method!r}: must be one of {', '.join(METHODS)}")
        rows = _all_rows(X, rows)
        n_samples, n_features = len(rows), int(X.shape[1])
        if not n_samples:
            raise ValueError("no training rows: the reduction is fitted on them")
        self.n_features_in_ = n_features
        self.chunk_rows_ = chunk_rows(n_features, self.memory_budget)
        self._dtype = _work_dtype(X.dtype)
        self.scaler_ = _fit_scaler(self._chunks(X, rows), scale_floor=self.scale_floor)
        self.projection_: SparseRandomProjection | PCA | None = None
        self.note_ = ""
        if self.method == "srp":
            target = int(johnson_lindenstrauss_min_dim(n_samples, eps=self.srp_eps))
            if target >= n_features:
                self.note_ = (
                    f"kept unprojected: SRP with eps={self.srp_eps} and {n_samples} samples needs "
                    f"{target} components, not fewer than the {n_features} features"
                )
            else:
                # the matrix comes from the shape and the seed alone: an empty sparse stand-in of the
                # standardised rows' shape and dtype gives the components a fit on the rows would
                stand_in = sp.csr_matrix((n_samples, n_features), dtype=self._dtype)
                self.projection_ = SparseRandomProjection(eps=self.srp_eps, random_state=self.seed).fit(stand_in)
        elif self.method == "pca":
            n_components = None if self.pca_ratio >= 1 else self.pca_ratio
            # PCA needs the data: this layer's standardised training rows are materialised, and
            # centred in place (copy=False) rather than copied once more
            train = np.empty((n_samples, n_features), dtype=self._dtype)
            _fill(train, (self.scaler_.transform(chunk) for chunk in self._chunks(X, rows)))
            self.projection_ = PCA(n_components=n_components, svd_solver="full", copy=False).fit(train)
        self.n_components_ = n_features if self.projection_ is None else int(self.projection_.n_components_)
        return self

    def transform(self, X: RowSource, rows: np.ndarray | None = None, *, own_scaler: bool = False) -> np.ndarray:
        """Standardise and project rows ``rows`` of ``X`` (all of them by default), chunk by chunk.

        Parameters
        ----------
        X : ndarray or RowSource of shape (n_videos, n_features_in_)
        rows : int ndarray, optional
        own_scaler : bool, default=False
            Standardise the rows with their own mean and std instead of the training ones. This
            reproduces the original implementation's flaw and exists for compatibility only.

        Returns
        -------
        X_reduced : float32 ndarray of shape (n_rows, n_components_)
        """
        if not hasattr(self, "scaler_"):
            raise RuntimeError("this LayerReducer is not fitted yet: call fit() first")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the reducer was fitted on {self.n_features_in_}")
        rows = _all_rows(X, rows)
        out = np.empty((len(rows), self.n_components_), dtype=np.float32)
        if not len(rows):
            return out
        scaler = _fit_scaler(self._chunks(X, rows), scale_floor=False) if own_scaler else self.scaler_
        _fill(out, (self._project(scaler.transform(chunk)) for chunk in self._chunks(X, rows)))
        return out

    def _project(self, Z: np.ndarray) -> np.ndarray:
        return Z if self.projection_ is None else self.projection_.transform(Z)

    def _chunks(self, X: RowSource, rows: np.ndarray) -> Iterator[np.ndarray]:
        """Rows ``rows`` of ``X``, ``chunk_rows_`` at a time, in the working dtype."""
        for start in range(0, len(rows), self.chunk_rows_):
            yield np.asarray(X[rows[start : start + self.chunk_rows_]], dtype=self._dtype)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: method requested and applied, sizes, seed, note."""
        return {
            "method": self.method,
            "projected": self.projection_ is not None,
            "n_features": self.n_features_in_,
            "n_components": self.n_components_,
            "seed": self.seed,
            "note": self.note_,
        }


def _all_rows(X: RowSource, rows: np.ndarray | None) -> np.ndarray:
    return np.arange(X.shape[0]) if rows is None else np.asarray(rows)


def _fill(out: np.ndarray, chunks: Iterable[np.ndarray]) -> None:
    """Write consecutive chunks of rows into ``out``, cast to its dtype."""
    start = 0
    for chunk in chunks:
        out[start : start + len(chunk)] = chunk
        start += len(chunk)


SCALE_FLOOR = 0.01
"""Smallest feature scale, as a fraction of the layer's median feature std."""


def _floor_scale(scaler: StandardScaler) -> StandardScaler:
    """Keep nearly-constant training features from exploding on held-out rows.

    A ReLU unit that is almost always silent on the training videos has a tiny std; dividing a
    held-out video's activation by it gives z-scores in the thousands that swamp the layer.
    Scales are floored at ``SCALE_FLOOR`` times the layer's median feature std (exactly constant
    features too), so such units stay on the scale of the others.
    """
    std = np.sqrt(scaler.var_)
    positive = std[std > 0]
    floor = SCALE_FLOOR * float(np.median(positive)) if positive.size else 1.0
    scaler.scale_ = np.maximum(std, floor)
    return scaler


def _fit_scaler(chunks: Iterable[np.ndarray], *, scale_floor: bool) -> StandardScaler:
    """A StandardScaler fitted on the rows of ``chunks`` (one pass), its scales floored when ``scale_floor``.

    ``partial_fit`` merges the chunks' float64 statistics (Chan et al.), so any chunking gives
    the statistics of a fit on all rows at once to float64 rounding; one chunk is that fit.
    Only scalers whose statistics other rows reuse get the floor: rows standardised with their
    own statistics cannot explode (``|z| <= sqrt(n - 1)``).
    """
    scaler = StandardScaler()
    for chunk in chunks:
        scaler.partial_fit(chunk)
    return _floor_scale(scaler) if scale_floor else scaler


def fit_layer_reducer(
    X_train: RowSource, *, method: str, srp_eps: float, pca_ratio: float, seed: int, scale_floor: bool = True,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> LayerReducer:
    """Fit a :class:`LayerReducer` on the training rows of one layer."""
    return LayerReducer(method=method, srp_eps=srp_eps, pca_ratio=pca_ratio, seed=seed, scale_floor=scale_floor,
                        memory_budget=memory_budget).fit(X_train)


def _standardize_splits(splits: dict[str, np.ndarray], *, own: bool, scale_floor: bool) -> dict[str, np.ndarray]:
    """Standardise every column of each split with the ``train`` split's statistics, in place.

    The original standardises its concatenated reduced features once more before the
    regression; column by column, doing it per layer is the same. The arrays are the reduced
    outputs, already in memory: they are one chunk each.

    Parameters
    ----------
    splits : dict of str to float32 ndarray of shape (n_rows, n_features)
        One layer's output by split; must include ``"train"``. Overwritten.
    own : bool
        Standardise non-train splits with their own statistics instead (``test_scaler: test``).
    scale_floor : bool
        Floor the training scales (see :func:`_fit_scaler`).

    Returns
    -------
    splits : dict of str to float32 ndarray of shape (n_rows, n_features)
    """
    train = _fit_scaler([splits["train"]], scale_floor=scale_floor)
    for split, Z in splits.items():
        if len(Z):
            scaler = _fit_scaler([Z], scale_floor=False) if own and split != "train" else train
            scaler.transform(Z, copy=False)
    return splits


def layer_seed(seed: int, position: int) -> int:
    """Projection seed of the layer at ``position``: distinct per layer, fixed by ``seed``."""
    return int(np.random.SeedSequence([seed, position]).generate_state(1)[0])


def reduce_features(
    raw: Mapping[str, RowSource],
    rows: dict[str, np.ndarray],
    *,
    reduce: dict[str, bool],
    method: str,
    srp_eps: float,
    pca_ratio: float,
    test_scaler: str,
    seed: int,
    scale_floor: bool = True,
    restandardize: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Standardise every layer and reduce the chosen ones, fitted on the ``train`` rows, layer by layer.

    Parameters
    ----------
    raw : dict of str to ndarray or RowSource of shape (n_videos, n_features)
        Features of all videos, by layer, in layer order; read in chunks of rows, one layer at
        a time (:func:`~lwroi.features.store.load_raw_shards` gives them memory-mapped).
    rows : dict of str to int ndarray
        Video indices of each split; must include ``"train"``.
    reduce : dict of str to bool
        Layers to project (others are only standardised); one entry per layer.
    method : {"srp", "pca", "none"}
    srp_eps, pca_ratio : float
    test_scaler : {"train", "test"}
        ``train``: every split uses the training scaler. ``test``: non-train splits are
        standardised with their own statistics (the original's flaw, compatibility only).
    seed : int
        Base seed; each layer's projection gets its own seed from it.
    scale_floor : bool, default=True
        Floor the training scales (see :func:`_floor_scale`); False: plain ``StandardScaler``.
    restandardize : bool, default=False
        Standardise every output column again (see :func:`_standardize_splits`), reduced layers
        or not, as the original does.
    memory_budget : int, default=DEFAULT_MEMORY_BUDGET
        Bytes a chunk of rows may take (see :class:`LayerReducer`).

    Returns
    -------
    arrays : dict of split to dict of layer to float32 ndarray of shape (n_rows, n_components)
    description : dict
        The settings, ``dims`` by layer and each layer's :meth:`LayerReducer.describe`.
    """
    if "train" not in rows:
        raise ValueError(f"rows has splits {sorted(rows)}: a 'train' split is required to fit the reduction")
    if test_scaler not in TEST_SCALERS:
        raise ValueError(f"test_scaler = {test_scaler!r}: must be one of {', '.join(TEST_SCALERS)}")
    missing = [layer for layer in raw if layer not in reduce]
    if missing:
        raise ValueError(f"reduce has no entry for layer {missing[0]!r}; layers: {', '.join(raw)}")
    arrays: dict[str, dict[str, np.ndarray]] = {split: {} for split in rows}
    layers: dict[str, dict[str, Any]] = {}
    for position, (layer, X) in enumerate(raw.items()):
        n_videos = X.shape[0]
        for split, idx in rows.items():
            if len(idx) and (np.min(idx) < 0 or np.max(idx) >= n_videos):
                raise ValueError(f"rows[{split!r}] indexes outside the {n_videos} videos of layer {layer!r}")
        reducer = LayerReducer(method=method if reduce[layer] else "none", srp_eps=srp_eps, pca_ratio=pca_ratio,
                               seed=layer_seed(seed, position), scale_floor=scale_floor, memory_budget=memory_budget)
        out, layers[layer] = _reduce_layer(reducer, X, rows, own=test_scaler == "test")
        del reducer  # its projection matrix goes before the next layer makes its own
        if restandardize:
            out = _standardize_splits(out, own=test_scaler == "test", scale_floor=scale_floor)
        for split, Z in out.items():
            arrays[split][layer] = Z
    description = {
        "method": method,
        "test_scaler": test_scaler,
        "scale_floor": scale_floor,
        "restandardize": restandardize,
        "srp_eps": srp_eps,
        "pca_ratio": pca_ratio,
        "seed": seed,
        "dims": {layer: d["n_components"] for layer, d in layers.items()},
        "layers": layers,
    }
    return arrays, description


def _reduce_layer(reducer: LayerReducer, X: RowSource, rows: dict[str, np.ndarray], *,
                  own: bool) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Fit ``reducer`` on the train rows of one layer and apply it to every split."""
    reducer.fit(X, rows["train"])
    out = {split: reducer.transform(X, idx, own_scaler=own and split != "train") for split, idx in rows.items()}
    return out, reducer.describe()
