"""``lwroi export``: the challenge submission of a run (the tiny config's), in the Algonauts 2021 format."""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile

import numpy as np
import pytest
import yaml

from lwroi._io import safe_load_pickle
from lwroi.data import load_roi_responses
from tests.conftest import TINY_CONFIG, run_lwroi

pytestmark = pytest.mark.slow


def test_export_has_every_track_roi_and_subject_with_the_exact_shapes(tiny_run, tiny_workspace, tmp_path):
    proc = run_lwroi("export", str(tiny_run), "--out", str(tmp_path), cwd=tiny_workspace)
    assert "mini_track" in proc.stdout and "full_track" in proc.stdout
    truth = json.loads((tiny_workspace / "data" / "tiny" / "ground_truth.json").read_text())
    responses = tiny_workspace / "data" / "tiny" / "participants_data_v2021"
    rois_of_the_run = yaml.safe_load(TINY_CONFIG.read_text())["data"]["rois"]
    assert "WB" in rois_of_the_run and len(rois_of_the_run) > 1  # both tracks
    for track, rois in (("mini_track", [r for r in rois_of_the_run if r != "WB"]), ("full_track", ["WB"])):
        with zipfile.ZipFile(tmp_path / f"{track}.zip") as archive:
            assert archive.namelist() == [f"{track}.pkl"]
            archive.extract(f"{track}.pkl", tmp_path / "unzipped")
        submission = safe_load_pickle(tmp_path / "unzipped" / f"{track}.pkl")
        assert sorted(submission) == sorted(rois)
        for roi in rois:
            assert sorted(submission[roi]) == truth["subjects"]
            for subject, pred in submission[roi].items():
                n_voxels = load_roi_responses(responses, subject, roi, n_train_videos=truth["n_videos"]).n_voxels
                assert pred.shape == (truth["n_challenge"], n_voxels) and pred.dtype == np.float32
                assert np.isfinite(pred).all() and pred.std() > 0


def test_export_of_an_incomplete_run_lists_what_is_missing(tiny_run, tiny_workspace, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(tiny_run, partial)
    (partial / "units" / "fit" / "alexnet" / "sub02" / "LOC.json").unlink()
    proc = run_lwroi("export", str(partial), cwd=tiny_workspace, check=False)
    assert proc.returncode == 3
    assert "missing: fit/alexnet/sub02/LOC" in proc.stderr
    assert not (partial / "export").exists()


def test_safe_loader_reads_what_the_challenge_reads(tiny_run, tiny_workspace, tmp_path):
    """The pickle holds plain dicts of numpy arrays, as the challenge's own loader expects."""
    run_lwroi("export", str(tiny_run), "--out", str(tmp_path), cwd=tiny_workspace)
    with open(tmp_path / "full_track.pkl", "rb") as f:
        plain = pickle.load(f)
    assert type(plain) is dict and type(plain["WB"]) is dict
