"""What each phase runs: one function per phase of the plan; the store is built from the raw shards alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import lwroi.features
from lwroi.cli import main
from lwroi.data import make_video_frames, write_video
from lwroi.orchestration.plan import PHASES
from lwroi.orchestration.tasks import PHASE_RUNNERS

N_VIDEOS = 6
CONFIG = {
    "data": {"root": "data", "subjects": ["sub01"], "rois": ["V1"], "n_train_videos": 4, "n_test": 2,
             "n_videos": N_VIDEOS},
    "features": {"model": "alexnet", "weights": "random", "layers": ["conv1", "fc8"], "frame_count": 2,
                 "image_size": 64, "reduction": "srp", "store_dir": "store"},
    "run": {"output_dir": "run", "extract_shards": 2, "device": "cpu"},
}


def test_every_phase_of_the_plan_has_its_function():
    assert list(PHASE_RUNNERS) == list(PHASES)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::lwroi.exceptions.RandomWeightsWarning")
def test_the_store_is_rebuilt_from_the_raw_shards_without_the_network(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for i in range(1, N_VIDEOS + 1):
        write_video(tmp_path / "data" / "AlgonautsVideos268_All_30fpsmax" / f"{i:04d}_clip.mp4",
                    make_video_frames(rng, 4, size=64), fps=10)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    monkeypatch.chdir(tmp_path)
    assert main(["extract", "config.yaml", "--mpi", "none"]) == 0
    shards = sorted(tmp_path.glob("store/alexnet-*/raw/shard-*/shard.json"))
    assert len(shards) == 2
    extracted = json.loads(shards[0].read_text())["meta"]
    assert extracted["spatial"] == {"conv1": True, "fc8": False}
    (store,) = tmp_path.glob("store/alexnet-*/srp-*")
    meta = json.loads((store / "meta.json").read_text())
    assert meta["weights"] == extracted["weights"]
    assert meta["weights"]["random_init"]
    assert meta["dims"]["fc8"] == 1000  # not spatial: kept whole; conv1 (64 x 7 x 7) is projected
    assert meta["dims"]["conv1"] < 64 * 7 * 7
    arrays = {p.name: p.read_bytes() for p in store.glob("*.npy")}

    def no_network(*args, **kwargs):
        raise AssertionError("the features phase loaded the network")

    monkeypatch.setattr(lwroi.features, "load_model", no_network)
    monkeypatch.setattr(lwroi.features, "build_extractor", no_network)
    (store / "meta.json").unlink()
    assert main(["extract", "config.yaml", "--mpi", "none"]) == 0
    assert json.loads((store / "meta.json").read_text()) == meta
    assert {p.name: p.read_bytes() for p in store.glob("*.npy")} == arrays
