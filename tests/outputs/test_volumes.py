"""Whole-brain score maps: NIfTI files that round-trip to the masked per-voxel scores."""

from __future__ import annotations

import json

import nibabel
import numpy as np
import pytest

from lwroi.data import load_roi_responses
from lwroi.outputs.volumes import scores_volume, volume_affine, write_nifti


def test_nifti_round_trips_scores_and_affine(tmp_path):
    rng = np.random.default_rng(0)
    mask = (rng.uniform(size=(7, 9, 5)) < 0.3).astype(float)
    scores = rng.standard_normal(int(mask.sum())).astype(np.float32)
    affine = volume_affine([2.0, 0, 0, -78, 0, 2.0, 0, -112, 0, 0, 2.0, -70, 0, 0, 0, 1])
    path = write_nifti(tmp_path / "map.nii.gz", scores_volume(scores, mask), affine)
    image = nibabel.load(path)
    data = np.asarray(image.dataobj)
    assert data.shape == mask.shape
    np.testing.assert_array_equal(data[mask == 1], scores)
    assert np.isnan(data[mask == 0]).all()
    np.testing.assert_array_equal(image.affine, affine)


def test_mask_and_scores_must_agree():
    with pytest.raises(ValueError, match="selects 2 voxels but there are 3 scores"):
        scores_volume(np.zeros(3), np.array([[1, 0], [0, 1]]))


def test_empty_affine_is_identity_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="lwroi"):
        np.testing.assert_array_equal(volume_affine(()), np.eye(4))
    assert "identity affine" in caplog.text


@pytest.mark.slow
def test_a_run_writes_wb_maps_that_match_the_masked_scores(tiny_run, tiny_workspace):
    truth = json.loads((tiny_workspace / "data" / "tiny" / "ground_truth.json").read_text())
    responses = tiny_workspace / "data" / "tiny" / "participants_data_v2021"
    for subject in truth["subjects"]:
        mask = load_roi_responses(responses, subject, "WB", n_train_videos=truth["n_videos"]).voxel_mask
        scores = np.load(tiny_run / "scores" / "alexnet" / f"{subject}_WB.npy")
        image = nibabel.load(tiny_run / "scores" / "alexnet" / f"{subject}_WB.nii.gz")
        data = np.asarray(image.dataobj)
        assert data.shape == (78, 93, 71)
        np.testing.assert_array_equal(data[mask == 1], scores)
        assert np.isnan(data[mask != 1]).all()
        maps = tiny_run / "scores" / "alexnet"
        normalised = np.asarray(nibabel.load(maps / f"{subject}_WB_normalized.nii.gz").dataobj)
        inside = normalised[mask == 1]
        assert np.isfinite(inside).mean() > 0.9 and (np.abs(inside[np.isfinite(inside)]) >= np.abs(
            scores[np.isfinite(inside)]) - 1e-6).all()  # fmt: skip
