"""The run directory's identity: config and data fingerprints, refusals that list what changed, cleanup at launch."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import time
from dataclasses import replace

import numpy as np
import pytest

from lwroi.cli import main
from lwroi.config import config_from_dict
from lwroi.exceptions import ConfigMismatchError
from lwroi.orchestration.journal import Journal
from lwroi.orchestration.plan import build_plan
from lwroi.orchestration.results import ResultStore
from lwroi.orchestration.rundir import RUN_FILE, prepare_run_dir, recorded_videos
from lwroi.orchestration.schedule import SelfComm, StopFlag, execute
from tests.data.test_algonauts import RESPONSES_DIR, VIDEOS_DIR, build_dataset, make_train, write_roi

N_TRAIN = 6


@pytest.fixture
def cfg(tmp_path):
    build_dataset(tmp_path / "data", ["sub01"], ["V1", "V2"])
    return config_from_dict({
        "data": {"root": str(tmp_path / "data"), "subjects": ["sub01"], "rois": ["V1"], "n_train_videos": N_TRAIN,
                 "n_test": 2, "n_videos": N_TRAIN + 2},
        "features": {"store_dir": str(tmp_path / "store")},
        "encoding": {"wc": [1.0], "lay": [1.0]},
        "run": {"output_dir": str(tmp_path / "run"), "extract_shards": 2},
    })


def with_data(cfg, **changes):
    return replace(cfg, data=replace(cfg.data, **changes))


def test_run_json_records_every_video_and_response_file(cfg):
    run = prepare_run_dir(cfg)
    data = json.loads((run / RUN_FILE).read_text())["data"]
    assert [v[0] for v in data["videos"]] == [f"{i:04d}.mp4" for i in range(1, N_TRAIN + 3)]
    assert list(data["responses"]) == ["mini_track/sub01/V1.pkl"]
    assert [v.name for v in recorded_videos(run)] == [v[0] for v in data["videos"]]


def test_a_video_replaced_in_place_is_refused_listing_it_unless_restarted(cfg):
    run = prepare_run_dir(cfg)
    (run.parent / "data" / VIDEOS_DIR / "0003.mp4").write_bytes(b"other bytes")
    with pytest.raises(ConfigMismatchError) as info:
        prepare_run_dir(cfg)
    message = str(info.value)
    assert "holds results computed from other data" in message
    assert "video 0003.mp4: content changed (size 0 -> 11" in message
    assert "--restart" in message
    prepare_run_dir(cfg, restart=True)
    assert len(list(run.parent.glob("run.old-*"))) == 1


def test_a_response_pickle_changed_in_place_is_refused_but_a_new_roi_is_not(cfg, tmp_path):
    prepare_run_dir(cfg)
    both = with_data(cfg, rois=("V1", "V2"))
    prepare_run_dir(both)  # a new ROI's responses are new data, not changed data
    recorded = json.loads((tmp_path / "run" / RUN_FILE).read_text())["data"]["responses"]
    assert sorted(recorded) == ["mini_track/sub01/V1.pkl", "mini_track/sub01/V2.pkl"]
    write_roi(tmp_path / "data" / RESPONSES_DIR, "sub01", "V2", make_train(np.random.default_rng(7)))
    prepare_run_dir(cfg)  # this config does not read V2, and its launch keeps V2's old fingerprint ...
    with pytest.raises(ConfigMismatchError, match=r"responses mini_track/sub01/V2.pkl: content changed"):
        prepare_run_dir(both)  # ... so a launch that does is refused: its V2 results came from the old file


def test_a_corrupt_run_json_is_named_with_its_problem(cfg, tmp_path):
    run = prepare_run_dir(cfg)
    (run / RUN_FILE).write_text('{"fingerprint": ')
    expected = f"{run / RUN_FILE}: cannot read the run record (JSONDecodeError: "
    with pytest.raises(ConfigMismatchError, match=re.escape(expected)):
        prepare_run_dir(cfg)
    prepare_run_dir(cfg, restart=True)
    assert json.loads((run / RUN_FILE).read_text())["fingerprint"] == cfg.fingerprint()


def test_lwroi_run_with_a_corrupt_run_json_exits_2_naming_it(cfg, tmp_path, capsys):
    run = prepare_run_dir(cfg)
    (run / RUN_FILE).write_text("[]")
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(cfg.to_dict()))
    assert main(["extract", str(config), "--mpi", "none"]) == 2
    err = capsys.readouterr().err
    assert f"{run / RUN_FILE}: not a run record (expected a JSON object with a 'fingerprint')" in err


@pytest.mark.parametrize("change", [{"features.store_dir": "elsewhere"}, {"encoding.kernel.alphas": [1.0]},
                                    {"data.n_videos": 0}, {"data.subjects": ["sub01", "sub02"]}])
def test_settings_that_cannot_change_results_are_not_refused(cfg, change):
    prepare_run_dir(cfg)
    raw = cfg.to_dict()
    for key, value in change.items():
        *sections, name = key.split(".")
        functools.reduce(dict.__getitem__, sections, raw)[name] = value
    changed = config_from_dict(raw)
    assert changed.fingerprint() == cfg.fingerprint()
    if "features.store_dir" not in change:
        prepare_run_dir(changed)


def test_a_refused_config_lists_only_settings_that_decide_results(cfg):
    prepare_run_dir(cfg)
    raw = cfg.to_dict()
    raw["encoding"]["sgd"]["lr"] = 0.5
    raw["data"]["rois"] = ["V1", "V2"]
    with pytest.raises(ConfigMismatchError) as info:
        prepare_run_dir(config_from_dict(raw))
    assert "encoding.sgd.lr: 0.0001 -> 0.5" in str(info.value)
    assert "data.rois" not in str(info.value)


def test_a_run_with_more_rois_reuses_the_units_of_the_first(cfg, tmp_path):
    """rois [V1] then [V1, V2] on one directory: V1's units are done, only V2's are computed."""

    def launch(config):
        run = prepare_run_dir(config)
        store = ResultStore(run, config.fingerprint())
        ran = []

        def run_unit(unit):
            ran.append(unit.key)
            store.write_ok(unit.key, {})

        units = build_plan(config, lambda subject, roi: 1.0)
        execute(units, run_unit, store=store, comm=SelfComm(), stop=StopFlag(), journal=Journal(run, 0, "t"))
        return ran

    first = launch(cfg)
    assert "fit/alexnet/sub01/V1" in first
    second = launch(with_data(cfg, rois=("V1", "V2")))
    assert sorted(second) == ["fit/alexnet/sub01/V2", "select/alexnet/V2", "tune/alexnet/sub01/V2"]


def exited_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_of_dead_writers_are_removed_at_launch(cfg, tmp_path):
    run = prepare_run_dir(cfg)
    old = time.time() - 3600
    dead, alive = exited_pid(), os.getpid()
    files = {
        "dead": run / "units" / "fit" / f".V1.json.tmp-{dead}",
        "dead_store": tmp_path / "store" / "x" / f".a.npy.tmp-{dead}",
        "alive": run / "units" / f".features.json.tmp-{alive}",
        "fresh": run / "units" / f".select.json.tmp-{dead}",
    }
    for name, path in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
        if name != "fresh":
            os.utime(path, (old, old))
    prepare_run_dir(cfg)
    assert {name: path.exists() for name, path in files.items()} == {
        "dead": False, "dead_store": False, "alive": True, "fresh": True}


def test_the_fingerprint_leaves_out_the_keys_of_the_solver_not_in_use():
    kernel = config_from_dict({"encoding": {"solver": "kernel"}})
    assert kernel.fingerprint() == config_from_dict(
        {"encoding": {"solver": "kernel", "sgd": {"lr": 0.5}, "wc": [3.0], "folds": 5, "val_fraction": 0.3}}
    ).fingerprint()
    assert kernel.fingerprint() != config_from_dict(
        {"encoding": {"solver": "kernel", "kernel": {"alphas": [1.0]}}}).fingerprint()
    sgd = config_from_dict({})
    assert sgd.fingerprint() == config_from_dict({"encoding": {"kernel": {"search_steps": 3}}}).fingerprint()
    assert sgd.fingerprint() != config_from_dict({"encoding": {"sgd": {"lr": 0.5}}}).fingerprint()
    assert sgd.fingerprint() != config_from_dict({"encoding": {"val_fraction": 0.3}}).fingerprint()


def test_a_missing_training_video_is_refused_before_any_work(cfg, tmp_path, capsys):
    (tmp_path / "data" / VIDEOS_DIR / "0003.mp4").unlink()
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(cfg.to_dict()))
    assert main(["extract", str(config), "--mpi", "none"]) == 2
    err = capsys.readouterr().err
    assert "missing video index 0003 (between 0002.mp4 and 0004.mp4)" in err
    assert "7 .mp4 files; data.n_videos = 8" in err
    assert not (tmp_path / "run").exists()


def test_a_run_directory_written_before_solver_sections_still_reads(cfg):
    """Its config.yaml holds flat encoding keys: status/summarize read it in today's shape, same fingerprint."""
    import yaml

    from lwroi.orchestration.rundir import CONFIG_FILE, load_run_config

    run = prepare_run_dir(cfg)
    raw = yaml.safe_load((run / CONFIG_FILE).read_text())
    sgd = raw["encoding"].pop("sgd")
    raw["encoding"].pop("kernel")
    raw["encoding"].update(sgd)  # the shape lwroi wrote before: encoding.lr, encoding.max_epochs, ...
    (run / CONFIG_FILE).write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match=re.escape("has moved to 'encoding.sgd.lr'")):
        config_from_dict(raw)  # a user's config in the old shape is refused, naming the new key
    old = load_run_config(run)
    assert old.encoding.sgd == cfg.encoding.sgd
    assert old.fingerprint() == cfg.fingerprint()
