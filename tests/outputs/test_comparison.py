"""The cross-model tables against scipy's own statistics and hand-computed cases."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lwroi.outputs.comparison import (
    VISUAL_HIERARCHY,
    compare_models,
    hierarchy_scores,
    model_pairs,
    profile_centre,
)

ROIS = list(VISUAL_HIERARCHY)


def results_table(rng: np.random.Generator, models: dict[str, float], n_subjects: int = 4) -> pd.DataFrame:
    """results.csv rows: per model an accuracy offset, profile centres rising along the pathway for 'deep'."""
    rows = []
    for model, offset in models.items():
        for roi in ROIS:
            for s in range(n_subjects):
                centre = VISUAL_HIERARCHY[roi] / 5 if model == "deep" else 0.5 + 0.01 * rng.standard_normal()
                rows.append({"model": model, "family": "cnn", "subject": f"sub{s + 1:02d}", "roi": roi,
                             "pcc": offset + 0.05 * rng.standard_normal(), "pcc_normalized": 0.5,
                             "noise_ceiling": 0.8, "profile_centre": centre})
    return pd.DataFrame(rows)


def test_profile_centre_is_the_mean_normalised_depth():
    assert profile_centre([1, 0, 0, 0]) == 0.0
    assert profile_centre([0, 0, 0, 1]) == 1.0
    assert profile_centre([0.25, 0.25, 0.25, 0.25]) == pytest.approx(0.5)
    assert profile_centre([0, 1, 0]) == pytest.approx(0.5)
    assert np.isnan(profile_centre([0, 0]))


def test_confidence_interval_is_scipys_t_interval_over_subjects():
    table = compare_models(results_table(np.random.default_rng(0), {"a": 0.2}))
    pcc = results_table(np.random.default_rng(0), {"a": 0.2}).query("roi == 'V1'")["pcc"].to_numpy()
    low, high = stats.t.interval(0.95, len(pcc) - 1, loc=pcc.mean(), scale=stats.sem(pcc))
    row = table[table["roi"] == "V1"].iloc[0]
    assert row["pcc_ci_low"] == pytest.approx(low) and row["pcc_ci_high"] == pytest.approx(high)
    assert row["n_subjects"] == 4 and row["pcc_mean"] == pytest.approx(pcc.mean())


def test_models_are_ranked_per_roi():
    table = compare_models(results_table(np.random.default_rng(1), {"weak": 0.0, "strong": 0.5}))
    assert (table.loc[table["model"] == "strong", "rank_in_roi"] == 1).all()
    assert (table.loc[table["model"] == "weak", "rank_in_roi"] == 2).all()


def test_hierarchy_score_is_spearman_with_an_exact_permutation_p():
    table = compare_models(results_table(np.random.default_rng(2), {"deep": 0.2, "flat": 0.2}))
    scores = hierarchy_scores(table).set_index("model")
    places = [VISUAL_HIERARCHY[r] for r in ROIS]
    centres = table[table["model"] == "flat"].set_index("roi").loc[ROIS, "profile_centre_mean"].to_numpy()
    assert scores.loc["flat", "hierarchy_rho"] == pytest.approx(stats.spearmanr(places, centres).statistic)
    assert scores.loc["deep", "hierarchy_rho"] == pytest.approx(1.0)
    # 9 ROIs: p from random relabellings; a perfect rank order is rarer than 1 in 100
    assert scores.loc["deep", "hierarchy_p"] < 0.01
    assert scores.loc["flat", "hierarchy_p"] > 0.01


def test_hierarchy_p_counts_every_relabelling_of_few_rois():
    rois = ["V1", "V2", "V3", "V4"]
    table = pd.DataFrame({"model": "m", "family": "cnn", "roi": rois, "profile_centre_mean": [0.1, 0.3, 0.2, 0.9]})
    rho, p = hierarchy_scores(table).iloc[0][["hierarchy_rho", "hierarchy_p"]]
    perms = [stats.spearmanr(perm, [0.1, 0.3, 0.2, 0.9]).statistic for perm in itertools.permutations([1, 2, 3, 4])]
    assert rho == pytest.approx(0.8)
    assert p == pytest.approx((1 + sum(r >= rho - 1e-12 for r in perms)) / (1 + len(perms)))


def test_model_pairs_are_paired_t_tests_with_holm_correction():
    results = results_table(np.random.default_rng(3), {"a": 0.3, "b": 0.1, "c": 0.29})
    pairs = model_pairs(results)
    v1 = pairs[pairs["roi"] == "V1"].set_index(["model_a", "model_b"])
    wide = results[results["roi"] == "V1"].pivot(index="subject", columns="model", values="pcc")
    want = {pair: stats.ttest_rel(wide[pair[0]], wide[pair[1]]) for pair in itertools.combinations("abc", 2)}
    for pair, test in want.items():
        assert v1.loc[pair, "t"] == pytest.approx(test.statistic)
        assert v1.loc[pair, "p"] == pytest.approx(test.pvalue)
        assert v1.loc[pair, "pcc_diff_mean"] == pytest.approx((wide[pair[0]] - wide[pair[1]]).mean())
    p = sorted(t.pvalue for t in want.values())
    holm = np.maximum.accumulate([min(1.0, (3 - i) * q) for i, q in enumerate(p)])
    assert sorted(v1["p_holm"]) == pytest.approx(sorted(holm))


def test_one_subject_gives_no_interval_and_no_test():
    results = results_table(np.random.default_rng(4), {"a": 0.3, "b": 0.1}, n_subjects=1)
    assert compare_models(results)["pcc_ci_low"].isna().all()
    assert model_pairs(results)["p"].isna().all()
