"""Feature store folders: settings that change the features change the folder, others keep it."""

from __future__ import annotations

import pytest

from lwroi.config import config_from_dict
from lwroi.data import video_fingerprints
from lwroi.orchestration.tasks import feature_paths


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
