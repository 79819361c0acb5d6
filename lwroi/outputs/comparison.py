"""Models compared side by side: accuracy per ROI with a confidence interval, the visual hierarchy, pairwise tests.

The paper's study is a comparison of networks, so a zoo run reduces into three tables beside
``summary.csv``:

- ``comparison.csv``: model × ROI, the subject mean of held-out r and of noise-normalised r, a
  95 % confidence interval of the mean r over subjects, the layer profile's centre of mass in
  normalised depth, and the model's rank in the ROI.
- ``hierarchy.csv``: per model, how well its layer profiles follow the visual pathway (Spearman
  rho between each ROI's place along the pathway and its profile's centre of mass), with a
  permutation p-value.
- ``model_pairs.csv``: per ROI and pair of models, the mean difference of held-out r with a
  paired t-test across subjects (Holm-corrected within the ROI).

The interval and the tests are over **subjects**, not held-out videos: subjects are the sample a
claim about "the brain" generalises from, every subject saw the same videos (so a bootstrap over
videos would measure the stimulus set, not the population), and the records keep one score per
voxel rather than per video. With one subject the interval and the tests are empty (NaN).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

VISUAL_HIERARCHY: dict[str, int] = {"V1": 1, "V2": 2, "V3": 3, "V4": 4, "LOC": 5, "EBA": 5, "FFA": 5, "STS": 5,
                                    "PPA": 5}
"""Each Algonauts ROI's place along the ventral visual pathway: early areas in order, the category-selective
and lateral occipital areas together at the top (their relative order is not established). ROIs not
listed (``WB``, a user's own) are left out of the hierarchy score."""

N_PERMUTATIONS = 10_000
"""Random relabellings of the ROIs' places for the permutation p-value (all of them when fewer exist)."""


def profile_centre(shares: Sequence[float]) -> float:
    """A layer profile's centre of mass in normalised depth: 0 = first layer read, 1 = last.

    Depth is the layer's position among the layers read (not its position in the whole network),
    so models of different depths share one scale. NaN for an empty or all-zero profile.
    """
    shares = np.asarray(shares, dtype=float)
    if shares.size == 0 or not np.isfinite(shares).all() or shares.sum() <= 0:
        return float("nan")
    depth = np.linspace(0.0, 1.0, shares.size) if shares.size > 1 else np.zeros(1)
    return float(np.dot(shares, depth) / shares.sum())


def compare_models(results: pd.DataFrame) -> pd.DataFrame:
    """``comparison.csv``: one row per model × ROI, in the order of ``results``.

    ``results`` is ``results.csv``'s table (one row per model × subject × ROI, with ``pcc``,
    ``pcc_normalized``, ``noise_ceiling`` and ``profile_centre``).
    """
    rows = []
    for (model, roi), group in results.groupby(["model", "roi"], sort=False):
        pcc = group["pcc"].to_numpy(float)
        low, high = _mean_interval(pcc)
        rows.append({
            "model": model, "family": group["family"].iloc[0], "roi": roi, "n_subjects": len(pcc),
            "pcc_mean": float(np.mean(pcc)), "pcc_ci_low": low, "pcc_ci_high": high,
            "pcc_normalized_mean": float(pd.to_numeric(group["pcc_normalized"]).mean()),
            "noise_ceiling_mean": float(pd.to_numeric(group["noise_ceiling"]).mean()),
            "profile_centre_mean": float(pd.to_numeric(group["profile_centre"]).mean()),
        })
    table = pd.DataFrame(rows)
    if not table.empty:
        table["rank_in_roi"] = table.groupby("roi")["pcc_mean"].rank(ascending=False, method="min").astype(int)
    return table


def _mean_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean over subjects; NaN with fewer than two."""
    from scipy import stats  # here, not at import: a login node's minimal install has no scipy

    if len(values) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
    return float(np.mean(values) - half), float(np.mean(values) + half)


def hierarchy_scores(comparison: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """``hierarchy.csv``: per model, Spearman rho between ROI place (:data:`VISUAL_HIERARCHY`) and profile centre.

    The p-value is one-sided (profiles deepen along the pathway: rho > 0) from relabelling the ROIs'
    places at random (every relabelling when there are at most :data:`N_PERMUTATIONS`), with the
    observed labelling counted: (1 + as high or higher) / (1 + relabellings). NaN with fewer than
    three ROIs of the hierarchy or a constant centre.
    """
    rows = []
    for model, group in comparison.groupby("model", sort=False):
        placed = group[group["roi"].isin(list(VISUAL_HIERARCHY))]
        places = placed["roi"].map(VISUAL_HIERARCHY).to_numpy(float)
        centres = placed["profile_centre_mean"].to_numpy(float)
        rho, p = _ranked_correlation(places, centres, seed)
        rows.append({"model": model, "family": group["family"].iloc[0], "n_rois": len(placed),
                     "hierarchy_rho": rho, "hierarchy_p": p})
    return pd.DataFrame(rows, columns=["model", "family", "n_rois", "hierarchy_rho", "hierarchy_p"])


def _ranked_correlation(places: np.ndarray, centres: np.ndarray, seed: int) -> tuple[float, float]:
    from scipy import stats

    ok = np.isfinite(centres)
    places, centres = places[ok], centres[ok]
    if len(places) < 3 or np.ptp(centres) == 0 or np.ptp(places) == 0:
        return float("nan"), float("nan")
    rho = float(stats.spearmanr(places, centres).statistic)
    if len(places) <= 8:  # 8! = 40,320 relabellings: all of them
        relabelled = np.array(list(itertools.permutations(places)))
    else:
        rng = np.random.default_rng(seed)
        relabelled = np.array([rng.permutation(places) for _ in range(N_PERMUTATIONS)])
    ranks = stats.rankdata(relabelled, axis=1)  # Spearman's rho is Pearson's r of the ranks: all at once
    ranks -= ranks.mean(axis=1, keepdims=True)
    centre_ranks = stats.rankdata(centres) - (len(centres) + 1) / 2
    null = ranks @ centre_ranks / (np.linalg.norm(ranks, axis=1) * np.linalg.norm(centre_ranks))
    return rho, float((1 + np.sum(null >= rho - 1e-12)) / (1 + len(null)))


def model_pairs(results: pd.DataFrame) -> pd.DataFrame:
    """``model_pairs.csv``: per ROI, every pair of models: mean r difference over subjects and a paired t-test.

    Pairs are formed over the subjects both models were fitted on; p-values are Holm-corrected over
    the pairs of one ROI (``p_holm``), as a reader compares all models of an ROI at once.
    """
    from scipy import stats

    columns = ["roi", "model_a", "model_b", "n_subjects", "pcc_diff_mean", "t", "p", "p_holm"]
    rows = []
    for roi, group in results.groupby("roi", sort=False):
        wide = group.pivot_table(index="subject", columns="model", values="pcc", observed=True)
        models = [m for m in dict.fromkeys(group["model"]) if m in wide]
        roi_rows = []
        for a, b in itertools.combinations(models, 2):
            both = wide[[a, b]].dropna()
            diff = (both[a] - both[b]).to_numpy(float)
            t, p = (stats.ttest_rel(both[a], both[b]) if len(diff) >= 2 and np.ptp(diff) > 0
                    else (float("nan"), float("nan")))
            roi_rows.append({"roi": roi, "model_a": a, "model_b": b, "n_subjects": len(diff),
                             "pcc_diff_mean": float(diff.mean()) if len(diff) else float("nan"),
                             "t": float(t), "p": float(p)})
        _holm(roi_rows)
        rows += roi_rows
    return pd.DataFrame(rows, columns=columns)


def _holm(rows: list[dict]) -> None:
    """Add ``p_holm`` (Holm's step-down correction over ``rows``; NaN p stays NaN) in place."""
    tested = sorted((r["p"], i) for i, r in enumerate(rows) if np.isfinite(r["p"]))
    running = 0.0
    for step, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - step) * p))
        rows[i]["p_holm"] = running
    for r in rows:
        r.setdefault("p_holm", float("nan"))
