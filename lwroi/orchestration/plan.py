"""The run as a plan of small, named, idempotent work units.

Phases: ``extract`` (one unit per video shard) → ``features`` (reduce + feature store) →
``tune`` (CV grid on the tuning subjects, per ROI) → ``select`` (best wc, lay per ROI) →
``fit`` (per subject × ROI). Every unit has one canonical key, used in its file name, logs
and errors, e.g. ``tune/sub01/V1/fold=0`` or ``fit/sub03/FFA``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lwroi.config import Config

PHASES = ("extract", "features", "tune", "select", "fit")
TUNE_SPLITS = ("roi", "fold", "point")


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
    deps: tuple[str, ...] = ()
    subject: str | None = None
    roi: str | None = None
    shard: int | None = None
    models: tuple[TuneModel, ...] = ()
    cost: float = 1.0
    group: str = field(default="", compare=False)
    """Units of one group (an ROI, or a video shard) stay in one ``--shard`` so no shard waits on another."""


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


def tune_units(cfg: Config, subject: str, roi: str, cost: float, split: str) -> list[Unit]:
    """The tuning units of one subject × ROI, cut as ``split`` says (all models batched per unit)."""
    models = grid_models(cfg.encoding.wc, cfg.encoding.lay, cfg.encoding.folds)
    base = f"tune/{subject}/{roi}"
    if split == "roi":
        groups = {base: models}
    elif split == "fold":
        groups = {f"{base}/fold={k}": [m for m in models if m.fold == k] for k in range(cfg.encoding.folds)}
    else:
        groups = {f"{base}/wc={_fmt(m.wc)},lay={_fmt(m.lay)}/fold={m.fold}": [m] for m in models}
    return [
        Unit(key, "tune", ("features",), subject, roi, models=tuple(ms), cost=cost * len(ms), group=roi)
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
    n = cfg.run.extract_shards
    units = [Unit(f"extract/shard={k:03d}", "extract", shard=k, cost=1.0, group=f"extract{k}") for k in range(n)]
    units.append(Unit("features", "features", tuple(u.key for u in units), cost=1.0, group="features"))
    tune, select, fit = [], [], []
    grid = uses_grid(cfg)
    for roi in cfg.data.rois:
        if grid:
            roi_tune = []
            for subject in cfg.encoding.tune_subjects:
                roi_tune += tune_units(cfg, subject, roi, roi_cost(subject, roi), tune_split)
            tune += roi_tune
            select.append(Unit(f"select/{roi}", "select", tuple(u.key for u in roi_tune), roi=roi, cost=0.01,
                               group=roi))
        for subject in cfg.data.subjects:
            fit.append(Unit(f"fit/{subject}/{roi}", "fit", (f"select/{roi}",) if grid else ("features",), subject,
                            roi, cost=roi_cost(subject, roi), group=roi))
    by_cost = lambda us: sorted(us, key=lambda u: -u.cost)  # noqa: E731 - local sort key
    phases = {"extract": units[:-1], "features": units[-1:], "tune": by_cost(tune), "select": select,
              "fit": by_cost(fit)}
    return [u for p in PHASES[: last + 1] for u in phases[p]]


def shard_units(units: list[Unit], index: int, count: int) -> list[Unit]:
    """The units of shard ``index`` of ``count``: whole groups, balanced by cost (greedy LPT).

    Deterministic, so every array task computes the same partition. Groups are video shards
    (extraction) and ROIs (tune, select and fit of one ROI), so a shard's tuning, selection
    and fitting of an ROI never wait on another shard; only the shared ``features`` unit
    (shard 0) may.
    """
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: index must be in 0..{count - 1}")
    totals: dict[str, float] = {}
    for u in units:
        totals[u.group] = totals.get(u.group, 0.0) + u.cost
    owner = {"features": 0}
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
