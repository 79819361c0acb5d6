"""Standardise and reduce each layer's features, fitted on the training videos only.

Fitting on the training rows alone means held-out videos never shape the scaler or the
projection, so test scores are not inflated by leakage.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from sklearn.random_projection import SparseRandomProjection, johnson_lindenstrauss_min_dim

METHODS = ("srp", "pca", "none")
TEST_SCALERS = ("train", "test")


class LayerReducer:
    """Standardisation followed by an optional projection, for one layer.

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

    Attributes
    ----------
    scaler_ : StandardScaler
        Fitted on the training rows; constant features get scale 1 (no NaN).
    projection_ : SparseRandomProjection, PCA or None
        None for ``method="none"`` and when SRP would not reduce the layer.
    n_features_in_ : int
    n_components_ : int
        Output dimension.
    note_ : str
        Why the layer was kept unprojected, or "".
    """

    def __init__(self, *, method: str, srp_eps: float, pca_ratio: float, seed: int, scale_floor: bool = True) -> None:
        self.method = method
        self.srp_eps = srp_eps
        self.pca_ratio = pca_ratio
        self.seed = seed
        self.scale_floor = scale_floor

    def fit(self, X_train: np.ndarray) -> LayerReducer:
        """Fit the scaler and the projection on training rows of shape (n_samples, n_features)."""
        if self.method not in METHODS:
            raise ValueError(f"method = {self.method!r}: must be one of {', '.join(METHODS)}")
        n_samples, n_features = X_train.shape
        self.n_features_in_ = n_features
        self.scaler_ = _train_scaler(X_train, scale_floor=self.scale_floor)
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
                self.projection_ = SparseRandomProjection(eps=self.srp_eps, random_state=self.seed)
        elif self.method == "pca":
            n_components = None if self.pca_ratio >= 1 else self.pca_ratio
            self.projection_ = PCA(n_components=n_components, svd_solver="full")
        if self.projection_ is not None:
            self.projection_.fit(self.scaler_.transform(X_train))
            self.n_components_ = int(self.projection_.n_components_)
        else:
            self.n_components_ = n_features
        return self

    def transform(self, X: np.ndarray, *, own_scaler: bool = False) -> np.ndarray:
        """Standardise and project rows of shape (n_samples, n_features_in_).

        Parameters
        ----------
        own_scaler : bool, default=False
            Standardise ``X`` with its own mean and std instead of the training ones. This
            reproduces the original implementation's flaw and exists for compatibility only.

        Returns
        -------
        X_reduced : float32 ndarray of shape (n_samples, n_components_)
        """
        if not hasattr(self, "scaler_"):
            raise RuntimeError("this LayerReducer is not fitted yet: call fit() first")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the reducer was fitted on {self.n_features_in_}")
        scaler = StandardScaler().fit(X) if own_scaler else self.scaler_
        Z = scaler.transform(X)
        if self.projection_ is not None:
            Z = self.projection_.transform(Z)
        return np.asarray(Z, dtype=np.float32)

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


SCALE_FLOOR = 0.01
"""Smallest feature scale, as a fraction of the layer's median feature std."""


def _floor_scale(scaler: StandardScaler, X_train: np.ndarray) -> StandardScaler:
    """Keep nearly-constant training features from exploding on held-out rows.

    A ReLU unit that is almost always silent on the training videos has a tiny std; dividing a
    held-out video's activation by it gives z-scores in the thousands that swamp the layer.
    Scales are floored at ``SCALE_FLOOR`` times the layer's median feature std (exactly constant
    features too), so such units stay on the scale of the others.
    """
    std = X_train.std(axis=0)
    positive = std[std > 0]
    floor = SCALE_FLOOR * float(np.median(positive)) if positive.size else 1.0
    scaler.scale_ = np.maximum(std, floor).astype(scaler.scale_.dtype)
    return scaler


def _train_scaler(X_train: np.ndarray, *, scale_floor: bool) -> StandardScaler:
    """A StandardScaler fitted on training rows, its scales floored when ``scale_floor``.

    Only scalers whose statistics other rows reuse get the floor: rows standardised with their
    own statistics cannot explode (``|z| <= sqrt(n - 1)``).
    """
    scaler = StandardScaler().fit(X_train)
    return _floor_scale(scaler, X_train) if scale_floor else scaler


def fit_layer_reducer(
    X_train: np.ndarray, *, method: str, srp_eps: float, pca_ratio: float, seed: int, scale_floor: bool = True
) -> LayerReducer:
    """Fit a :class:`LayerReducer` on the training rows of one layer."""
    return LayerReducer(method=method, srp_eps=srp_eps, pca_ratio=pca_ratio, seed=seed, scale_floor=scale_floor).fit(
        X_train
    )


def _standardize_splits(splits: dict[str, np.ndarray], *, own: bool, scale_floor: bool) -> dict[str, np.ndarray]:
    """Standardise every column of each split with the ``train`` split's statistics.

    The original standardises its concatenated reduced features once more before the
    regression; column by column, doing it per layer is the same.

    Parameters
    ----------
    splits : dict of str to ndarray of shape (n_rows, n_features)
        One layer's output by split; must include ``"train"``.
    own : bool
        Standardise non-train splits with their own statistics instead (``test_scaler: test``).
    scale_floor : bool
        Floor the training scales (see :func:`_train_scaler`).

    Returns
    -------
    splits : dict of str to float32 ndarray of shape (n_rows, n_features)
    """
    train = _train_scaler(splits["train"], scale_floor=scale_floor)
    return {
        split: np.asarray(
            (StandardScaler().fit(Z) if own and split != "train" else train).transform(Z), dtype=np.float32
        )
        for split, Z in splits.items()
    }


def layer_seed(seed: int, position: int) -> int:
    """Projection seed of the layer at ``position``: distinct per layer, fixed by ``seed``."""
    return int(np.random.SeedSequence([seed, position]).generate_state(1)[0])


def reduce_features(
    raw: dict[str, np.ndarray],
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
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Standardise every layer and reduce the chosen ones, fitted on the ``train`` rows.

    Parameters
    ----------
    raw : dict of str to ndarray of shape (n_videos, n_features)
        Features of all videos, by layer, in layer order.
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
        for split, idx in rows.items():
            if len(idx) and (np.min(idx) < 0 or np.max(idx) >= len(X)):
                raise ValueError(f"rows[{split!r}] indexes outside the {len(X)} videos of layer {layer!r}")
        reducer = fit_layer_reducer(
            X[rows["train"]],
            method=method if reduce[layer] else "none",
            srp_eps=srp_eps,
            pca_ratio=pca_ratio,
            seed=layer_seed(seed, position),
            scale_floor=scale_floor,
        )
        own = test_scaler == "test"
        out = {split: reducer.transform(X[idx], own_scaler=own and split != "train") for split, idx in rows.items()}
        if restandardize:
            out = _standardize_splits(out, own=own, scale_floor=scale_floor)
        for split, Z in out.items():
            arrays[split][layer] = Z
        layers[layer] = reducer.describe()
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
