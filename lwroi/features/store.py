"""Feature arrays on disk: the reduced feature store, and raw per-shard extraction results.

Arrays are written first and the JSON marker last, each atomically, so a folder with a
marker is complete and a killed write never looks finished. The marker holds the sha256 of
every array, so a garbled file is found when the folder is opened, not used. Stores are
reused by every run that asks for the same features: their folders are named by a hash of the
videos and of every feature setting (:func:`feature_paths`).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from lwroi._io import atomic_save_npy, atomic_write_json, sha256_file_cached
from lwroi.config import Config, FeatureConfig, default_model_name, stable_hash
from lwroi.data import VideoFingerprint
from lwroi.exceptions import DataLayoutError

META_FILE = "meta.json"
SHARD_FILE = "shard.json"
SHARD_INDICES = "video_indices.npy"
_RESERVED = ("layers", "dims", "splits", "shapes", "files", "sha256")
_SAFE_SPLIT = re.compile(r"[A-Za-z0-9_-]+")

NOT_HASHED: dict[str, str] = {
    "store_dir": "where the stores live, not what they hold",
    "batch_size": "frames per forward pass: speed, not the features",
    "frame_cache": "whether decoded frames are kept on disk: speed, not the features",
    "models": "a zoo's entries: each model's store is named by its own settings (Config.for_model), which hold none",
}
"""The feature settings that no store folder's name holds, and why; every other one does."""

REDUCTION_FIELDS = ("reduction", "reduce_layers", "srp_eps", "pca_ratio", "test_scaler", "scale_floor",
                    "restandardize")
"""Feature settings of the reduced store alone. Every other hashed setting, one added later included, names
the raw shards' folder (and so the store inside it): a setting nobody sorted can only cost a new extraction.
``seed`` (random weights, and the random projection) enters both hashes."""

SPLIT_FIELDS = ("n_train_videos", "n_test", "split_seed", "test_order")
"""Data settings that decide the reduced store's rows."""

_OMIT = object()
_CANONICAL: dict[str, Callable[[FeatureConfig], Any]] = {
    "frame_count": lambda f: f.frame_count if f.frame_sampling == "count" else None,
    # stride sampling keeps the 0-based frames k-1, 2k-1, ... since issue 9: the pair marks the new frames
    "frame_stride": lambda f: [f.frame_stride - 1, f.frame_stride] if f.frame_sampling == "stride" else None,
    "resize": lambda f: f.resize if f.resize != "square" else _OMIT,  # added later; square is the old frames
    "srp_eps": lambda f: f.srp_eps if f.reduction == "srp" else None,
    "pca_ratio": lambda f: f.pca_ratio if f.reduction == "pca" else None,
}
"""How a setting enters its hash where its value alone would say too much: a setting that does not change
the features under the others (``frame_stride`` under count sampling) is None, and a setting added later
is left out at the value that gives the features of before, so the stores of earlier runs stay valid."""


@dataclass(frozen=True)
class FeaturePaths:
    """Where a config's features live: raw shards (per extraction settings) and the reduced store."""

    raw_root: Path
    store: Path

    def raw_shard(self, shard: int) -> Path:
        return self.raw_root / "raw" / f"shard-{shard:03d}"


def _hashed(f: FeatureConfig, names: Sequence[str]) -> dict[str, Any]:
    values = {name: _CANONICAL[name](f) if name in _CANONICAL else getattr(f, name) for name in names}
    return {name: value for name, value in values.items() if value is not _OMIT}


def feature_paths(cfg: Config, videos: Sequence[VideoFingerprint]) -> FeaturePaths:
    """Content-addressed store folders: same videos + same settings => same folder, reused by any run.

    The videos enter by name, size and sha256 of their bytes, so a clip replaced in place (same
    name and size) gets new features instead of the stale ones. Every field of the features
    section enters a hash, but for those in :data:`NOT_HASHED`: the raw shards' folder hashes the
    videos and all but :data:`REDUCTION_FIELDS`, the store inside it those and the rows
    (:data:`SPLIT_FIELDS`). So a setting added to the config can never reuse a stale store.
    """
    f = cfg.features
    extraction = [fld.name for fld in fields(f) if fld.name not in NOT_HASHED and fld.name not in REDUCTION_FIELDS]
    raw_key = {"videos": [list(v) for v in videos], **_hashed(f, extraction)}
    store_key = {**_hashed(f, (*REDUCTION_FIELDS, "seed")), **{k: getattr(cfg.data, k) for k in SPLIT_FIELDS}}
    raw_root = Path(f.store_dir) / f"{default_model_name(f.model)}-{stable_hash(raw_key)}"  # timm:x -> timm-x
    return FeaturePaths(raw_root, raw_root / f"{f.reduction}-{stable_hash(store_key)}")


def _file_stems(layers: Sequence[str]) -> dict[str, str]:
    """Give each layer name a safe, unique file stem (node names may hold dots)."""
    stems: dict[str, str] = {}
    for layer in layers:
        stem = re.sub(r"[^A-Za-z0-9_-]", "-", layer)
        while stem in stems.values():
            stem += "_"
        stems[layer] = stem
    return stems


def _check_split_name(split: str) -> None:
    if not _SAFE_SPLIT.fullmatch(split):
        raise ValueError(f"split name {split!r}: use letters, digits, '_' or '-'")


def write_feature_store(path: str | Path, arrays: dict[str, dict[str, np.ndarray]], meta: dict[str, Any]) -> None:
    """Write a feature store folder.

    Parameters
    ----------
    path : Path
        Folder of the store (created).
    arrays : dict of split to dict of layer to ndarray of shape (n_samples, n_features)
        Every split must hold the same layers, in the same order.
    meta : dict
        Provenance recorded as is (model, weights info, reduction...); it may not use the
        keys the store writes itself: layers, dims, splits, shapes, files, sha256.
    """
    path = Path(path)
    clash = [k for k in _RESERVED if k in meta]
    if clash:
        raise ValueError(f"meta key {clash[0]!r} is reserved by the feature store ({', '.join(_RESERVED)})")
    if not arrays:
        raise ValueError("arrays holds no split")
    splits = list(arrays)
    layers = list(arrays[splits[0]])
    dims: dict[str, int] = {}
    shapes: dict[str, dict[str, list[int]]] = {}
    for split in splits:
        _check_split_name(split)
        if list(arrays[split]) != layers:
            raise ValueError(f"split {split!r} has layers {list(arrays[split])}, split {splits[0]!r} has {layers}")
        sizes = {a.shape[0] for a in arrays[split].values()}
        if len(sizes) != 1:
            raise ValueError(f"split {split!r}: layers disagree on the number of samples ({sorted(sizes)})")
        for layer, a in arrays[split].items():
            if a.ndim != 2 or dims.setdefault(layer, a.shape[1]) != a.shape[1]:
                raise ValueError(f"split {split!r}, layer {layer!r}: shape {a.shape}, expected (n, {dims[layer]})")
        shapes[split] = {layer: list(a.shape) for layer, a in arrays[split].items()}
    stems = _file_stems(layers)
    files = {layer: {split: f"{stems[layer]}__{split}.npy" for split in splits} for layer in layers}
    with contextlib.suppress(FileNotFoundError):
        (path / META_FILE).unlink()  # an older store here must not vouch for the new arrays
    for split in splits:
        for layer, a in arrays[split].items():
            atomic_save_npy(path / files[layer][split], a)
    sums = {layer: {split: sha256_file_cached(path / name) for split, name in by_split.items()}
            for layer, by_split in files.items()}
    atomic_write_json(
        path / META_FILE,
        {**meta, "layers": layers, "dims": dims, "splits": splits, "shapes": shapes, "files": files, "sha256": sums},
    )


class FeatureStore:
    """A complete feature store folder (open it with :func:`open_feature_store`).

    Attributes
    ----------
    path : Path
    meta : dict
        Everything ``meta.json`` holds.
    layers : list of str
        Layer names, in order.
    dims : dict of str to int
    splits : list of str
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.layers: list[str] = list(meta["layers"])
        self.dims: dict[str, int] = {layer: int(meta["dims"][layer]) for layer in self.layers}
        self.splits: list[str] = list(meta["splits"])

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise KeyError(f"{self.path}: no split {split!r}; splits: {', '.join(self.splits)}")

    def n_samples(self, split: str) -> int:
        """Rows of ``split``."""
        self._check_split(split)
        return int(self.meta["shapes"][split][self.layers[0]][0])

    def file_paths(self) -> list[Path]:
        """Every file of the store, arrays and ``meta.json``: what a result computed from it vouches for."""
        return [*(self.path / name for by_split in self.meta["files"].values() for name in by_split.values()),
                self.path / META_FILE]

    def load(self, split: str, mmap: bool = False) -> list[np.ndarray]:
        """One array of shape (n_samples, dims[layer]) per layer, in layer order.

        ``mmap=True`` maps the files read-only instead of reading them into memory; each mapping
        carries the sha256 of the file it maps (``content_sha256``), so that work on its rows can be
        keyed by content without reading them (``lwroi.encoding``'s digests).
        """
        self._check_split(split)
        files = [self.path / self.meta["files"][layer][split] for layer in self.layers]
        return [map_npy(file) for file in files] if mmap else [np.load(file) for file in files]


def map_npy(file: Path) -> np.memmap:
    """A ``.npy`` file mapped read-only, with the sha256 of the file it maps as ``content_sha256``.

    The hash is of the inode that is mapped (both come from one open file), so a file replaced
    meanwhile under the same name cannot lend its hash to the old mapping. Hashed once per process
    for an unchanged file (opening the store already did).
    """
    with open(file, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = _NPY_HEADERS.get(version)
        if read_header is None:  # a format version np.save writes only for exotic dtypes: mapped, not tagged
            return np.load(file, mmap_mode="r")
        shape, fortran, dtype = read_header(fh)
        mapped = np.memmap(fh, dtype=dtype, mode="r", offset=fh.tell(), shape=shape, order="F" if fortran else "C")
        mapped.content_sha256 = sha256_file_cached(file, opened=fh)
    return mapped


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _npy_shape(file: Path) -> tuple[int, ...] | None:
    """Shape from a ``.npy`` header, or None when the file is missing or unreadable."""
    try:
        return tuple(np.load(file, mmap_mode="r").shape)
    except (OSError, ValueError):
        return None


def open_feature_store(path: str | Path) -> FeatureStore:
    """Open a complete feature store, every array verified against its sha256 in ``meta.json``.

    Verification reads the whole store once per process (a few hundred MB for the full
    Algonauts set, well under a second); later opens of the unchanged files reuse the digests.

    Raises
    ------
    DataLayoutError
        No ``meta.json`` (the write never finished), an unreadable one or one without
        checksums (an older lwroi's), or a listed array missing, of the wrong shape or not
        matching its checksum. The next run's ``features`` unit rebuilds such a store.
    """
    path = Path(path)
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
        layers, splits, files, shapes, sums = (meta[k] for k in ("layers", "splits", "files", "shapes", "sha256"))
    except FileNotFoundError:
        raise DataLayoutError(f"{path}: incomplete feature store: no {META_FILE} (extraction not finished)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DataLayoutError(f"{meta_path}: not a feature store description ({type(exc).__name__}: {exc})") from None
    for split in splits:
        for layer in layers:
            file = path / files[layer][split]
            shape = _npy_shape(file)
            if shape is None:
                raise DataLayoutError(
                    f"{path}: incomplete feature store: {file.name} (layer {layer!r}, split {split!r}) "
                    "is missing or unreadable"
                )
            if list(shape) != shapes[split][layer]:
                raise DataLayoutError(f"{file}: shape {list(shape)}, {META_FILE} says {shapes[split][layer]}")
            if sha256_file_cached(file) != sums[layer][split]:
                raise DataLayoutError(f"{file}: corrupt feature store array: its sha256 differs from the one in "
                                      f"{META_FILE}; the next run rebuilds the store from the raw shards")
    return FeatureStore(path, meta)


def feature_store_complete(path: str | Path) -> bool:
    """Tell whether ``path`` holds a complete, consistent feature store."""
    try:
        open_feature_store(path)
    except DataLayoutError:
        return False
    return True


def save_raw_shard(folder: str | Path, features: dict[str, np.ndarray], video_indices: np.ndarray,
                   meta: dict[str, Any] | None = None) -> None:
    """Write one extraction shard: one array per layer, the video indices, then its marker.

    Parameters
    ----------
    folder : Path
    features : dict of layer to ndarray of shape (n_videos, n_features)
    video_indices : int ndarray of shape (n_videos,)
        Which videos the rows are.
    meta : dict, optional
        What the extraction knew beside the arrays (weights provenance, which layers are
        spatial), JSON-serialisable; recorded in the marker, so the store is built from the
        shards without the network.
    """
    folder = Path(folder)
    video_indices = np.asarray(video_indices)
    for layer, a in features.items():
        if a.ndim != 2 or a.shape[0] != len(video_indices):
            raise ValueError(f"layer {layer!r}: shape {a.shape}, expected ({len(video_indices)}, n_features)")
    stems = _file_stems(list(features))
    files = {layer: f"{stems[layer]}.npy" for layer in features}
    with contextlib.suppress(FileNotFoundError):
        (folder / SHARD_FILE).unlink()
    for layer, a in features.items():
        atomic_save_npy(folder / files[layer], a)
    atomic_save_npy(folder / SHARD_INDICES, video_indices)
    atomic_write_json(
        folder / SHARD_FILE,
        {
            "layers": list(features),
            "files": files,
            "shapes": {layer: list(a.shape) for layer, a in features.items()},
            "n_videos": len(video_indices),
            "meta": dict(meta or {}),
            "sha256": {name: sha256_file_cached(folder / name) for name in [*files.values(), SHARD_INDICES]},
        },
    )


def _read_shard_marker(folder: Path) -> dict[str, Any]:
    """The shard's marker, after checking every file it lists (shape and sha256)."""
    try:
        marker = json.loads((folder / SHARD_FILE).read_text())
        sums = marker["sha256"]
    except FileNotFoundError:
        raise DataLayoutError(f"{folder}: incomplete extraction shard: no {SHARD_FILE}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DataLayoutError(f"{folder / SHARD_FILE}: unreadable shard marker ({type(exc).__name__}: {exc})") from None
    if "meta" not in marker:
        raise DataLayoutError(f"{folder}: extraction shard of an older lwroi (its {SHARD_FILE} has no meta); "
                              "the shard is extracted again")
    for layer in marker["layers"]:
        file = folder / marker["files"][layer]
        shape = _npy_shape(file)
        if shape is None or list(shape) != marker["shapes"][layer]:
            raise DataLayoutError(
                f"{folder}: incomplete extraction shard: {file.name} (layer {layer!r}) is missing or has shape "
                f"{shape}, expected {marker['shapes'][layer]}"
            )
    if _npy_shape(folder / SHARD_INDICES) != (marker["n_videos"],):
        raise DataLayoutError(f"{folder}: incomplete extraction shard: {SHARD_INDICES} missing or of the wrong length")
    for name, digest in sums.items():
        if sha256_file_cached(folder / name) != digest:
            raise DataLayoutError(f"{folder / name}: corrupt extraction shard: its sha256 differs from the one in "
                                  f"{SHARD_FILE}; the shard is extracted again")
    return marker


def raw_shard_complete(folder: str | Path) -> bool:
    """Tell whether ``folder`` holds a complete extraction shard whose files match their checksums."""
    try:
        _read_shard_marker(Path(folder))
    except DataLayoutError:
        return False
    return True


class RawLayer:
    """One layer of the raw shards, its rows read on demand from the memory-mapped shard files.

    A big layer of every video (VGG16's first block: 3.2 M values a video, 14 GB for the 1,102
    Algonauts videos) must not be read into memory at once. Indexing copies just the rows asked
    for, one at a time, out of each shard file mapped only while it is read: the resident memory
    is those rows (a file's pages leave the process when its map is closed). The files are read
    long after :func:`load_raw_shards` verified them, so a file replaced or changed since (another
    inode, size or mtime: what the checksum cache keys on) is refused rather than read.

    Attributes
    ----------
    files : list of Path
        One ``.npy`` file per shard, in row order.
    shape : (int, int)
        (n_videos, n_features), all shards together.
    dtype : numpy dtype
        The first shard's; rows of other shards are cast to it.
    """

    def __init__(self, files: Sequence[Path], n_rows: Sequence[int], n_features: int, dtype: np.dtype) -> None:
        self.files = list(files)
        self._verified = [_identity(file) for file in self.files]
        self._starts = np.cumsum([0, *n_rows])
        self.shape = (int(self._starts[-1]), int(n_features))
        self.dtype = np.dtype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (a 1-D integer array, any order, repeats allowed) as a new array."""
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
            raise TypeError(f"index a RawLayer with a 1-D integer array of rows, not {rows.dtype} {rows.shape}")
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows outside the {len(self)} videos of the raw shards")
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        shard = np.searchsorted(self._starts, rows, side="right") - 1
        for k in np.unique(shard):
            if _identity(self.files[k]) != self._verified[k]:
                raise DataLayoutError(f"{self.files[k]}: raw shard file changed since it was verified; run again")
            mapped = np.load(self.files[k], mmap_mode="r")
            for position in np.flatnonzero(shard == k):
                out[position] = mapped[rows[position] - self._starts[k]]
            del mapped  # unmap: the pages read leave the process
        return out

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """Every row, read into memory (what the streaming reduction avoids)."""
        return np.asarray(self[np.arange(len(self))], dtype=dtype)


def _identity(file: Path) -> tuple[int, int, int]:
    info = file.stat()
    return info.st_ino, info.st_size, info.st_mtime_ns


def load_raw_shards(folders: Sequence[str | Path]) -> tuple[dict[str, RawLayer], np.ndarray, dict[str, Any]]:
    """Open extraction shards as one set of rows, in the given order, checking every file first.

    Returns
    -------
    features : dict of layer to RawLayer of shape (n_videos, n_features)
        Rows read on demand, memory-mapped, layer by layer: nothing is read into memory here.
    video_indices : int ndarray of shape (n_videos,)
    meta : dict
        The shards' ``meta`` (see :func:`save_raw_shard`).

    Raises
    ------
    DataLayoutError
        A shard is incomplete, or shards disagree on layers, feature sizes or meta.
    """
    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("no shard folders given")
    markers = [_read_shard_marker(f) for f in folders]
    layouts = [[(layer, m["shapes"][layer][1]) for layer in m["layers"]] for m in markers]
    layout = layouts[0]
    for folder, other in zip(folders[1:], layouts[1:], strict=True):
        if other != layout:
            raise DataLayoutError(f"{folder}: shard layers or feature sizes differ from those of {folders[0]}")
    for folder, marker in zip(folders[1:], markers[1:], strict=True):
        if marker["meta"] != markers[0]["meta"]:
            raise DataLayoutError(f"{folder}: shard meta {marker['meta']} differs from {folders[0]}'s "
                                  f"{markers[0]['meta']}")
    n_rows = [m["n_videos"] for m in markers]
    features = {}
    for layer, n_features in layout:
        files = [f / m["files"][layer] for f, m in zip(folders, markers, strict=True)]
        features[layer] = RawLayer(files, n_rows, n_features, np.load(files[0], mmap_mode="r").dtype)
    indices = np.concatenate([np.load(f / SHARD_INDICES) for f in folders])
    return features, indices, markers[0]["meta"]
