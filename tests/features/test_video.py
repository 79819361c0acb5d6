from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lwroi.exceptions import DataLayoutError
from lwroi.features.video import read_video_frames, sample_frame_indices


def test_stride_sampling_keeps_the_originals_frames():
    np.testing.assert_array_equal(sample_frame_indices(10, sampling="stride", count=0, stride=4), [3, 7])


@pytest.mark.parametrize(("n_frames", "stride"), [(30, 4), (45, 4), (32, 4), (7, 3), (5, 1), (3, 4)])
def test_stride_sampling_matches_the_originals_one_based_rule(n_frames, stride):
    # the original keeps frame fc (1-based) when fc % stride == 0, and int(n / stride) of them
    expected = [fc - 1 for fc in range(1, n_frames + 1) if fc % stride == 0]
    idx = sample_frame_indices(n_frames, sampling="stride", count=0, stride=stride)
    np.testing.assert_array_equal(idx, expected)
    assert len(idx) == int(n_frames / stride)


def test_count_sampling_spans_first_to_last_frame():
    np.testing.assert_array_equal(sample_frame_indices(90, sampling="count", count=4, stride=0), [0, 30, 59, 89])


def test_count_sampling_repeats_frames_of_short_clips():
    idx = sample_frame_indices(3, sampling="count", count=5, stride=0)
    assert len(idx) == 5
    assert set(idx) == {0, 1, 2}
    assert np.all(np.diff(idx) >= 0)


@pytest.mark.parametrize("n_frames", [0, -1])
def test_sampling_rejects_empty_clips(n_frames):
    with pytest.raises(ValueError, match=r"at least one frame"):
        sample_frame_indices(n_frames, sampling="count", count=4, stride=4)


def test_sampling_rejects_unknown_mode():
    with pytest.raises(ValueError, match=r"sampling = 'every'"):
        sample_frame_indices(10, sampling="every", count=4, stride=4)


def test_read_video_frames_returns_the_sampled_frames(gray_ramp_video):
    frames = read_video_frames(gray_ramp_video, sampling="stride", count=0, stride=4)
    assert frames.dtype == np.uint8
    assert frames.shape == (7, 64, 64, 3)
    levels = frames.reshape(7, -1).mean(axis=1)
    np.testing.assert_allclose(levels, 8 * np.arange(3, 30, 4), atol=2)


def test_stride_longer_than_the_clip_names_file_frames_and_stride(gray_ramp_video):
    with pytest.raises(DataLayoutError, match=r"ramp.mp4: 30 frames, fewer than frame_stride = 31"):
        read_video_frames(gray_ramp_video, sampling="stride", count=0, stride=31)


def test_read_video_frames_count_sampling(gray_ramp_video):
    frames = read_video_frames(gray_ramp_video, sampling="count", count=3, stride=0)
    np.testing.assert_allclose(frames.reshape(3, -1).mean(axis=1), [0, 8 * 14, 8 * 29], atol=2)


@pytest.mark.parametrize("content", [b"", b"not a video at all"])
def test_read_video_frames_names_an_unreadable_file(tmp_path, content):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    with pytest.raises(DataLayoutError, match=r"broken.mp4: cannot decode"):
        read_video_frames(bad, sampling="count", count=4, stride=4)


def test_read_video_frames_names_a_missing_file(tmp_path):
    with pytest.raises(DataLayoutError, match=r"missing.mp4"):
        read_video_frames(Path(tmp_path / "missing.mp4"), sampling="count", count=4, stride=4)
