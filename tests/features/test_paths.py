"""Feature store folders: settings that change the features change the folder, others keep it."""

from __future__ import annotations

from dataclasses import fields, make_dataclass, replace

import pytest

from lwroi.config import FeatureConfig, config_from_dict
from lwroi.data import VideoFingerprint, video_fingerprints
from lwroi.features.store import NOT_HASHED, REDUCTION_FIELDS, feature_paths

CHANGES = {  # field: (base overrides, the same with the field changed); every hashed field has its row
    "model": ([], ["features.model=resnet18"]),
    "layers": ([], ["features.layers=[conv1]"]),
    "weights": ([], ["features.weights=w.pt"]),
    "weights_sha256": ([], ["features.weights_sha256=" + "0" * 64]),
    "frame_sampling": ([], ["features.frame_sampling=stride"]),
    "frame_count": ([], ["features.frame_count=8"]),
    "frame_stride": (["features.frame_sampling=stride"], ["features.frame_sampling=stride", "features.frame_stride=2"]),
    "image_size": ([], ["features.image_size=112"]),
    "resize": ([], ["features.resize=shorter"]),
    "reduction": ([], ["features.reduction=pca"]),
    "reduce_layers": ([], ["features.reduce_layers=all"]),
    "srp_eps": ([], ["features.srp_eps=0.2"]),
    "pca_ratio": (["features.reduction=pca"], ["features.reduction=pca", "features.pca_ratio=0.9"]),
    "test_scaler": ([], ["features.test_scaler=test"]),
    "scale_floor": ([], ["features.scale_floor=false"]),
    "restandardize": ([], ["features.restandardize=true"]),
    "seed": ([], ["features.seed=1"]),
}


@pytest.fixture
def video_files(tmp_path):
    paths = [tmp_path / f"{i:04d}.mp4" for i in range(1, 4)]
    for p in paths:
        p.write_bytes(b"x" * 10)
    return paths


@pytest.fixture
def videos(video_files):
    return video_fingerprints(video_files)


def _paths(videos, *overrides):
    return feature_paths(config_from_dict({}, overrides=list(overrides)), videos)


@pytest.mark.parametrize("override", ["features.resize=shorter", "features.frame_sampling=stride"])
def test_settings_that_change_the_frames_change_the_raw_folder(videos, override):
    assert _paths(videos, override).raw_root != _paths(videos).raw_root


def test_square_resize_keeps_the_raw_folder_of_earlier_runs(videos):
    assert _paths(videos, "features.resize=square").raw_root == _paths(videos).raw_root


@pytest.mark.parametrize("override", ["features.scale_floor=false", "features.restandardize=true"])
def test_reduction_settings_change_only_the_store_folder(videos, override):
    changed, base = _paths(videos, override), _paths(videos)
    assert changed.raw_root == base.raw_root
    assert changed.store != base.store


def test_a_video_replaced_in_place_with_the_same_name_and_size_changes_the_folders(video_files, videos):
    video_files[1].write_bytes(b"y" * 10)
    replaced = _paths(video_fingerprints(video_files))
    assert replaced.raw_root != _paths(videos).raw_root
    assert replaced.store != _paths(videos).store


def test_every_feature_setting_is_hashed_or_listed_as_not_hashed():
    assert set(CHANGES) | set(NOT_HASHED) == {f.name for f in fields(FeatureConfig)}
    assert not set(CHANGES) & set(NOT_HASHED)


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_changing_a_hashed_setting_changes_the_store_folder(videos, name):
    base, changed = (_paths(videos, *overrides) for overrides in CHANGES[name])
    assert changed.store != base.store
    assert (changed.raw_root == base.raw_root) == (name in REDUCTION_FIELDS)


def test_settings_that_are_not_hashed_keep_the_folders(videos):
    base = _paths(videos)
    assert _paths(videos, "features.batch_size=7") == base
    moved = _paths(videos, "features.store_dir=elsewhere")
    assert (moved.raw_root.name, moved.store.name) == (base.raw_root.name, base.store.name)


def test_a_setting_added_to_the_features_section_changes_the_raw_folder(videos):
    cfg = config_from_dict({})
    extended = make_dataclass("ExtendedFeatureConfig", [("new_knob", int, 1)], bases=(FeatureConfig,), frozen=True)
    values = {f.name: getattr(cfg.features, f.name) for f in fields(FeatureConfig)}
    added = feature_paths(replace(cfg, features=extended(**values)), videos)
    assert added.raw_root != feature_paths(cfg, videos).raw_root


@pytest.mark.parametrize(("overrides", "raw", "store"), [
    ([], "alexnet-2e6c7ae026f05b45", "srp-93c1b4b0c0e36419"),
    (["compat=true"], "alexnet-e7d30a5d4ee9e405", "srp-7ec44def903dcdaf"),
    (["features.reduction=pca", "features.frame_sampling=stride", "features.resize=shorter"],
     "alexnet-e7d30a5d4ee9e405", "pca-77f7a55e5d282be4"),
])
def test_the_folders_of_earlier_runs_keep_their_names(overrides, raw, store):
    """Keys as lwroi named them before the settings were hashed field by field: earlier stores stay in use."""
    videos = [VideoFingerprint("0001.mp4", 10, "a" * 64), VideoFingerprint("0002.mp4", 12, "b" * 64)]
    paths = _paths(videos, *overrides)
    assert (paths.raw_root.name, paths.store.name) == (raw, store)
