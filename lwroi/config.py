"""Typed run configuration: frozen dataclasses per section, built by :func:`load_config`.

Defaults live only here. Every value is checked once, at load, and an error names the
file, the dotted key and the value, before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from lwroi.exceptions import ConfigError

ALGONAUTS_SUBJECTS = tuple(f"sub{i:02d}" for i in range(1, 11))
ALGONAUTS_ROIS = ("V1", "V2", "V3", "V4", "LOC", "EBA", "FFA", "STS", "PPA")


def _check(cond: bool, msg: str) -> str | None:
    return None if cond else msg


def _check_seed(v: int) -> str | None:
    """Seeds lie in [0, 2**32), numpy's range; any other would fail only inside the first unit."""
    return _check(0 <= v < 2**32, "must be in [0, 2**32) (numpy takes seeds 0 <= seed < 2**32)")


_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


@dataclass(frozen=True)
class DataConfig:
    """Where the Algonauts-shaped dataset lives and which part of it to use."""

    root: str = "data/algonauts2021"
    """Folder holding ``participants_data_v2021/`` and the video folder."""
    videos_dir: str = "AlgonautsVideos268_All_30fpsmax"
    responses_dir: str = "participants_data_v2021"
    subjects: tuple[str, ...] = ALGONAUTS_SUBJECTS
    rois: tuple[str, ...] = ALGONAUTS_ROIS
    n_train_videos: int = 1000
    """The first ``n_train_videos`` sorted videos have responses; the rest are the challenge test set."""
    n_videos: int = 1102
    """How many videos the video folder must hold, training and challenge (Algonauts 2021: 1000 + 102);
    0: not checked. Catches a video missing at the end, which the names' numbering cannot show."""
    n_test: int = 100
    """Training videos held out for evaluation (fixed permutation, ``split_seed``)."""
    split_seed: int = 400
    test_order: Literal["sorted", "permutation"] = "sorted"
    """Order of the held-out rows: ``sorted`` (video order) or ``permutation`` (the original's: the order
    of the seeded permutation, which decides its 16-row stopping batches and the 4 rows it drops)."""
    wb_affine: tuple[float, ...] = ()
    """Voxel-to-world affine of the WB volume, 16 values row-major (copy it from the data's NIfTI);
    empty: identity, with a warning. Used by the whole-brain score maps (scores/*_WB.nii.gz)."""

    _constraints: ClassVar[dict[str, Callable[[Any], str | None]]] = {
        "wb_affine": lambda v: _check(len(v) in (0, 16), "must be empty or 16 values (a 4x4 matrix, row-major)"),
        "subjects": lambda v: _check(len(v) > 0 and len(set(v)) == len(v), "must be a non-empty list without repeats"),
        "rois": lambda v: _check(len(v) > 0 and len(set(v)) == len(v), "must be a non-empty list without repeats"),
        "n_train_videos": lambda v: _check(v >= 4, "must be >= 4"),
        "n_videos": lambda v: _check(v >= 0, "must be >= 0 (0: not checked)"),
        "n_test": lambda v: _check(v >= 2, "must be >= 2"),
        "split_seed": _check_seed,
    }


@dataclass(frozen=True)
class ModelEntry:
    """One model of a zoo (``features.models``): its name and the feature settings it gives itself.

    The name keys its units (``fit/<name>/sub01/V1``), feature store and table rows; the settings are
    (key, value) pairs of the features section, already typed and checked.
    """

    name: str
    settings: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The entry as a config file writes it."""
        return {"name": self.name, **{key: _lists(value) for key, value in self.settings}}


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
"""A model name is one path segment of unit keys and file names."""

NOT_PER_MODEL = ("models", "store_dir", "frame_cache")
"""Feature keys a zoo's model cannot set for itself."""


def default_model_name(model: str) -> str:
    """The name a model goes by when its entry gives none: ``timm:vit_b`` -> ``timm-vit_b``."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", model).strip("-") or "model"


@dataclass(frozen=True)
class FeatureConfig:
    """DNN feature extraction and dimensionality reduction."""

    model: str = "alexnet"
    """A torchvision image classification or video model, ``timm:NAME`` or ``package.module:factory``."""
    layers: tuple[str, ...] = ()
    """Graph node names to read; empty means the model's default (AlexNet: conv1..fc8 as in the paper)."""
    weights: str = "random"
    """Path to a local state-dict file, or ``random`` (then every output is marked as random-weight)."""
    weights_sha256: str = ""
    """Expected checksum of ``weights``; empty skips the check."""
    frame_sampling: Literal["count", "stride"] = "count"
    """``count``: ``frame_count`` evenly spaced frames; ``stride``: the original's every ``frame_stride``-th
    frame, 1-based (0-based k-1, 2k-1, ...: int(n / k) frames)."""
    frame_count: int = 16
    frame_stride: int = 4
    image_size: int = 224
    resize: Literal["square", "shorter"] = "square"
    """``square``: frames resized to image_size x image_size (antialiased, in torch); ``shorter``: the
    original's ``Resize(image_size)`` on a PIL image, shorter side to image_size, aspect kept."""
    batch_size: int = 64
    """Frames per forward pass (frames of several videos are batched together)."""
    reduction: Literal["srp", "pca", "none"] = "srp"
    """``srp`` (sparse random projection), ``pca`` (explained-variance ratio) or ``none``."""
    reduce_layers: Literal["conv", "all"] = "conv"
    """Which layers are reduced: ``conv`` (original: fc layers kept whole) or ``all``."""
    srp_eps: float = 0.1
    pca_ratio: float = 0.98
    test_scaler: Literal["train", "test"] = "train"
    """``train``: held-out rows are standardised with the training scaler; ``test``: original's own-scaler flaw."""
    scale_floor: bool = True
    """Floor each feature's std at 0.01 x the layer's median std before standardising (``false``: the original)."""
    restandardize: bool = False
    """Standardise every column again after the reduction (the original does, fc layers included), with the
    training statistics (held-out splits: their own when ``test_scaler: test``)."""
    seed: int = 0
    """Seeds random weight initialisation and the random projection."""
    store_dir: str = "feature_store"
    """Feature store root; one sub-folder per (videos, feature settings) fingerprint, reused across runs."""
    frame_cache: bool = True
    """Keep decoded frames in ``store_dir/frames`` so every model (and run) with this frame sampling decodes
    each clip once; costs frames x height x width x 3 bytes a clip on disk."""
    models: tuple[ModelEntry, ...] = ()
    """A zoo: several models in one run, each a mapping with a ``name`` and any feature keys of its own
    (``model``, ``layers``, ``weights``, ``image_size``, ...); the keys it leaves out come from this
    section. Empty: the one model of this section, named after ``model``."""

    _constraints: ClassVar[dict[str, Callable[[Any], str | None]]] = {
        "frame_count": lambda v: _check(v >= 1, "must be >= 1"),
        "frame_stride": lambda v: _check(v >= 1, "must be >= 1"),
        "image_size": lambda v: _check(v >= 32, "must be >= 32"),
        "batch_size": lambda v: _check(v >= 1, "must be >= 1"),
        "srp_eps": lambda v: _check(0 < v < 1, "must be in (0, 1)"),
        "pca_ratio": lambda v: _check(0 < v <= 1, "must be in (0, 1]"),
        "seed": _check_seed,
    }


PCCKind = Literal["pearson", "original"]
"""The correlation used wherever a PCC is computed (``lwroi.encoding.metrics``)."""
Contributions = Literal["clipped", "original"]
"""How layer contributions turn per-layer scores into shares."""
LayerScaling = Literal["balanced", "none"]
"""How layer blocks are scaled before training."""


@dataclass(frozen=True)
class SolverOptions:
    """A solver's own options: one frozen dataclass per solver, defaults and constraints written once.

    A subclass names its solver (``solver``) and says what a run plan needs to know of it:
    ``uses_grid`` (its wc and lay come from the CV grid search, the tune and select units) and
    ``needs_validation`` (it stops early on validation rows, so a fit given none holds out
    ``val_fraction`` of its training rows). Every field is converted and checked on construction
    (its type, the choices of a ``Literal`` type, ``_constraints``), so an options object is
    valid wherever it was made; the error names the option, its value and the solver.
    The registry ``lwroi.encoding.SOLVERS`` pairs each class with its solve function; the
    classes live here, left of ``lwroi.encoding``, because the config's ``encoding.<solver>``
    sections are built from them (and torch-free code, such as the run plan, reads them).
    """

    solver: ClassVar[str] = ""
    uses_grid: ClassVar[bool] = True
    needs_validation: ClassVar[bool] = False
    _constraints: ClassVar[dict[str, Callable[[Any], str | None]]] = {}

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            value = value.tolist() if hasattr(value, "tolist") else list(value) if isinstance(value, tuple) else value
            where = f"{f.name} (an option of solver {self.solver!r})"
            object.__setattr__(self, f.name, coerce_setting(type(self), f.name, value, where))


@dataclass(frozen=True)
class SGDOptions(SolverOptions):
    """The ``sgd`` solver: the paper's loss minimised with Adam on minibatches, early stopping on validation rows."""

    solver: ClassVar[str] = "sgd"
    uses_grid: ClassVar[bool] = True
    needs_validation: ClassVar[bool] = True

    lr: float = 1e-4
    """Adam learning rate."""
    batch_size: int = 16
    max_epochs: int = 500
    patience: int = 30
    """Epochs without improvement before a model stops."""
    min_delta: float = 1e-3
    """An epoch improves when its score is at least the best so far plus ``min_delta``."""
    metric: Literal["pcc", "mse"] = "pcc"
    """Early-stopping metric: ``pcc`` (mean voxel Pearson r) or ``mse``."""
    val_pcc: Literal["full", "batch"] = "full"
    """``full``: PCC over the whole validation set; ``batch``: original's mean over 16-sample batches."""
    drop_last: bool = False
    """Drop the last short training minibatch of each epoch (the original: floor(n / batch_size) steps)."""

    _constraints: ClassVar[dict[str, Callable[[Any], str | None]]] = {
        "lr": lambda v: _check(v > 0, "must be > 0"),
        "batch_size": lambda v: _check(v >= 1, "must be >= 1"),
        "max_epochs": lambda v: _check(v >= 1, "must be >= 1"),
        "patience": lambda v: _check(v >= 1, "must be >= 1"),
        "min_delta": lambda v: _check(v >= 0, "must be >= 0"),
    }


@dataclass(frozen=True)
class KernelOptions(SolverOptions):
    """The ``kernel`` solver: the model in dual form, layer weights and ridge strengths chosen by GCV.

    It needs no (wc, lay) grid and no validation rows: everything is chosen inside the training rows.
    """

    solver: ClassVar[str] = "kernel"
    uses_grid: ClassVar[bool] = False
    needs_validation: ClassVar[bool] = False

    alphas: tuple[float, ...] = tuple(10.0 ** (k / 2) for k in range(-6, 11))
    """Ridge strengths (1e-3 to 1e5, 2 per decade), relative to the mean eigenvalue of the training kernel."""
    search_steps: int = 16
    """Candidate layer weightings of the fixed design (uniform, then Dirichlet draws)."""
    refine_steps: int = 6
    """Gradient steps on the layer weighting after the design (0: the design only)."""
    search_voxels: int = 1000
    """Voxels (evenly spread over the ROI) that score a candidate weighting; every voxel is fitted."""
    memory_budget_mb: float = 1024.0
    """Working memory beyond the inputs; sets the voxel batch size."""

    _constraints: ClassVar[dict[str, Callable[[Any], str | None]]] = {
        "alphas": lambda v: _check(len(v) > 0 and all(x > 0 for x in v), "must be a non-empty list of values > 0"),
        "search_steps": lambda v: _check(v >= 1, "must be >= 1"),
        "refine_steps": lambda v: _check(v >= 0, "must be >= 0"),
        "search_voxels": lambda v: _check(v >= 1, "must be >= 1"),
        "memory_budget_mb": lambda v: _check(v > 0, "must be > 0"),
    }


MOVED_SETTINGS = {
    **{name: ("sgd", name) for name in ("lr", "batch_size", "max_epochs", "patience", "min_delta", "metric",
                                        "val_pcc", "drop_last")},
    "kernel_alphas": ("kernel", "alphas"),
    "kernel_search_steps": ("kernel", "search_steps"),
    "kernel_refine_steps": ("kernel", "refine_steps"),
    "kernel_search_voxels": ("kernel", "search_voxels"),
    "memory_budget_mb": ("kernel", "memory_budget_mb"),
}
"""Flat ``encoding`` keys of lwroi before issue 11 -> (solver section, option). A config that uses one
is refused with the new key; a run record that holds them (``run.json``) is read in the new shape,
and the fingerprint is computed in the old one, so runs made before keep their fingerprint."""


@dataclass(frozen=True)
class EncodingConfig:
    """The layer-weighted model, its solver, and the hyper-parameter search.

    The options of each solver are a sub-section named after it (``encoding.sgd``, ``encoding.kernel``);
    only the one ``solver`` names is used (and enters the fingerprint).
    """

    solver: Literal["sgd", "kernel"] = "sgd"
    """``sgd``: the paper's loss trained with Adam over the (wc, lay) grid; ``kernel``: the same model
    in dual form, layer weights and per-voxel ridge strengths chosen by GCV inside the training
    rows (no wc/lay grid, so no tune/select phase)."""
    sgd: SGDOptions = field(default_factory=SGDOptions)
    kernel: KernelOptions = field(default_factory=KernelOptions)
    wc: tuple[float, ...] = (1.0, 10.0, 100.0)
    """Grid of the per-voxel RMS (group) penalty weight on W (original ``-wc``)."""
    lay: tuple[float, ...] = (0.1, 1.0, 10.0)
    """Grid of the L1 penalty weight on the layer weights (original ``-lay``)."""
    folds: int = 2
    tune_subjects: tuple[str, ...] = ("sub01",)
    val_fraction: float = 0.1
    """Inner validation split of the training videos used for early stopping in the final fit."""
    early_stopping_on: Literal["inner", "test"] = "inner"
    """``inner`` (validation split of training data) or ``test`` (original's optimistic flaw)."""
    pcc: PCCKind = "pearson"
    """``pearson``: plain Pearson r; ``original``: the original's r * n / (n - 1) (covariance over n - 1, stds
    with ddof 0 plus 1e-8), used wherever a PCC is computed: stopping, tuning, scores, contributions."""
    fold_split: Literal["shuffled", "contiguous"] = "shuffled"
    """CV folds of the tuning: ``shuffled`` (seeded) or ``contiguous`` (the original's ``KFold(shuffle=False)``)."""
    contributions: Contributions = "clipped"
    """Layer contributions: ``clipped`` (negative r counts 0, shares in [0, 1]) or ``original`` (r / sum r)."""
    layer_scaling: LayerScaling = "balanced"
    """``balanced``: each layer's features are divided by sqrt(its dimension), so a layer weight measures
    the layer's share of the prediction, not its feature count; ``none``: original scaling."""
    seed: int = 0

    _moved: ClassVar[dict[str, tuple[str, str]]] = MOVED_SETTINGS
    _constraints: ClassVar[dict[str, Callable[[Any], str | None]]] = {
        "wc": lambda v: _check(len(v) > 0 and all(x >= 0 for x in v), "must be a non-empty list of values >= 0"),
        "lay": lambda v: _check(len(v) > 0 and all(x >= 0 for x in v), "must be a non-empty list of values >= 0"),
        "folds": lambda v: _check(v >= 2, "must be >= 2"),
        "tune_subjects": lambda v: _check(len(v) > 0, "must be a non-empty list"),
        "val_fraction": lambda v: _check(0 < v < 0.5, "must be in (0, 0.5)"),
        "seed": _check_seed,
    }

    @property
    def options(self) -> SolverOptions:
        """The options of the solver in use (``encoding.<solver>``)."""
        return getattr(self, self.solver)


GRID_SETTINGS = ("wc", "lay", "folds", "tune_subjects", "fold_split")
"""Encoding keys of the (wc, lay) grid search, read only by a solver that ``uses_grid``."""

VALIDATION_SETTINGS = ("val_fraction",)
"""Encoding keys read only by a solver that ``needs_validation``."""



@dataclass(frozen=True)
class RunConfig:
    """Where results go and how the work is cut into units."""

    output_dir: str = "runs/default"
    extract_shards: int = 4
    """Number of video shards of the extraction phase (independent units)."""
    checkpoint_every: int = 25
    """Epochs between checkpoints of a running fit."""
    threads: int = 0
    """Torch CPU threads per process; 0 = Slurm's --cpus-per-task, else the CPUs the rank is bound to,
    else the node's cores divided by the ranks on it."""
    device: str = "auto"
    """``auto``: GPU (node-local rank modulo visible GPUs) when one is visible, else CPU; or ``cpu``, ``cuda:N``."""

    _constraints: ClassVar[dict[str, Callable[[Any], str | None]]] = {
        "extract_shards": lambda v: _check(v >= 1, "must be >= 1"),
        "checkpoint_every": lambda v: _check(v >= 1, "must be >= 1"),
        "threads": lambda v: _check(v >= 0, "must be >= 0"),
        "device": lambda v: _check(_DEVICE.fullmatch(v) is not None,
                                   "must be auto, cpu, cuda or cuda:N with N a GPU index (0, 1, ...)"),
    }


@dataclass(frozen=True)
class Config:
    """The whole run configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    run: RunConfig = field(default_factory=RunConfig)
    source: str = "<defaults>"
    """Where the config came from (file name), used in error messages only."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of every setting (what ``config.yaml`` in a run holds)."""
        out = dataclasses.asdict(self)
        out.pop("source")
        out["features"]["models"] = [m.to_dict() for m in self.features.models]
        return _lists(out)

    def fingerprint(self) -> str:
        """Stable hash of the settings that decide results, but for the models of a zoo (see :func:`result_settings`).

        A zoo's units carry their model's :meth:`model_fingerprints` instead, so adding a model to a
        finished study keeps every result of the others.
        """
        return stable_hash(_flat_encoding(result_settings(self.to_dict())))

    @property
    def model_names(self) -> tuple[str, ...]:
        """The models of the run, in config order: a zoo's entries, else the features section's one model."""
        if self.features.models:
            return tuple(m.name for m in self.features.models)
        return (default_model_name(self.features.model),)

    def for_model(self, name: str) -> Config:
        """The config as a one-model run of model ``name``: its features section is the model's settings."""
        if not self.features.models:
            if name != self.model_names[0]:
                raise KeyError(name)
            return self
        entry = next((m for m in self.features.models if m.name == name), None)
        if entry is None:
            raise KeyError(name)
        features = dataclasses.replace(self.features, models=(), **dict(entry.settings))
        return dataclasses.replace(self, features=features)

    def model_fingerprints(self) -> dict[str, str]:
        """Per model, the hash of every setting that decides its results: :meth:`fingerprint` and its entry."""
        if not self.features.models:
            return {self.model_names[0]: self.fingerprint()}
        base = self.fingerprint()
        return {m.name: stable_hash({"run": base, "model": m.to_dict()}) for m in self.features.models}


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "features": FeatureConfig,
    "encoding": EncodingConfig,
    "run": RunConfig,
}

COMPAT_SETTINGS = {
    ("data", "test_order"): "permutation",
    ("features", "frame_sampling"): "stride",
    ("features", "resize"): "shorter",
    ("features", "test_scaler"): "test",
    ("features", "scale_floor"): False,
    ("features", "restandardize"): True,
    ("encoding", "early_stopping_on"): "test",
    ("encoding", "sgd", "val_pcc"): "batch",
    ("encoding", "layer_scaling"): "none",
    ("encoding", "pcc"): "original",
    ("encoding", "sgd", "drop_last"): True,
    ("encoding", "fold_split"): "contiguous",
    ("encoding", "contributions"): "original",
}
"""What ``compat: true`` switches back to the original implementation's behaviour (key path -> value)."""

SOLVER_SECTIONS: dict[str, type[SolverOptions]] = {
    f.name: hint for f, hint in ((f, get_type_hints(EncodingConfig)[f.name]) for f in fields(EncodingConfig))
    if isinstance(hint, type) and issubclass(hint, SolverOptions)
}
"""The ``encoding`` sub-sections of solver options, by solver name: ``{"sgd": SGDOptions, "kernel": KernelOptions}``."""

NOT_RESULT_SETTINGS = (("data", "subjects"), ("data", "rois"), ("data", "n_videos"), ("features", "store_dir"),
                       ("features", "frame_cache"))
"""Settings that decide no unit's result: each unit's key names its subject and ROI (so a run may add
or drop some), ``n_videos`` is a check, ``store_dir`` only says where shared features live and
``frame_cache`` whether decoded frames are kept."""


def result_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The part of a config dict (:meth:`Config.to_dict`, or the copy in a run's ``run.json``) that decides results.

    Leaves out the ``run`` section (where and how a run goes), :data:`NOT_RESULT_SETTINGS` and the
    encoding settings the solver in use does not read: the other solvers' sections, the grid keys
    (:data:`GRID_SETTINGS`) unless it ``uses_grid``, :data:`VALIDATION_SETTINGS` unless it
    ``needs_validation``; so changing them neither changes :meth:`Config.fingerprint` nor has a run
    directory refuse the config. The flat keys of a run recorded before issue 11
    (:data:`MOVED_SETTINGS`) are moved into their solver's section.
    """
    kept = {name: dict(settings.get(name, {})) for name in ("data", "features", "encoding")}
    kept["features"].pop("models", None)  # a zoo's models have fingerprints of their own
    for section, key in NOT_RESULT_SETTINGS:
        kept[section].pop(key, None)
    encoding = kept["encoding"]
    for name in SOLVER_SECTIONS:
        encoding[name] = dict(encoding.get(name, {}))
    _move_flat_encoding_keys(encoding)
    options = SOLVER_SECTIONS.get(encoding.get("solver"))
    for name in SOLVER_SECTIONS:
        if options is None or name != options.solver:
            encoding.pop(name)
    if options is not None:
        unread = [*(() if options.uses_grid else GRID_SETTINGS),
                  *(() if options.needs_validation else VALIDATION_SETTINGS)]
        for key in unread:
            encoding.pop(key, None)
    return kept


def upgrade_settings(raw: dict[str, Any]) -> dict[str, Any]:
    """A config dict lwroi wrote before solver sections existed (a run directory's ``config.yaml``) in today's shape.

    Only for files lwroi itself wrote: a user's config with the old keys is refused with the new
    key instead, so nobody's settings are silently reinterpreted.
    """
    raw = {**raw, "encoding": dict(raw.get("encoding") or {})}
    _move_flat_encoding_keys(raw["encoding"])
    return raw


def _move_flat_encoding_keys(encoding: dict[str, Any]) -> None:
    """Move the flat keys of :data:`MOVED_SETTINGS` into their solver's section, in place."""
    for old, (name, option) in MOVED_SETTINGS.items():
        if old in encoding:
            encoding.setdefault(name, {})
            encoding[name] = {**encoding[name], option: encoding.pop(old)}


def _flat_encoding(settings: dict[str, Any]) -> dict[str, Any]:
    """:func:`result_settings` with the solver's section spelled as the flat keys of lwroi before issue 11.

    What :meth:`Config.fingerprint` hashes, so runs, records and checkpoints made before keep their fingerprint.
    """
    encoding = dict(settings["encoding"])
    old_key = {new: old for old, new in MOVED_SETTINGS.items()}
    for name in SOLVER_SECTIONS:
        for option, value in encoding.pop(name, {}).items():
            encoding[old_key.get((name, option), f"{name}.{option}")] = value
    return {**settings, "encoding": encoding}


def stable_hash(obj: Any) -> str:
    """Short sha256 of a JSON-serialisable object, independent of dict order."""
    import hashlib

    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return obj


def _section_fields(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Convert a YAML value to ``typ`` or raise a ConfigError naming ``where``."""
    origin = get_origin(typ)
    if origin is tuple:
        (item,) = {a for a in get_args(typ) if a is not Ellipsis}
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where} = {value!r}: expected a list")
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is Union:
        raise AssertionError("unions are not used in config dataclasses")
    if origin is Literal:
        choices = get_args(typ)
        if isinstance(value, str) and value in choices:
            return value
        raise ConfigError(f"{where} = {value!r}: must be one of: {', '.join(choices)}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r}: expected true or false")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r}: expected an integer")
    if typ is float:
        number = _number(value)
        if number is None:
            raise ConfigError(f"{where} = {value!r}: expected a number")
        if not math.isfinite(number):
            raise ConfigError(f"{where} = {value!r}: expected a finite number (not inf or nan)")
        return number
    if typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} = {value!r}: expected a string")
    raise AssertionError(f"unsupported config type {typ}")


def _number(value: Any) -> float | None:
    """``value`` as a float (YAML may give a number or a numeric string such as ``1e-4``), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _build_section(cls: type, raw: Any, source: str, name: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{name}' = {raw!r}: expected a mapping of keys")
    types = _section_fields(cls)
    moved = [key for key in raw if key in getattr(cls, "_moved", {})]
    if moved:
        section, option = cls._moved[moved[0]]
        raise ConfigError(f"{source}: '{name}.{moved[0]}' has moved to '{name}.{section}.{option}' (each solver's "
                          f"options have their own sub-section of '{name}')")
    unknown = sorted(set(raw) - set(types))
    if unknown:
        valid = ", ".join(types)
        raise ConfigError(f"{source}: unknown key '{name}.{unknown[0]}'; valid keys of '{name}': {valid}")
    values = {key: _build_section(types[key], value, source, f"{name}.{key}") if dataclasses.is_dataclass(types[key])
              else coerce_setting(cls, key, value, f"{source}: {name}.{key}") for key, value in raw.items()
              if not (cls is FeatureConfig and key == "models")}
    if cls is FeatureConfig and "models" in raw:
        values["models"] = _build_models(raw["models"], source, f"{name}.models")
    return cls(**values)


def _build_models(raw: Any, source: str, where: str) -> tuple[ModelEntry, ...]:
    """The entries of ``features.models``, each key typed and checked, names unique."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: {where} = {raw!r}: expected a list of models (mappings with a 'model' key)")
    entries: list[ModelEntry] = []
    per_model = [f.name for f in fields(FeatureConfig) if f.name not in NOT_PER_MODEL]
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if isinstance(item, str):
            item = {"model": item}
        if not isinstance(item, dict):
            raise ConfigError(f"{source}: {at} = {item!r}: expected a mapping such as {{name: r18, model: resnet18}}")
        unknown = sorted(set(item) - {"name", *per_model})
        if unknown:
            raise ConfigError(f"{source}: unknown key '{at}.{unknown[0]}'; a model entry takes 'name' and the "
                              f"features keys {', '.join(per_model)}")
        if "model" not in item:
            raise ConfigError(f"{source}: {at}: every model entry needs 'model' (a torchvision name, timm:NAME or "
                              "package.module:factory)")
        settings = tuple((key, coerce_setting(FeatureConfig, key, value, f"{source}: {at}.{key}"))
                         for key, value in item.items() if key != "name")
        name = item.get("name", default_model_name(str(dict(settings)["model"])))
        if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
            raise ConfigError(f"{source}: {at}.name = {name!r}: must be letters, digits and _ . + - (it names the "
                              "model's units and files), starting with a letter or digit")
        if name in (e.name for e in entries):
            raise ConfigError(f"{source}: {at}.name = {name!r}: two models share the name; give one a 'name'")
        entries.append(ModelEntry(name, settings))
    return tuple(entries)


def coerce_setting(cls: type, key: str, value: Any, where: str, *, text: bool = False) -> Any:
    """``value`` as field ``key`` of the settings dataclass ``cls``, typed and checked.

    Converted to the field's type, then checked against ``cls._constraints`` (when it has them).
    ``text=True``: the value was read as text (a site file), so an integer field takes a string of
    digits; list fields take a list of such strings.

    Raises
    ------
    ConfigError
        The value has the wrong type or range; the message starts with ``where``.
    """
    typ = _section_fields(cls)[key]
    if text:
        item = get_args(typ)[0] if get_origin(typ) is tuple else typ
        if item is int:
            value = [_int_text(v) for v in value] if isinstance(value, list) else _int_text(value)
    value = _coerce(value, typ, where)
    check = getattr(cls, "_constraints", {}).get(key)
    problem = check(value) if check else None
    if problem:
        shown = list(value) if isinstance(value, tuple) else value
        raise ConfigError(f"{where} = {shown!r}: {problem}")
    return value


def _int_text(value: Any) -> Any:
    """A string of digits as an int; anything else unchanged (for :func:`_coerce` to refuse)."""
    return int(value) if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()) else value


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` (or ``section.sub.key=value``) into a key path and a YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, _, raw = text.partition("=")
    path = key.strip().split(".")
    if len(path) > 3 or not all(path):
        raise ConfigError(f"--set {text!r}: key must be 'section.key', 'section.sub.key' or 'compat'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({exc})") from None
    return path, value


def config_from_dict(raw: Any, source: str = "<dict>", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build and validate a :class:`Config` from a nested mapping plus ``--set`` overrides."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    raw = json.loads(json.dumps(raw, default=str)) if raw else {}
    for text in overrides:
        path, value = parse_override(text)
        parent = raw
        for depth, part in enumerate(path[:-1]):
            parent = parent.setdefault(part, {})
            if not isinstance(parent, dict):
                raise ConfigError(f"--set {text!r}: '{'.'.join(path[: depth + 1])}' is not a section")
        parent[path[-1]] = value
    valid = [*SECTIONS, "compat"]
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ConfigError(f"{source}: unknown key '{unknown[0]}'; valid keys: {', '.join(valid)}")
    compat = raw.get("compat", False)
    if not isinstance(compat, bool):
        raise ConfigError(f"{source}: compat = {compat!r}: expected true or false")
    if compat:
        for path, value in COMPAT_SETTINGS.items():
            parent = raw
            for part in path[:-1]:
                parent[part] = parent.get(part) or {}
                parent = parent[part]
                if not isinstance(parent, dict):
                    break  # the section's own check names the bad value
            else:
                parent.setdefault(path[-1], value)
    sections = {name: _build_section(cls, raw.get(name), source, name) for name, cls in SECTIONS.items()}
    cfg = Config(**sections, source=source)
    _check_cross(cfg)
    return cfg


def _check_cross(cfg: Config) -> None:
    """Refuse settings that are valid alone but not together, every such problem in one error."""
    problems = _cross_problems(cfg)
    if len(problems) == 1:
        raise ConfigError(f"{cfg.source}: {problems[0]}")
    if problems:
        raise ConfigError(f"{cfg.source}: {len(problems)} settings do not fit together:\n  " + "\n  ".join(problems))


def _cross_problems(cfg: Config) -> list[str]:
    d, e = cfg.data, cfg.encoding
    problems = []
    missing = [s for s in e.tune_subjects if s not in d.subjects]
    if missing:
        problems.append(f"encoding.tune_subjects = {list(e.tune_subjects)!r}: {', '.join(map(repr, missing))} "
                        f"{'is' if len(missing) == 1 else 'are'} not in data.subjects {list(d.subjects)!r}")
    if d.n_test >= d.n_train_videos:
        problems.append(f"data.n_test = {d.n_test}: must be smaller than data.n_train_videos = {d.n_train_videos}")
    return problems


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config with ``yaml.safe_load`` and validate it (see :func:`config_from_dict`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return config_from_dict(raw, source=str(path), overrides=overrides)


def dump_config(cfg: Config) -> str:
    """YAML text of a resolved config (every key, defaults included)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
