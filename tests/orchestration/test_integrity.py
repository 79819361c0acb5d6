"""Every stored byte verified: a garbled or half-deleted feature store is rebuilt, never trusted or stuck;
runs sharing a store build each part once; summaries need only fit records; a shard that waits for
another's features says so."""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from lwroi.config import config_from_dict
from lwroi.data import write_video
from lwroi.data.synthetic import make_video_frames
from lwroi.orchestration.driver import _hint_features
from lwroi.orchestration.lock import building_lock
from lwroi.orchestration.plan import build_plan, shard_units
from lwroi.orchestration.results import ResultStore
from lwroi.outputs.summary import reduce_run
from tests.conftest import interrupt_when, journal_events, lwroi_command, run_lwroi

N_VIDEOS = 8
CONFIG = {
    "data": {"root": "data", "subjects": ["sub01"], "rois": ["V1"], "n_train_videos": 6, "n_test": 2,
             "n_videos": N_VIDEOS},
    "features": {"model": "alexnet", "weights": "random", "layers": ["conv1=features.1", "fc8=classifier.6"],
                 "frame_count": 2, "image_size": 64, "batch_size": 8, "reduction": "none", "store_dir": "store"},
    "run": {"output_dir": "run", "extract_shards": 2, "device": "cpu"},
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Eight tiny real clips and a finished ``lwroi extract`` of them."""
    root = tmp_path_factory.mktemp("integrity")
    rng = np.random.default_rng(0)
    for i in range(1, N_VIDEOS + 1):
        write_video(root / "data" / "AlgonautsVideos268_All_30fpsmax" / f"{i:04d}_clip.mp4",
                    make_video_frames(rng, 4, size=64), fps=10)
    (root / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    extract(root)
    return root


def extract(root: Path) -> None:
    run_lwroi("extract", "config.yaml", "--mpi", "none", cwd=root)


def finished(root: Path) -> Counter:
    return Counter(e["key"] for e in journal_events(root / "run") if e["event"] == "done")


def store_folder(root: Path) -> Path:
    (folder,) = (root / "store").glob("alexnet-*/none-*")
    return folder


@pytest.mark.slow
def test_a_deleted_meta_json_gets_the_store_rebuilt_by_the_next_run(workspace):
    before = finished(workspace)
    (store_folder(workspace) / "meta.json").unlink()
    extract(workspace)
    assert finished(workspace) - before == Counter({"features/alexnet": 1})
    assert (store_folder(workspace) / "meta.json").exists()


@pytest.mark.slow
def test_a_garbled_store_array_gets_the_store_rebuilt_from_the_raw_shards(workspace):
    array = store_folder(workspace) / "fc8__train.npy"
    good = array.read_bytes()
    array.write_bytes(good[:-4] + bytes(b ^ 0xFF for b in good[-4:]))
    before = finished(workspace)
    extract(workspace)
    assert finished(workspace) - before == Counter({"features/alexnet": 1})
    assert array.read_bytes() == good


@pytest.mark.slow
def test_a_garbled_raw_shard_is_extracted_again_when_the_store_needs_it(workspace):
    shard = next((workspace / "store").glob("alexnet-*/raw/shard-001"))
    raw = shard / "conv1.npy"
    good = raw.read_bytes()
    raw.write_bytes(good[:-4] + b"\0\0\0\0")
    (store_folder(workspace) / "meta.json").unlink()
    extract(workspace)
    assert raw.read_bytes() == good
    assert (store_folder(workspace) / "meta.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("product", ["raw shard", "store"])
def test_a_run_waits_for_another_building_the_same_features_and_keeps_what_it_built(workspace, tmp_path, product):
    """Two runs on one feature store: the second waits for the part the first is building, then reuses it.

    Without the wait both built it, and the later writer replaced files the earlier run had
    verified: its next unit failed ("raw shard file changed since it was verified"). Here the
    test is the first run: it holds the part's lock, and copies the finished part (from the
    module's own extraction of the same clips and settings) into place before letting go.
    """
    finished_store = store_folder(workspace)
    built = finished_store.parent / "raw" / "shard-000" if product == "raw shard" else finished_store
    target = tmp_path / built.relative_to(workspace)
    (tmp_path / "data").symlink_to(workspace / "data")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    lock = building_lock(target)
    lock.parent.mkdir(parents=True)
    kept = {}

    def waiting() -> bool:
        return any("waiting for another launch" in log.read_text() for log in tmp_path.glob("interrupted-*.log"))

    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)

        def finish_building(_job) -> None:
            shutil.copytree(built, target)
            kept.update({f.name: f.stat().st_ino for f in target.iterdir()})
            fcntl.flock(held, fcntl.LOCK_UN)

        code, log = interrupt_when(lwroi_command("extract", "config.yaml", "--mpi", "none"), tmp_path, waiting,
                                   finish_building, what=f"the run to wait for the {product}")
    assert code == 0, log
    assert f"waiting for another launch building {target.relative_to(tmp_path)}" in log
    assert {f.name: f.stat().st_ino for f in target.iterdir()} == kept  # reused as written, not rebuilt
    if product == "raw shard":
        record = json.loads((tmp_path / "run" / "units" / "extract" / "alexnet" / "shard=000.json").read_text())
        assert record["payload"]["clips_decoded"] == 0


def fit_payload(subject: str, roi: str) -> dict:
    return {"subject": subject, "roi": roi, "pcc": 0.5, "n_voxels": 3, "n_valid_voxels": 3, "noise_ceiling": 0.9,
            "pcc_normalized": 0.6, "n_reliable_voxels": 3, "wc": 1.0, "lay": 1.0, "solver": "sgd", "best_epoch": 1,
            "n_epochs": 2, "random_weights": True, "layers": ["conv1"], "layer_weights": [1.0],
            "contributions": [1.0]}


def test_a_corrupt_or_missing_tune_record_does_not_hold_back_the_summary(tmp_path):
    cfg = config_from_dict({"data": {"subjects": ["sub01", "sub02"], "rois": ["V1"]}})
    units = build_plan(cfg, lambda subject, roi: 1.0)
    store = ResultStore(tmp_path, cfg.fingerprint())
    for unit in units:
        store.write_ok(unit.key, fit_payload(unit.subject, unit.roi) if unit.phase == "fit" else {})
    store.record_path("tune/alexnet/sub01/V1").write_text("{garbled")
    store.record_path("select/alexnet/V1").unlink()
    reduction = reduce_run(store, units)
    assert reduction.complete
    assert sorted(reduction.results["subject"]) == ["sub01", "sub02"]


def test_a_shard_that_waits_for_anothers_features_says_how_to_compute_them(tmp_path, caplog):
    cfg = config_from_dict({"data": {"rois": ["V1", "V2", "V3"]}}, source="my.yaml")
    units = build_plan(cfg, lambda subject, roi: 1.0)
    store = ResultStore(tmp_path, cfg.fingerprint())
    with caplog.at_level(logging.WARNING, logger="lwroi"):
        _hint_features(cfg, shard_units(units, 1, 2), (1, 2), store)
        _hint_features(cfg, shard_units(units, 0, 2), (0, 2), store)  # shard 0 computes the features itself
    (record,) = caplog.records
    assert "shard 1/2 waits for features/alexnet, which shard 0/2 computes: run `lwroi extract my.yaml`" in (
        record.getMessage())
    caplog.clear()
    store.write_ok("features/alexnet", {})
    with caplog.at_level(logging.WARNING, logger="lwroi"):
        _hint_features(cfg, shard_units(units, 1, 2), (1, 2), store)
    assert not caplog.records
