"""A zoo of models in one config: entries, names, one-model views and per-model fingerprints."""

from __future__ import annotations

import pytest

from lwroi.config import config_from_dict, load_config
from lwroi.exceptions import ConfigError
from lwroi.orchestration.plan import build_plan, shard_units

ZOO = {"features": {"image_size": 64, "models": [
    "alexnet", {"name": "r18", "model": "resnet18", "layers": ["layer1", "layer4"]},
    {"model": "r3d_18", "frame_count": 8, "image_size": 32}]}}


def test_entries_inherit_the_features_section_and_set_their_own():
    cfg = config_from_dict(ZOO)
    assert cfg.model_names == ("alexnet", "r18", "r3d_18")
    assert cfg.for_model("alexnet").features.image_size == 64
    r3d = cfg.for_model("r3d_18").features
    assert (r3d.model, r3d.frame_count, r3d.image_size, r3d.models) == ("r3d_18", 8, 32, ())
    assert cfg.for_model("r18").features.layers == ("layer1", "layer4")
    assert config_from_dict(cfg.to_dict()) == cfg  # what config.yaml in a run holds reads back the same


def test_a_one_model_config_is_its_own_model_with_the_fingerprint_of_before():
    cfg = config_from_dict({})
    assert cfg.model_names == ("alexnet",) and cfg.for_model("alexnet") is cfg
    assert cfg.model_fingerprints() == {"alexnet": cfg.fingerprint()} == {"alexnet": "8c2107a997675535"}
    assert config_from_dict({"features": {"model": "timm:vit_small_patch16_224"}}).model_names == (
        "timm-vit_small_patch16_224",)


def test_adding_a_model_keeps_the_others_fingerprints_and_changing_one_changes_only_its_own():
    before = config_from_dict(ZOO).model_fingerprints()
    grown = {"features": {**ZOO["features"], "models": [*ZOO["features"]["models"], "vgg16"]}}
    after = config_from_dict(grown).model_fingerprints()
    assert {k: after[k] for k in before} == before and "vgg16" in after
    changed = {"features": {**ZOO["features"], "models": ["alexnet", {"name": "r18", "model": "resnet18"},
                                                          ZOO["features"]["models"][2]]}}
    moved = config_from_dict(changed).model_fingerprints()
    assert moved["r18"] != before["r18"] and moved["alexnet"] == before["alexnet"]
    shared = config_from_dict({**ZOO, "features": {**ZOO["features"], "srp_eps": 0.3}}).model_fingerprints()
    assert all(shared[k] != before[k] for k in before)  # a shared setting is every model's


@pytest.mark.parametrize(("models", "message"), [
    ([{"model": "resnet18", "lr": 1}], "unknown key 'features.models[0].lr'"),
    ([{"name": "x"}], "features.models[0]: every model entry needs 'model'"),
    (["resnet18", "resnet18"], "features.models[1].name = 'resnet18': two models share the name"),
    ([{"name": "a/b", "model": "resnet18"}], "features.models[0].name = 'a/b'"),
    ([{"model": "resnet18", "image_size": 8}], "features.models[0].image_size = 8: must be >= 32"),
    ([{"model": "resnet18", "store_dir": "x"}], "unknown key 'features.models[0].store_dir'"),
    ([{"model": "resnet18", "frame_cache": False}], "unknown key 'features.models[0].frame_cache'"),
    ("resnet18", "expected a list of models"),
])
def test_bad_entries_are_refused_naming_the_entry(models, message):
    with pytest.raises(ConfigError, match=None) as err:
        config_from_dict({"features": {"models": models}}, source="zoo.yaml")
    assert message in str(err.value) and str(err.value).startswith("zoo.yaml: ")


def test_units_are_keyed_by_model_and_shards_keep_a_models_roi_together():
    cfg = config_from_dict({**ZOO, "data": {"subjects": ["sub01", "sub02"], "rois": ["V1", "FFA"]},
                            "run": {"extract_shards": 2}})
    units = build_plan(cfg, lambda subject, roi: 1.0)
    keys = {u.key for u in units}
    assert {"extract/r18/shard=001", "features/r3d_18", "tune/alexnet/sub01/V1", "select/r18/FFA",
            "fit/r3d_18/sub02/V1"} <= keys
    assert all(u.model == u.key.split("/")[1] for u in units)
    fit = next(u for u in units if u.key == "fit/r18/sub01/V1")
    assert fit.deps == ("select/r18/V1",)
    owners = {}
    for index in range(3):
        for unit in shard_units(units, index, 3):
            owners.setdefault(unit.group, set()).add(index)
    assert all(len(shards) == 1 for shards in owners.values())
    assert owners["features"] == {0}


def test_the_shipped_zoos_cover_the_families_they_promise():
    from lwroi.features import model_family
    from tests.conftest import REPO

    demo = load_config(REPO / "configs" / "zoo-demo.yaml")
    families = [model_family(demo.for_model(m).features.model) for m in demo.model_names]
    assert len(families) >= 5 and len(set(families)) >= 3 and {"video", "transformer"} <= set(families)
    assert all(demo.for_model(m).features.weights == "random" for m in demo.model_names)
    paper = load_config(REPO / "configs" / "paper-zoo.yaml")
    families = {model_family(paper.for_model(m).features.model) for m in paper.model_names}
    assert len(paper.model_names) >= 20 and families == {"cnn", "transformer", "hybrid", "clip", "video"}
    assert all(paper.for_model(m).features.weights.startswith("weights/") for m in paper.model_names)
