"""The decoded-frame cache: the frames PyAV decodes, read back bit for bit; never stale, never garbled."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from lwroi.features.extract import LayerFeatureExtractor, extract_video_features
from lwroi.features.frame_cache import FrameCache
from lwroi.features.video import read_video_frames
from tests.features.conftest import write_mp4

COUNT = {"sampling": "count", "count": 5, "stride": 4}
STRIDE = {"sampling": "stride", "count": 5, "stride": 4}


def test_a_second_reader_decodes_nothing_and_gets_the_decoded_frames(make_noise_videos, tmp_path):
    paths = make_noise_videos([12, 20, 9])
    first = FrameCache(tmp_path / "frames")
    got = [first.read(p, **COUNT) for p in paths]
    assert (first.decoded, first.hits) == (3, 0)
    second = FrameCache(tmp_path / "frames")  # another model, rank or run
    again = [second.read(p, **COUNT) for p in paths]
    assert (second.decoded, second.hits) == (0, 3)
    for path, a, b in zip(paths, got, again, strict=True):
        decoded = read_video_frames(path, **COUNT)
        assert a.dtype == b.dtype == np.uint8
        np.testing.assert_array_equal(a, decoded)
        np.testing.assert_array_equal(b, decoded)
    assert len(list(first.folder(**COUNT).glob("*.npz"))) == 3
    assert not list(first.folder(**COUNT).glob(".*")), "a temporary file was left behind"


def test_another_sampling_or_a_replaced_clip_is_decoded_again(make_noise_videos, tmp_path, rng):
    (path,) = make_noise_videos([16])
    cache = FrameCache(tmp_path / "frames")
    cache.read(path, **COUNT)
    np.testing.assert_array_equal(cache.read(path, **STRIDE), read_video_frames(path, **STRIDE))
    assert cache.folder(**STRIDE) != cache.folder(**COUNT)
    assert cache.decoded == 2
    write_mp4(path, rng.integers(0, 256, size=(16, 64, 64, 3), dtype=np.uint8))  # same name, new content
    np.testing.assert_array_equal(cache.read(path, **COUNT), read_video_frames(path, **COUNT))
    assert (cache.decoded, cache.hits) == (3, 0)


def test_a_garbled_entry_is_decoded_again_with_a_warning_and_rewritten(make_noise_videos, tmp_path, caplog):
    (path,) = make_noise_videos([12])
    cache = FrameCache(tmp_path / "frames")
    cache.read(path, **COUNT)
    (entry,) = cache.folder(**COUNT).glob("*.npz")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x10  # one flipped bit among the pixels: zip's CRC-32 catches it
    entry.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="lwroi"):
        frames = cache.read(path, **COUNT)
    assert "unreadable" in caplog.text and path.name in caplog.text
    np.testing.assert_array_equal(frames, read_video_frames(path, **COUNT))
    assert (cache.decoded, cache.hits) == (2, 0)
    cache.read(path, **COUNT)
    assert cache.hits == 1  # the rewritten entry reads clean


def test_a_missing_clip_names_the_file(tmp_path):
    from lwroi.exceptions import DataLayoutError

    with pytest.raises(DataLayoutError, match=r"gone\.mp4"):
        FrameCache(tmp_path / "frames").read(tmp_path / "gone.mp4", **COUNT)


def test_extraction_through_the_cache_gives_the_same_features(make_noise_videos, tmp_path):
    paths = make_noise_videos([12, 7, 20, 9])
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.LazyLinear(6))
    net(torch.zeros(1, 3, 32, 32))
    extractor = LayerFeatureExtractor(net, {"conv": "1", "fc": "3"}, image_size=32, device="cpu")
    plain = extract_video_features(paths, extractor, batch_size=8, **COUNT)
    cache = FrameCache(tmp_path / "frames")
    cold = extract_video_features(paths, extractor, batch_size=8, frame_cache=cache, **COUNT)
    warm = extract_video_features(paths, extractor, batch_size=8, frame_cache=cache, **COUNT)
    assert (cache.decoded, cache.hits) == (4, 4)
    for name in plain:
        np.testing.assert_array_equal(cold[name], plain[name])
        np.testing.assert_array_equal(warm[name], plain[name])


def test_clips_with_equal_bytes_share_one_entry_even_decoded_at_once(make_noise_videos, tmp_path):
    """A repeated stimulus stored twice: the decode threads may write its one entry at the same moment."""
    (path,) = make_noise_videos([12])
    copies = [path.with_name(f"repeat{k}.mp4") for k in range(6)]
    for copy in copies:
        copy.write_bytes(path.read_bytes())
    cache = FrameCache(tmp_path / "frames")
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(lambda p: cache.read(p, **COUNT), copies))
    assert cache.decoded + cache.hits == 6 and len(list(cache.folder(**COUNT).glob("*.npz"))) == 1
    for frames in got:
        np.testing.assert_array_equal(frames, read_video_frames(path, **COUNT))
