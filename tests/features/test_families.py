"""Model families: names, normalisation, sizes, and the refusals before any work (no extraction here)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from lwroi.cli import main
from lwroi.config import FeatureConfig
from lwroi.exceptions import ConfigError, RandomWeightsWarning
from lwroi.features import model_family, model_problems, model_spec
from lwroi.features.families import IMAGENET_MEAN, input_problems
from lwroi.features.weights import load_model
from tests.conftest import run_lwroi
from tests.features.conftest import saved_random_weights

needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                                reason="timm is not installed (pip install -e '.[test]' brings it)")
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@pytest.mark.parametrize(("model", "family"), [
    ("alexnet", "cnn"), ("vgg16", "cnn"), ("resnet50", "cnn"), ("densenet121", "cnn"), ("googlenet", "cnn"),
    ("efficientnet_b0", "cnn"), ("regnet_y_400mf", "cnn"), ("convnext_tiny", "cnn"),
    ("vit_b_16", "transformer"), ("swin_t", "transformer"), ("swin_v2_t", "transformer"), ("maxvit_t", "hybrid"),
    ("r3d_18", "video"), ("mc3_18", "video"), ("r2plus1d_18", "video"), ("s3d", "video"), ("mvit_v1_b", "video"),
    ("mvit_v2_s", "video"), ("swin3d_t", "video"), ("swin3d_b", "video"),
    ("timm:vit_base_patch16_clip_224.openai", "clip"), ("timm:resnet50_clip.openai", "clip"),
    ("timm:resnet18", "timm"), ("my_lab.nets:build", "custom"),
])
def test_model_family_table(model, family):
    assert model_family(model) == family


def test_video_models_take_clips_normalised_as_their_kinetics_weights():
    spec = model_spec("r3d_18", image_size=32, frame_count=4)
    assert spec.family == "video"
    assert spec.feed.clip_frames == 4
    assert spec.feed.mean == pytest.approx(KINETICS_MEAN)
    assert spec.feed.std == pytest.approx(KINETICS_STD)
    assert model_spec("swin3d_t").feed.mean == pytest.approx(IMAGENET_MEAN)  # torchvision's metadata says so
    assert model_spec("resnet18").feed.clip_frames == 0


def test_size_dependent_networks_are_built_for_the_image_size():
    assert model_spec("vit_b_16", image_size=32).kwargs == {"image_size": 32}
    assert model_spec("maxvit_t", image_size=448).kwargs == {"input_size": (448, 448)}
    assert model_spec("googlenet").kwargs == {"aux_logits": False, "init_weights": True, "transform_input": True}
    assert model_spec("resnet18").kwargs == {}


@pytest.mark.parametrize(("model", "match"), [
    ("resnet17", r"'resnet17' is not a torchvision classification model \(did you mean resnet18"),
    ("r3d_81", r"did you mean r3d_18"),
    ("no_such_module_xyz:build", r"'no_such_module_xyz:build': cannot import no_such_module_xyz"),
    ("lwroi.features.families:nothing", r"lwroi.features.families has no callable 'nothing'"),
    ("lwroi:a:b", r"is named 'package.module:factory'"),
])
def test_unknown_models_are_config_errors_naming_them(model, match):
    with pytest.raises(ConfigError, match=match):
        model_spec(model)


@needs_timm
def test_unknown_timm_model_suggests_close_names():
    with pytest.raises(ConfigError, match=r"'timm:resnet_18'.*did you mean timm:resnet18"):
        model_spec("timm:resnet_18")


def test_timm_models_without_timm_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ConfigError, match=r"'timm:resnet18' needs the timm package.*pip install 'lwroi\[timm\]'"):
        model_spec("timm:resnet18")


@needs_timm
def test_timm_clip_towers_take_their_normalisation_and_image_size():
    spec = model_spec("timm:vit_base_patch16_clip_224.openai", image_size=32)
    assert spec.family == "clip"
    assert spec.feed.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert spec.kwargs == {"img_size": 32}
    assert spec.square
    assert model_spec("timm:resnet18").kwargs == {}


@pytest.mark.parametrize(("model", "sizes", "expected"), [
    ("r3d_18", {"sampling": "stride"}, "features.frame_sampling = 'stride': r3d_18 is a video model"),
    ("mvit_v2_s", {"image_size": 112}, "features.frame_count = 16, features.image_size = 112: mvit_v2_s takes "
                                       "only clips of 16 frames of 224x224 pixels"),
    ("mvit_v1_b", {"frame_count": 8, "image_size": 224}, "mvit_v1_b takes only clips of 16 frames"),
    ("s3d", {"frame_count": 4, "image_size": 64}, "s3d needs clips of at least 14 frames of 224x224 pixels"),
    ("vit_b_16", {"resize": "shorter"}, "features.resize = 'shorter': vit_b_16 takes only 224x224 frames"),
])
def test_input_problems_name_the_model_and_the_size_it_needs(model, sizes, expected):
    settings = {"image_size": 224, "frame_count": 16, "sampling": "count", "resize": "square", **sizes}
    spec = model_spec(model, image_size=settings["image_size"], frame_count=settings["frame_count"])
    assert any(expected in line for line in input_problems(spec, **settings))


def test_fitting_inputs_have_no_problems():
    for model, size, frames in (("mvit_v2_s", 224, 16), ("r3d_18", 32, 4), ("swin_t", 64, 1)):
        spec = model_spec(model, image_size=size, frame_count=frames)
        assert input_problems(spec, image_size=size, frame_count=frames, sampling="count", resize="square") == []


# -- model_problems: what `lwroi run` refuses before any work ----------------------------------------------------


def problems(**settings) -> list[str]:
    return model_problems(FeatureConfig(**settings))


def test_model_problems_of_an_unknown_model():
    (line,) = problems(model="resnet17")
    assert line.startswith("features.model: model 'resnet17' is not a torchvision")


def test_model_problems_of_a_video_model_sampled_by_stride():
    (line,) = problems(model="r3d_18", image_size=32, frame_count=4, frame_sampling="stride")
    assert line.startswith("features.frame_sampling = 'stride': r3d_18 is a video model")


def test_model_problems_of_a_layer_outside_a_video_models_graph():
    (line,) = problems(model="r3d_18", image_size=32, frame_count=4, layers=("layer9",))
    assert line.startswith("features.layers: layer 'layer9': 'layer9' is not a node of r3d_18's graph")
    assert "lwroi layers r3d_18 --all" in line


def test_model_problems_of_a_size_the_network_cannot_be_built_for():
    (line,) = problems(model="maxvit_t", image_size=64)
    assert line.startswith("features.model: maxvit_t cannot be built with input_size=(64, 64) (ValueError: ")


def test_model_problems_of_a_clip_below_the_models_minimum():
    (line,) = problems(model="s3d", image_size=64, frame_count=4)
    assert line.startswith("features.frame_count = 4, features.image_size = 64: s3d needs clips of at least 14")


def test_model_problems_of_weights_files(tmp_path):
    path, good = saved_random_weights(tmp_path)
    assert problems(model="resnet18", image_size=32, weights=str(path), weights_sha256=good) == []
    (absent,) = problems(model="resnet18", image_size=32, weights=str(tmp_path / "absent.pt"))
    assert absent.startswith("features.weights: ") and "absent.pt: weights file not found for resnet18" in absent
    (wrong,) = problems(model="resnet18", image_size=32, weights=str(path), weights_sha256="0" * 64)
    assert wrong.startswith("features.weights: ") and f"sha256 is {good}, expected {'0' * 64}" in wrong
    (misfit,) = problems(model="resnet34", image_size=32, weights=str(path))
    assert misfit.startswith("features.weights: ") and "state dict does not fit resnet34: " in misfit


@needs_timm
def test_a_state_dict_of_another_image_size_names_the_size_the_network_was_built_for(tmp_path):
    model = "timm:vit_xsmall_patch16_clip_224"
    with pytest.warns(RandomWeightsWarning):
        source, _ = load_model(model, weights="random", seed=0, image_size=224)
    path = tmp_path / "clip.pt"
    torch.save(source.state_dict(), path)
    with pytest.raises(ConfigError, match=r"(?s)state dict does not fit timm:vit_xsmall_patch16_clip_224 \(built "
                                          r"with img_size=32\): .*size mismatch for pos_embed"):
        load_model(model, weights=str(path), seed=0, image_size=32)


# -- lwroi layers ---------------------------------------------------------------------------------------------------


def test_layers_verb_lists_family_input_and_default_layers(tmp_path):
    out = run_lwroi("layers", "resnet18", "--image-size", "64", cwd=tmp_path).stdout
    assert "family: cnn" in out
    assert "input:  image: each sampled frame of 64x64" in out
    assert "default layers (9)" in out
    assert "  maxpool " in out and "  fc " in out


def test_layers_verb_lists_every_node_and_a_clip_input(capsys):
    assert main(["layers", "r3d_18", "--image-size", "32", "--frames", "4", "--all"]) == 0
    out = capsys.readouterr().out
    assert "family: video" in out
    assert "input:  clip: 4 evenly spaced frames of 32x32 per video" in out
    assert "normalisation: mean (0.4322, 0.3947, 0.3765)" in out
    assert "  layer1.0.relu  " in out and "spatial" in out
    assert "graph nodes (" in out and "  stem.0\n" in out


def test_layers_verb_refuses_an_unknown_model_with_close_names(capsys):
    assert main(["layers", "resnet17"]) == 2
    assert "lwroi layers: error: model 'resnet17' is not a torchvision classification model (did you mean resnet18" \
        in capsys.readouterr().err


def test_layers_verb_refuses_a_size_the_model_cannot_take(capsys):
    assert main(["layers", "mvit_v2_s", "--image-size", "112"]) == 2
    assert "mvit_v2_s takes only clips of 16 frames of 224x224 pixels" in capsys.readouterr().err
