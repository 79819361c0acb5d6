"""``compat: true`` trains and evaluates as the original did: lwroi against a transcription of it.

``tests/encoding/original.py`` is the original's training and evaluation written out in plain
torch with autograd (nn.Linear, MSELoss, Adam, DataLoaders, the per-batch numpy PCC,
EarlyStopping, KFold, the layer contributions, aver_from_csv). Given lwroi's draws (the initial
W from a model's seeded generator, then one ``torch.randperm`` per epoch; what the original left
unseeded), it must reproduce lwroi's numbers: a single early-stopped fit of the estimator, and a
whole ``lwroi run --set compat=true`` (tuning, selection, final fits, results.csv, summary.csv)
replayed from the run's feature store and response pickles.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lwroi.data import load_roi_responses
from lwroi.encoding import LayerWeightedEncoder
from lwroi.encoding._sgd import _model_seeds
from lwroi.features import open_feature_store
from lwroi.orchestration.tasks import unit_seed
from tests.conftest import run_lwroi
from tests.encoding import original
from tests.encoding.test_model import planted_layers

COMPAT = {"layer_scaling": "none", "pcc": "original", "contributions": "original"}
COMPAT_SGD = {"val_pcc": "batch", "drop_last": True, "metric": "pcc"}
"""What ``compat: true`` sets on the estimator and its sgd options (lwroi.config.COMPAT_SETTINGS, encoding)."""
TOL = 1e-5


def lwroi_draws(seed, n_features: int, n_voxels: int, n_train: int) -> tuple[torch.Tensor, original.EpochOrder]:
    """The draws of an lwroi model with ``seed``: W (as nn.Linear's weight) and each epoch's permutation.

    lwroi gives a model its own generator, seeded by ``_model_seeds``; it draws W Xavier-normal
    (std sqrt(2 / (D + V)), as ``xavier_normal_``) and then one ``torch.randperm`` per epoch.
    """
    gen = torch.Generator().manual_seed(_model_seeds([seed], 1)[0])
    W = torch.randn((n_features, n_voxels), generator=gen) * math.sqrt(2.0 / (n_features + n_voxels))
    return W.T.contiguous(), lambda epoch: torch.randperm(n_train, generator=gen).tolist()


def effective_coef(model: original.FCReg) -> np.ndarray:
    """|a| folded into W, as (n_features, n_voxels): lwroi's ``coef_``."""
    scale = torch.cat([model.layer_weight.abs()[i].repeat(d) for i, d in enumerate(model.dim_list)])
    return (model.model.weight * scale).T.detach().numpy()


# ------------------------------------------------------------------ (a) one early-stopped fit


def test_compat_fit_equals_the_original_training_loop():
    X, Y = planted_layers(n=140, noise=0.5)
    X_train, Y_train, X_val, Y_val = [x[:100] for x in X], Y[:100], [x[100:] for x in X], Y[100:]
    settings = original.Settings(lr=1e-2, batch_size=16, epochs=300, patience=10, delta=1e-3)
    sgd = {"lr": settings.lr, "batch_size": 16, "max_epochs": settings.epochs, "patience": settings.patience,
           "min_delta": settings.delta, **COMPAT_SGD}
    est = LayerWeightedEncoder(wc=0.1, lay=0.1, solver_params=sgd, device="cpu", random_state=7, **COMPAT)
    est.fit(X_train, Y_train, X_val=X_val, Y_val=Y_val)

    dims = [x.shape[1] for x in X]
    weight, order = lwroi_draws((7, 0), sum(dims), Y.shape[1], len(Y_train))
    expected = original.predict_fmri_fc2(np.hstack(X_train), np.hstack(X_val), Y_train, Y_val, dim_list=dims,
                                         w_coe=0.1, layer_coe=0.1, settings=settings, initial_weight=weight,
                                         epoch_order=order)  # fmt: skip
    assert expected.n_epochs < settings.epochs / 3, "the test needs a fit that stops early"
    assert (est.best_epoch_, est.n_epochs_) == (expected.best_epoch + 1, expected.n_epochs)
    model = expected.model
    np.testing.assert_allclose(est.coef_, effective_coef(model), atol=TOL)
    np.testing.assert_allclose(est.intercept_, model.model.bias.detach().numpy(), atol=TOL)
    np.testing.assert_allclose(est.layer_weights_, model.layer_weight.abs().detach().numpy(), atol=TOL)
    np.testing.assert_allclose(est.predict(X_val), model.predict(np.hstack(X_val)), atol=TOL)
    np.testing.assert_allclose(est.history_["val_score"], expected.val_scores, atol=TOL)
    np.testing.assert_allclose(est.history_["train_loss"], expected.train_losses, atol=TOL)
    assert est.best_score_ == pytest.approx(expected.best_score, abs=TOL)
    evaluated = original.evaluate(expected, np.hstack(X_val), Y_val)
    np.testing.assert_allclose(est.score_voxels(X_val, Y_val), evaluated.voxel_scores, atol=TOL)
    np.testing.assert_allclose(est.layer_contributions(X_val, Y_val), evaluated.contributions, atol=TOL)


# ------------------------------------------------------------------ (b) a whole compat run

SUBJECTS = ("sub01", "sub02")
ROIS = ("V1", "FFA")
RUN_CONFIG = {
    "data": {"root": "data", "subjects": list(SUBJECTS), "rois": list(ROIS), "n_train_videos": 100, "n_test": 20,
             "split_seed": 400, "n_videos": 102},
    "features": {"model": "alexnet", "weights": "random", "seed": 0,
                 "layers": ["conv1=features.1", "conv3=features.7", "fc8=classifier.6"], "image_size": 64,
                 "reduction": "srp", "reduce_layers": "all", "srp_eps": 0.5, "store_dir": "store"},
    "encoding": {"solver": "sgd", "wc": [0.01, 10.0], "lay": [0.01, 1.0], "folds": 2, "tune_subjects": ["sub01"],
                 "sgd": {"lr": 0.003, "batch_size": 16, "max_epochs": 120, "patience": 5, "min_delta": 0.001},
                 "seed": 3},
    "run": {"output_dir": "run", "extract_shards": 1, "checkpoint_every": 1000},
}  # fmt: skip
"""100 videos, 20 held out: the final fit stops early on one 16-row batch of the held-out rows in
permutation order (4 dropped, as the original's 100 -> 6 x 16); tuning folds are 40 rows."""


@pytest.fixture(scope="module")
def compat_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compat-oracle")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(RUN_CONFIG))
    run_lwroi("synth", "data", "--config", str(config), "--subjects", str(len(SUBJECTS)), "--videos", "100",
              "--challenge", "2", cwd=root)  # fmt: skip
    run_lwroi("run", str(config), "--mpi", "none", "--set", "compat=true", cwd=root)
    return root


def unit_payload(run: Path, key: str) -> dict:
    return json.loads((run / "units" / f"{key}.json").read_text())["payload"]


@pytest.fixture(scope="module")
def replay(compat_run) -> dict:
    """The original's tuning, final fits and summary on the run's features and responses, with lwroi's draws."""
    run = compat_run / "run"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    data, enc = cfg["data"], cfg["encoding"]
    sgd = enc["sgd"]
    compat = (enc["pcc"], sgd["drop_last"], enc["fold_split"], enc["contributions"], data["test_order"])
    assert compat == ("original", True, "contiguous", "original", "permutation"), "compat=true did not take effect"
    store = open_feature_store(compat_run / unit_payload(run, "features/alexnet")["store"])
    train_rows, test_rows = original.heldout_rows(data["n_train_videos"], data["n_test"], data["split_seed"])
    dims = [store.dims[layer] for layer in store.layers]
    x_train, x_test = np.hstack(store.load("train")), np.hstack(store.load("test"))
    settings = original.Settings(lr=sgd["lr"], batch_size=sgd["batch_size"], epochs=sgd["max_epochs"],
                                 patience=sgd["patience"], delta=sgd["min_delta"])  # fmt: skip
    grid = [(wc, lay) for wc in enc["wc"] for lay in enc["lay"]]
    out = {"store": store, "train_rows": train_rows, "test_rows": test_rows, "layers": store.layers,
           "tune": {}, "chosen": {}, "fits": {}}  # fmt: skip
    for roi in ROIS:
        responses = {}
        for subject in SUBJECTS:
            resp = load_roi_responses(compat_run / data["root"] / data["responses_dir"], subject, roi,
                                      n_train_videos=data["n_train_videos"])  # fmt: skip
            assert resp.valid.all(), "the original uses every voxel"
            responses[subject] = resp.data[train_rows], resp.data[test_rows]
        y_train, _ = responses[enc["tune_subjects"][0]]
        V = y_train.shape[1]

        def tune_draws(wc, lay, fold, n, V=V):
            return lwroi_draws((enc["seed"], fold), sum(dims), V, n)

        scores = original.hyper_tune(x_train, y_train, dim_list=dims, grid=grid, fold_num=enc["folds"],
                                     settings=settings, draws=tune_draws)  # fmt: skip
        out["tune"][roi] = scores
        wc, lay = out["chosen"][roi] = original.best_hyper(scores)
        for subject, (y_tr, y_te) in responses.items():
            weight, order = lwroi_draws((unit_seed(enc["seed"], f"fit/{subject}/{roi}"), 0), sum(dims), V, len(y_tr))
            out["fits"][subject, roi] = original.train_and_evaluate(
                x_train, y_tr, x_test, y_te, dim_list=dims, w_coe=wc, layer_coe=lay, settings=settings,
                initial_weight=weight, epoch_order=order,
            )  # fmt: skip
    scores = {roi: [out["fits"][s, roi].voxel_scores.mean() for s in SUBJECTS] for roi in ROIS}
    out["summary"] = original.aver_from_csv(scores)
    return out


@pytest.mark.slow
def test_feature_store_rows_are_the_original_split(replay):
    rows = replay["store"].meta["rows"]
    np.testing.assert_array_equal(rows["train"], replay["train_rows"])
    np.testing.assert_array_equal(rows["test"], replay["test_rows"])  # permutation order, not sorted
    assert not (np.diff(replay["test_rows"]) > 0).all()


@pytest.mark.slow
def test_tuning_scores_and_choice_equal_the_original(compat_run, replay):
    for roi in ROIS:
        selected = unit_payload(compat_run / "run", f"select/alexnet/{roi}")
        cv = {(row["wc"], row["lay"]): row["cv_score"] for row in selected["grid"]}
        assert cv.keys() == replay["tune"][roi].keys()
        for point, score in replay["tune"][roi].items():
            assert cv[point] == pytest.approx(score, abs=TOL), (roi, point)
        assert (selected["wc"], selected["lay"]) == replay["chosen"][roi]
        best, runner_up = sorted(replay["tune"][roi].values())[:-3:-1]
        assert best - runner_up > 20 * TOL, f"{roi}: the test needs a choice that rounding cannot flip"


@pytest.mark.slow
def test_results_equal_the_original(compat_run, replay):
    results = pd.read_csv(compat_run / "run" / "results.csv").set_index(["subject", "roi"])
    for (subject, roi), evaluated in replay["fits"].items():
        row, trained = results.loc[(subject, roi)], evaluated.trained
        assert (row["wc"], row["lay"]) == replay["chosen"][roi]
        assert row["pcc"] == pytest.approx(evaluated.voxel_scores.mean(), abs=TOL)
        assert (row["best_epoch"], row["n_epochs"]) == (trained.best_epoch + 1, trained.n_epochs)
        assert trained.n_epochs < RUN_CONFIG["encoding"]["sgd"]["max_epochs"], "the test needs fits that stop early"
        weights = [row[f"weight_{layer}"] for layer in replay["layers"]]
        np.testing.assert_allclose(weights, trained.model.layer_weight.abs().detach().numpy(), atol=TOL)
        contributions = [row[f"contrib_{layer}"] for layer in replay["layers"]]
        np.testing.assert_allclose(contributions, evaluated.contributions, atol=TOL)
        scores = np.load(compat_run / "run" / "scores" / "alexnet" / f"{subject}_{roi}.npy")
        np.testing.assert_allclose(scores, evaluated.voxel_scores, atol=TOL)


@pytest.mark.slow
def test_summary_equals_the_original_avg_res(compat_run, replay):
    summary = pd.read_csv(compat_run / "run" / "summary.csv").set_index("roi")
    for roi in ROIS:
        assert summary.loc[roi, "pcc_mean"] == pytest.approx(replay["summary"].loc["mean", roi], abs=TOL)
        assert summary.loc[roi, "pcc_std"] == pytest.approx(replay["summary"].loc["std", roi], abs=TOL)
