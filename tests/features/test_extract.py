from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.models.feature_extraction import create_feature_extractor

from lwroi.exceptions import ConfigError, DataLayoutError, RandomWeightsWarning
from lwroi.features.extract import IMAGENET_MEAN, IMAGENET_STD, LayerFeatureExtractor, extract_video_features
from lwroi.features.layers import ALEXNET_LAYERS, resolve_layers
from lwroi.features.video import read_video_frames
from lwroi.features.weights import load_model
from tests.features.conftest import saved_random_weights

SAMPLING = {"sampling": "count", "count": 5, "stride": 4}
ALEXNET_DIMS_64 = {
    "conv1": 64 * 7 * 7,
    "conv2": 192 * 3 * 3,
    "conv3": 384 * 3 * 3,
    "conv4": 256 * 3 * 3,
    "conv5": 256 * 1 * 1,
    "fc6": 4096,
    "fc7": 4096,
    "fc8": 1000,
}


@pytest.fixture(scope="module")
def alexnet():
    with pytest.warns(RandomWeightsWarning):
        model, _ = load_model("alexnet", weights="random", seed=0)
    return model


@pytest.fixture(scope="module")
def extractor(alexnet):
    return LayerFeatureExtractor(alexnet, ALEXNET_LAYERS, image_size=64, device="cpu")


@pytest.fixture(scope="module")
def shorter(alexnet):
    return LayerFeatureExtractor(alexnet, ALEXNET_LAYERS, image_size=64, device="cpu", resize="shorter")


def test_random_weights_are_seeded_and_flagged():
    with pytest.warns(RandomWeightsWarning, match=r"randomly initialised"):
        a, info = load_model("resnet18", weights="random", seed=3)
        b, _ = load_model("resnet18", weights="random", seed=3)
        c, _ = load_model("resnet18", weights="random", seed=4)
    assert info == {"model": "resnet18", "family": "cnn", "weights": "random", "sha256": "", "random_init": True,
                    "seed": 3, "build_kwargs": {}}
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert not a.training


def test_random_weights_leave_the_global_torch_rng_alone():
    before = torch.random.get_rng_state()
    with pytest.warns(RandomWeightsWarning):
        load_model("resnet18", weights="random", seed=0)
    assert torch.equal(before, torch.random.get_rng_state())


def test_unknown_model_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"'resnet17'.*did you mean.*list_models"):
        load_model("resnet17", weights="random", seed=0)


def test_weights_file_loads_and_records_its_checksum(tmp_path):
    path, digest = saved_random_weights(tmp_path)
    model, info = load_model("resnet18", weights=str(path), seed=0, weights_sha256=digest)
    assert info == {"model": "resnet18", "family": "cnn", "weights": str(path), "sha256": digest,
                    "random_init": False, "seed": 0, "build_kwargs": {}}
    assert torch.equal(model.fc.weight, torch.load(path, weights_only=True)["fc.weight"])


def test_weights_file_with_wrong_checksum_is_refused(tmp_path):
    with pytest.warns(RandomWeightsWarning):
        source, _ = load_model("resnet18", weights="random", seed=5)
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    with pytest.raises(ConfigError, match=r"resnet18.pt: sha256 is [0-9a-f]{64}, expected 0{64}"):
        load_model("resnet18", weights=str(path), seed=0, weights_sha256="0" * 64)


def test_weights_file_of_another_model_names_the_keys(tmp_path):
    with pytest.warns(RandomWeightsWarning):
        source, _ = load_model("resnet18", weights="random", seed=5)
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    with pytest.raises(ConfigError, match=r"does not fit alexnet: \d+ missing keys \['classifier"):
        load_model("alexnet", weights=str(path), seed=0)


def test_missing_weights_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.pt: weights file not found"):
        load_model("alexnet", weights=str(tmp_path / "nowhere.pt"), seed=0)


def test_alexnet_default_layers_are_the_papers(alexnet):
    assert resolve_layers("alexnet", alexnet, ()) == ALEXNET_LAYERS


def test_generic_default_rule_picks_the_papers_alexnet_nodes(alexnet):
    assert list(resolve_layers("alexnet_like", alexnet, ()).values()) == list(ALEXNET_LAYERS.values())


def test_default_layers_of_another_model_end_with_its_output():
    with pytest.warns(RandomWeightsWarning):
        model, _ = load_model("resnet18", weights="random", seed=0)
    layers = resolve_layers("resnet18", model, ())
    assert len(layers) == 9
    assert next(iter(layers)) == "maxpool"
    assert list(layers)[-1] == "fc"


def test_layer_entries_accept_nodes_aliases_and_paper_names(alexnet):
    layers = resolve_layers("alexnet", alexnet, ("features.5", "pool5=features.12", "fc7"))
    assert layers == {"features.5": "features.5", "pool5": "features.12", "fc7": "classifier.5"}


def test_unknown_layer_lists_valid_nodes(alexnet):
    with pytest.raises(
        ConfigError, match=r"'features.99' is not a node of alexnet's graph; valid nodes include: featu"
    ):
        resolve_layers("alexnet", alexnet, ("features.99",))


def test_alexnet_layer_dims_at_64_pixels(extractor):
    assert extractor.dims == ALEXNET_DIMS_64
    assert extractor.spatial == {name: name.startswith("conv") for name in ALEXNET_LAYERS}


def test_alexnet_conv1_has_the_papers_size_at_224_pixels(alexnet):
    ex = LayerFeatureExtractor(alexnet, {"conv1": "features.2"}, image_size=224, device="cpu")
    assert ex.dims == {"conv1": 64 * 27 * 27}


def test_extractor_returns_flat_float32_features(extractor, rng):
    frames = rng.integers(0, 256, size=(3, 48, 80, 3), dtype=np.uint8)
    feats = extractor(frames)
    assert list(feats) == list(ALEXNET_LAYERS)
    for name, f in feats.items():
        assert f.dtype == torch.float32
        assert f.shape == (3, ALEXNET_DIMS_64[name])


def test_extractor_rejects_float_frames(extractor):
    with pytest.raises(ValueError, match=r"expected uint8 of shape \(n, height, width, 3\)"):
        extractor(np.zeros((2, 64, 64, 3), dtype=np.float32))


def test_video_features_are_the_mean_over_sampled_frames(extractor, make_noise_videos):
    paths = make_noise_videos([12, 7])
    feats = extract_video_features(paths, extractor, batch_size=4, **SAMPLING)
    for i, path in enumerate(paths):
        manual = extractor(read_video_frames(path, **SAMPLING))
        for name in ALEXNET_LAYERS:
            np.testing.assert_allclose(feats[name][i], manual[name].mean(0).numpy(), rtol=1e-5, atol=1e-5)


def test_video_features_do_not_depend_on_batch_size(extractor, make_noise_videos):
    paths = make_noise_videos([9, 4, 6, 11])
    stride = {"sampling": "stride", "count": 0, "stride": 2}
    one = extract_video_features(paths, extractor, batch_size=1, **stride)
    seven = extract_video_features(paths, extractor, batch_size=7, **stride)
    for name in ALEXNET_LAYERS:
        assert one[name].shape == (4, ALEXNET_DIMS_64[name])
        assert one[name].dtype == np.float32
        np.testing.assert_allclose(one[name], seven[name], rtol=1e-5, atol=1e-5)


def test_video_features_do_not_depend_on_prefetch(extractor, make_noise_videos):
    paths = make_noise_videos([5, 8, 6])
    runs = [extract_video_features(paths, extractor, batch_size=4, prefetch=p, **SAMPLING) for p in (0, 1, 3)]
    for name in ALEXNET_LAYERS:
        np.testing.assert_array_equal(runs[0][name], runs[1][name])
        np.testing.assert_array_equal(runs[0][name], runs[2][name])


def test_extraction_reports_progress_per_video(extractor, make_noise_videos):
    paths = make_noise_videos([3, 3, 3])
    calls = []
    extract_video_features(paths, extractor, batch_size=4, progress=lambda d, n: calls.append((d, n)), **SAMPLING)
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_extraction_stops_on_an_unreadable_video(extractor, make_noise_videos, tmp_path):
    paths = make_noise_videos([3, 3])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataLayoutError, match=r"bad.mp4"):
        extract_video_features([paths[0], bad, paths[1]], extractor, batch_size=4, **SAMPLING)


def _mean_per_clip(extractor, paths, sampling):
    return [{k: v.mean(0).numpy() for k, v in extractor(read_video_frames(p, **sampling)).items()} for p in paths]


@pytest.mark.parametrize(("height", "width", "resized"), [(48, 80, (64, 106)), (90, 60, (96, 64)), (50, 50, (64, 64))])
def test_shorter_resize_is_pil_bilinear_of_the_shorter_side(shorter, rng, height, width, resized):
    frames = rng.integers(0, 256, size=(3, height, width, 3), dtype=np.uint8)
    prepared = shorter.prepare(frames)
    # reference: PIL alone; long side int(64 * long / short), as torchvision's Resize(64) computes it
    pil = [Image.fromarray(f).resize(resized[::-1], Image.Resampling.BILINEAR) for f in frames]
    expected = np.stack([np.asarray(image) for image in pil])
    assert prepared.dtype == np.uint8
    np.testing.assert_array_equal(prepared, expected)


def test_shorter_prepare_is_idempotent(shorter, rng):
    frames = rng.integers(0, 256, size=(2, 48, 80, 3), dtype=np.uint8)
    once = shorter.prepare(frames)
    np.testing.assert_array_equal(shorter.prepare(once), once)


def test_square_prepare_leaves_frames_to_the_forward(extractor, rng):
    frames = rng.integers(0, 256, size=(2, 48, 80, 3), dtype=np.uint8)
    assert extractor.prepare(frames) is frames


def test_shorter_features_are_the_network_on_torchvision_transformed_frames(alexnet, shorter, rng):
    frames = rng.integers(0, 256, size=(2, 48, 80, 3), dtype=np.uint8)
    transform = transforms.Compose(
        [
            transforms.ToPILImage(),
            transforms.Resize(64),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    graph = create_feature_extractor(alexnet.eval(), return_nodes={"features.2": "conv1", "classifier.5": "fc7"})
    with torch.inference_mode():
        expected = graph(torch.stack([transform(f) for f in frames]))
    feats = shorter(frames)
    assert feats["conv1"].shape == (2, 64 * 7 * 12)  # 64x106 input: conv1 15x25, max-pool 7x12
    for name in ("conv1", "fc7"):
        np.testing.assert_allclose(feats[name].numpy(), expected[name].flatten(1).numpy(), rtol=1e-5, atol=1e-5)


def test_square_extraction_batches_clips_of_different_sizes(extractor, make_noise_videos):
    paths = make_noise_videos([5, 6, 4], sizes=[(64, 64), (48, 80), (64, 64)])
    feats = extract_video_features(paths, extractor, batch_size=16, **SAMPLING)
    for i, manual in enumerate(_mean_per_clip(extractor, paths, SAMPLING)):
        for name in ALEXNET_LAYERS:
            np.testing.assert_allclose(feats[name][i], manual[name], rtol=1e-5, atol=1e-5)


def test_shorter_extraction_keeps_the_aspect_of_the_clips(shorter, make_noise_videos):
    paths = make_noise_videos([6, 5], sizes=[(48, 80), (48, 80)])
    feats = extract_video_features(paths, shorter, batch_size=4, **SAMPLING)
    assert feats["conv1"].shape == (2, 64 * 7 * 12)
    for i, manual in enumerate(_mean_per_clip(shorter, paths, SAMPLING)):
        for name in ALEXNET_LAYERS:
            np.testing.assert_allclose(feats[name][i], manual[name], rtol=1e-5, atol=1e-5)


def test_shorter_extraction_refuses_clips_of_another_aspect(shorter, make_noise_videos):
    paths = make_noise_videos([4, 4], sizes=[(64, 64), (48, 80)])
    with pytest.raises(
        DataLayoutError,
        match=r"clip001.mp4: frames of 64x106 pixels give layer 'conv1' 5376 .*"
        r"clip000.mp4's 64x64 gave 3136; with resize: shorter",
    ):
        extract_video_features(paths, shorter, batch_size=16, **SAMPLING)
