"""Every model family extracts features of real mp4 clips, reproducibly for a seed, at small sizes."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import warnings

import numpy as np
import pytest

from lwroi.config import FeatureConfig
from lwroi.exceptions import RandomWeightsWarning
from lwroi.features import build_extractor, extract_video_features
from lwroi.features.video import read_video_frames

needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                                reason="timm is not installed (pip install -e '.[test]' brings it)")
INFO_KEYS = {"model", "family", "weights", "sha256", "random_init", "seed", "build_kwargs"}
TINY_NET = """
import torch

def build():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(4, 8, 3, stride=2), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5),
    )
"""


@pytest.fixture
def tiny_net(tmp_path, monkeypatch) -> str:
    """``lwroi_tiny_net:build``, a user's own network on sys.path for this test only."""
    (tmp_path / "lwroi_tiny_net.py").write_text(textwrap.dedent(TINY_NET))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lwroi_tiny_net", raising=False)
    yield "lwroi_tiny_net:build"
    sys.modules.pop("lwroi_tiny_net", None)


def extract(f: FeatureConfig, paths) -> tuple[dict[str, np.ndarray], dict, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        extractor, info = build_extractor(f, device="cpu")
    feats = extract_video_features(paths, extractor, sampling=f.frame_sampling, count=f.frame_count,
                                   stride=f.frame_stride, batch_size=f.batch_size)
    return feats, info, extractor


def check_features(feats, extractor, n_videos: int) -> None:
    assert list(feats) == list(extractor.layers)
    for name, values in feats.items():
        assert values.shape == (n_videos, extractor.dims[name])
        assert values.dtype == np.float32
        assert np.isfinite(values).all()
    if n_videos > 1:
        for name in list(feats)[:-1]:  # torchvision's ViT zero-initialises its output layer: random logits are 0
            assert not np.array_equal(feats[name][0], feats[name][1]), f"{name}: two clips give the same features"


@pytest.mark.parametrize(("model", "family", "size", "frames", "first", "twice"), [
    ("resnet18", "cnn", 32, 4, 64 * 8 * 8, True),  # channels x height x width
    ("vit_b_16", "transformer", 32, 3, (1 + 2 * 2) * 768, False),  # built for 32 px: class + 4 patch tokens x dim
    ("r3d_18", "video", 32, 4, 64 * 4 * 16 * 16, True),  # channels x time x height x width
    ("swin3d_t", "video", 32, 4, 2 * 8 * 8 * 96, False),  # time / 2 x height x width x channels
    pytest.param("timm:resnet18", "timm", 32, 3, 64 * 8 * 8, False, marks=needs_timm),
    pytest.param("timm:vit_xsmall_patch16_clip_224", "clip", 32, 3, (1 + 2 * 2) * 256, False, marks=needs_timm),
])
def test_every_family_extracts_tiny_clips(make_noise_videos, model, family, size, frames, first, twice):
    paths = make_noise_videos([6, 9], sizes=[(48, 64), (48, 64)])
    f = FeatureConfig(model=model, image_size=size, frame_count=frames, batch_size=8, seed=3)
    feats, info, extractor = extract(f, paths)
    assert set(info) == INFO_KEYS
    assert info["family"] == family and info["random_init"] and info["seed"] == 3
    assert len(extractor.layers) == 9  # eight blocks and the output
    layers = list(extractor.layers)
    assert extractor.dims[layers[0]] == first  # every axis kept: tokens (class token too), time
    assert extractor.spatial[layers[0]] and not extractor.spatial[layers[-1]]
    check_features(feats, extractor, 2)
    if twice:  # the same seed builds the same network: the same features to the bit
        again, _, _ = extract(f, paths)
        for name in feats:
            np.testing.assert_array_equal(feats[name], again[name])


def test_a_users_own_network_is_seeded_and_fed_imagenet_frames(make_noise_videos, tiny_net):
    paths = make_noise_videos([5, 7])
    f = FeatureConfig(model=tiny_net, image_size=32, frame_count=4, batch_size=8, seed=1)
    feats, info, extractor = extract(f, paths)
    assert info["family"] == "custom" and set(info) == INFO_KEYS
    check_features(feats, extractor, 2)
    same, _, _ = extract(f, paths)
    other, _, _ = extract(FeatureConfig(model=tiny_net, image_size=32, frame_count=4, batch_size=8, seed=2), paths)
    last = list(feats)[-1]
    np.testing.assert_array_equal(feats[last], same[last])
    assert not np.allclose(feats[last], other[last])


@pytest.mark.slow
def test_hybrid_maxvit_extracts_one_video_at_its_smallest_size(make_noise_videos):
    (path,) = make_noise_videos([3])
    f = FeatureConfig(model="maxvit_t", image_size=224, frame_count=1, batch_size=8)
    feats, info, extractor = extract(f, [path])
    assert info["family"] == "hybrid" and info["build_kwargs"] == {"input_size": (224, 224)}
    check_features(feats, extractor, 1)
    assert extractor.dims[list(extractor.layers)[-1]] == 1000


# -- what each input kind means ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def r3d():
    f = FeatureConfig(model="r3d_18", image_size=32, frame_count=4, layers=("layer1.0.relu", "fc"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        extractor, _ = build_extractor(f, device="cpu")
    return extractor


def test_a_video_models_features_are_its_one_clip_with_the_time_axis_kept(r3d, make_noise_videos):
    paths = make_noise_videos([6, 9, 5])
    feats = extract_video_features(paths, r3d, sampling="count", count=4, stride=4, batch_size=4)
    assert r3d.dims == {"layer1.0.relu": 64 * 4 * 16 * 16, "fc": 400}  # channels x time x height x width
    assert r3d.spatial == {"layer1.0.relu": True, "fc": False}
    for i, path in enumerate(paths):
        clip = r3d.prepare(read_video_frames(path, sampling="count", count=4, stride=4))
        assert clip.shape == (1, 4, 64, 64, 3)
        manual = r3d(clip)
        for name in feats:
            np.testing.assert_array_equal(feats[name][i], manual[name][0].numpy())


def test_video_batches_hold_batch_size_frames_worth_of_clips(r3d, make_noise_videos):
    paths = make_noise_videos([6, 9, 5])
    one = extract_video_features(paths, r3d, sampling="count", count=4, stride=4, batch_size=5)  # 1 clip a forward
    three = extract_video_features(paths, r3d, sampling="count", count=4, stride=4, batch_size=12)  # 3 clips
    for name in one:
        np.testing.assert_allclose(one[name], three[name], rtol=1e-5, atol=1e-5)


def test_a_video_model_refuses_other_samplings(r3d, make_noise_videos):
    paths = make_noise_videos([6])
    with pytest.raises(ValueError, match=r"a video model takes clips of 4 frames, sampling 'count'"):
        extract_video_features(paths, r3d, sampling="stride", count=4, stride=2, batch_size=8)
    with pytest.raises(ValueError, match=r"count = 8: a video model takes clips of 4 frames"):
        extract_video_features(paths, r3d, sampling="count", count=8, stride=2, batch_size=8)
