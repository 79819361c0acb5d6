"""The run as a plan of small, named, idempotent work units.

Phases, each per model of the run (one, or a zoo's): ``extract`` (one unit per video shard) →
``features`` (reduce + feature store) → ``tune`` (CV grid on the tuning subjects, per ROI) →
``select`` (best wc, lay per ROI) → ``fit`` (per subject × ROI). Every unit has one canonical
key, its model second, used in its file name, logs and errors, e.g.
``tune/alexnet/sub01/V1/fold=0`` or ``fit/resnet50/sub03/FFA``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lwroi.config import Config

PHASES = ("extract", "features", "tune", "select", "fit")
TUNE_SPLITS = ("roi", "fold", "point")
FEATURES_GROUP = "features"
"""The group of every model's ``features`` unit: shard 0 of a ``--shard`` split reduces them all."""


@dataclass(frozen=True)
class TuneModel:
    """One model of a CV grid: a (wc, lay) point on one fold; ``index`` is its position in the ROI's grid × folds."""

    wc: float
    lay: float
    fold: int
    index: int


@dataclass(frozen=True)
class Unit:
    """A named piece of work; ``deps`` are keys of units that must finish first."""

    key: str
    phase: str
    model: str = ""
    deps: tuple[str, ...] = ()
    subject: str | None = None
    roi: str | None = None
    shard: int | None = None
    models: tuple[TuneModel, ...] = ()
    cost: float = 1.0
    group: str = field(default="", compare=False)
    """Units of one group (a model's ROI, or a model's video shard) stay in one ``--shard`` so no shard waits
    on another."""


def grid_models(wc: Sequence[float], lay: Sequence[float], folds: int) -> list[TuneModel]:
    """Every (wc, lay, fold) of the grid, in a fixed order that seeds each model."""
    out = []
    for fold in range(folds):
        for w in wc:
            for a in lay:
                out.append(TuneModel(float(w), float(a), fold, len(out)))
    return out


def _fmt(x: float) -> str:
    return f"{x:g}"


def tune_units(cfg: Config, model: str, subject: str, roi: str, cost: float, split: str) -> list[Unit]:
    """The tuning units of one model × subject × ROI, cut as ``split`` says (all grid models batched per unit)."""
    models = grid_models(cfg.encoding.wc, cfg.encoding.lay, cfg.encoding.folds)
    base = f"tune/{model}/{subject}/{roi}"
    if split == "roi":
        groups = {base: models}
    elif split == "fold":
        groups = {f"{base}/fold={k}": [m for m in models if m.fold == k] for k in range(cfg.encoding.folds)}
    else:
        groups = {f"{base}/wc={_fmt(m.wc)},lay={_fmt(m.lay)}/fold={m.fold}": [m] for m in models}
    return [
        Unit(key, "tune", model, (f"features/{model}",), subject, roi, models=tuple(ms), cost=cost * len(ms),
             group=f"{model}/{roi}")
        for key, ms in groups.items()
    ]


def uses_grid(cfg: Config) -> bool:
    """Whether the solver takes its (wc, lay) from the tune/select grid search.

    Its registry entry says so (``lwroi.encoding.SOLVERS[name].uses_grid``, which is its options
    class's, read here from the config without importing the solver: a plan is built on login
    nodes without torch). The kernel solver chooses its layer weights and ridge strengths inside
    each fit's own training rows (GCV), so its plan has no tune or select units and fits follow
    the features.
    """
    return type(cfg.encoding.options).uses_grid


def build_plan(cfg: Config, roi_cost: Callable[[str, str], float], *, up_to: str = "fit",
               tune_split: str = "roi") -> list[Unit]:
    """All units up to phase ``up_to``, dependencies before dependents, costly units first within a phase.

    ``roi_cost(subject, roi)`` estimates the size of one ROI's data (e.g. its voxel count); only
    the relative size matters, for load balancing.
    """
    if up_to not in PHASES:
        raise ValueError(f"unknown phase {up_to!r}; phases: {', '.join(PHASES)}")
    if tune_split not in TUNE_SPLITS:
        raise ValueError(f"unknown tune split {tune_split!r}; choose from {', '.join(TUNE_SPLITS)}")
    last = PHASES.index(up_to)
    phases: dict[str, list[Unit]] = {p: [] for p in PHASES}
    for model in cfg.model_names:
        for phase, units in _model_units(cfg, model, roi_cost, tune_split).items():
            phases[phase] += units
    by_cost = lambda us: sorted(us, key=lambda u: -u.cost)  # noqa: E731 - local sort key
    phases["tune"], phases["fit"] = by_cost(phases["tune"]), by_cost(phases["fit"])
    return [u for p in PHASES[: last + 1] for u in phases[p]]


def _model_units(cfg: Config, model: str, roi_cost: Callable[[str, str], float], tune_split: str
                 ) -> dict[str, list[Unit]]:
    """The units of one model, by phase.

    Extraction costs the same for every model here (the shards' videos); only the relative cost
    of units of one phase matters, for balancing.
    """
    n = cfg.run.extract_shards
    extract = [Unit(f"extract/{model}/shard={k:03d}", "extract", model, shard=k, cost=1.0,
                    group=f"{model}/extract{k}") for k in range(n)]
    features = Unit(f"features/{model}", "features", model, tuple(u.key for u in extract), cost=1.0,
                    group=FEATURES_GROUP)
    tune, select, fit = [], [], []
    grid = uses_grid(cfg)
    for roi in cfg.data.rois:
        if grid:
            roi_tune = []
            for subject in cfg.encoding.tune_subjects:
                roi_tune += tune_units(cfg, model, subject, roi, roi_cost(subject, roi), tune_split)
            tune += roi_tune
            select.append(Unit(f"select/{model}/{roi}", "select", model, tuple(u.key for u in roi_tune), roi=roi,
                               cost=0.01, group=f"{model}/{roi}"))
        for subject in cfg.data.subjects:
            deps = (f"select/{model}/{roi}",) if grid else (features.key,)
            fit.append(Unit(f"fit/{model}/{subject}/{roi}", "fit", model, deps, subject, roi,
                            cost=roi_cost(subject, roi), group=f"{model}/{roi}"))
    return {"extract": extract, "features": [features], "tune": tune, "select": select, "fit": fit}


def shard_units(units: list[Unit], index: int, count: int) -> list[Unit]:
    """The units of shard ``index`` of ``count``: whole groups, balanced by cost (greedy LPT).

    Deterministic, so every array task computes the same partition. Groups are a model's video
    shards (extraction) and a model's ROIs (tune, select and fit of one ROI), so a shard's
    tuning, selection and fitting of an ROI never wait on another shard; only the ``features``
    units (all on shard 0, :data:`FEATURES_GROUP`) may.
    """
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: index must be in 0..{count - 1}")
    totals: dict[str, float] = {}
    for u in units:
        totals[u.group] = totals.get(u.group, 0.0) + u.cost
    owner = {FEATURES_GROUP: 0}
    heap = [(0.0, s) for s in range(count)]
    for group, cost in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])):
        if group in owner:
            continue
        load, s = heapq.heappop(heap)
        owner[group] = s
        heapq.heappush(heap, (load + cost, s))
    return [u for u in units if owner[u.group] == index]


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``i/N`` (0-based i) into (i, N)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need N >= 1 and 0 <= i < N")
    return i, n
