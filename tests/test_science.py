"""Science check: the real pipeline recovers the layer profiles planted in the synthetic dataset.

``lwroi synth`` plants, per ROI, a known layer profile and noise level in responses built
from the very DNN features the fit uses; ``lwroi run`` must then (a) rank the layers of every
ROI as planted and (b) predict held-out videos close to the planted noise ceiling. All ten
ROIs are checked, early (V1-V3) through mid (V4, LOC, EBA) to late (FFA, STS, PPA) and WB.

The config (tests/science.yaml) reads 4 AlexNet layers, not the paper's 8: layers of one
randomly initialised network share most of their variance (centred kernel alignment
0.89-0.99 between neighbours, fc6/fc7/fc8 and conv5/fc8 ~0.99), so with all 8 the planted
rank order of neighbouring layers is not identifiable from ~100 videos, and a rank-correlation
check of it would measure luck. conv1, conv2, conv4 and fc8 are spread over the depth; pool1
(right after conv1) took conv1's weight. SRP keeps ~1100 dimensions per layer (srp_eps 0.25):
at 0.5 (~240) the projection blurs the layer-distinctive directions and conv2 takes weight
from its neighbours. The fit runs long with early stopping only after 50 epochs without gain:
the layer weights separate late, long after the validation score levels off. Checked with
synth seeds 0, 1 and 2 (every ROI >= 0.8).

The kernel solver runs the same pipeline and is held to the same accuracy bar. Its layer
weights are not held to the rank bar: they are chosen to minimise the GCV prediction error,
which here favours fc8 (seen: 0.4-1.0 per ROI), not to match the planted parameterisation;
its profile recovery is compared with SGD's on isotropic data in tests/encoding/test_kernel.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import spearmanr

from tests.conftest import run_lwroi

CONFIG = Path(__file__).with_name("science.yaml")
MIN_SPEARMAN = 0.8
"""Rank correlation of the subject-mean fitted layer weights with the planted ones (the issue's bar)."""
SPEARMAN_ROUNDING = 1e-9
"""scipy returns 0.7999999999999999 for one adjacent swap of 4 layers (exactly 0.8)."""
MIN_CEILING_SHARE = 0.8
"""Mean held-out Pearson r per ROI as a share of the planted noise ceiling (the issue's bar)."""


@pytest.fixture(scope="module")
def science_data(tmp_path_factory) -> Path:
    """A folder with the synthetic dataset of tests/science.yaml (``data``) and its ground truth."""
    root = tmp_path_factory.mktemp("science")
    run_lwroi("synth", str(root / "data"), "--config", str(CONFIG), cwd=root)
    return root


def fit(root: Path, solver: str) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Ground truth, results.csv and summary.csv of ``lwroi run`` of tests/science.yaml with ``solver``."""
    run = root / f"run-{solver}"
    overrides = {"data.root": root / "data", "run.output_dir": run, "features.store_dir": root / "store",
                 "encoding.solver": solver}
    run_lwroi("run", str(CONFIG), "--mpi", "none", *(a for k, v in overrides.items() for a in ("--set", f"{k}={v}")),
              cwd=root)
    truth = json.loads((root / "data" / "ground_truth.json").read_text())
    return truth, pd.read_csv(run / "results.csv"), pd.read_csv(run / "summary.csv")


@pytest.fixture(scope="module")
def fitted(science_data) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    return fit(science_data, "sgd")


@pytest.fixture(scope="module")
def fitted_kernel(science_data) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    return fit(science_data, "kernel")


@pytest.mark.slow
def test_fitted_layer_profile_of_each_roi_ranks_layers_as_planted(fitted) -> None:
    truth, results, _ = fitted
    columns = [f"weight_{layer}" for layer in truth["layers"]]
    rho = {}
    for roi, planted in truth["rois"].items():
        fitted_mean = results.loc[results["roi"] == roi, columns].to_numpy(float).mean(axis=0)
        rho[roi] = spearmanr(planted["layer_weights"], fitted_mean).statistic
    failing = {roi: round(r, 2) for roi, r in rho.items() if not r >= MIN_SPEARMAN - SPEARMAN_ROUNDING}
    assert not failing, f"Spearman(planted, subject-mean fitted layer weights) < {MIN_SPEARMAN}: {failing}"


@pytest.mark.slow
@pytest.mark.parametrize("solver_fit", ["fitted", "fitted_kernel"])
def test_heldout_accuracy_of_each_roi_approaches_planted_noise_ceiling(solver_fit, request) -> None:
    truth, results, summary = request.getfixturevalue(solver_fit)
    assert len(results) == len(truth["subjects"]) * len(truth["rois"])
    share = {
        roi: float(summary.set_index("roi").loc[roi, "pcc_mean"]) / planted["noise_ceiling"]
        for roi, planted in truth["rois"].items()
    }
    failing = {roi: round(s, 2) for roi, s in share.items() if not s >= MIN_CEILING_SHARE}
    assert not failing, f"mean held-out r / noise ceiling < {MIN_CEILING_SHARE}: {failing}"


@pytest.mark.slow
def test_noise_ceiling_from_the_repetitions_matches_the_planted_one(fitted) -> None:
    """results.csv's split-half noise ceiling (Spearman-Brown) per ROI, against the planted noise."""
    truth, results, summary = fitted
    table = summary.set_index("roi")
    for roi, planted in truth["rois"].items():
        assert table.loc[roi, "noise_ceiling_mean"] == pytest.approx(planted["noise_ceiling"], abs=0.03), roi
        rows = results[results["roi"] == roi]
        assert (rows["n_reliable_voxels"] == rows["n_valid_voxels"]).all(), roi  # planted signal everywhere
        ratio = rows["pcc_normalized"] / rows["pcc"]
        assert (ratio > 1).all(), roi  # normalising by a ceiling below 1 raises every score
