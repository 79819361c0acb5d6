"""A zoo of DNNs in one run: the same comparison with 1 process, 2 MPI ranks and after kill -9, models added later.

The tiny dataset with four small random-weight models of three families (tests/zoo.yaml).
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ZOO_CONFIG, interrupt_when, journal_events, lwroi_command, mpiexec, run_lwroi
from tests.orchestration.test_mpi import assert_tables_equal

pytestmark = [pytest.mark.mpi, pytest.mark.slow(seconds=75)]

TABLES = ("comparison.csv", "hierarchy.csv", "model_pairs.csv", "summary.csv", "results.csv")


def assert_same_tables(run: Path, reference: Path) -> None:
    assert_tables_equal(run, reference, names=TABLES)


def test_a_zoo_compares_every_model_per_roi(zoo_run):
    comparison = pd.read_csv(zoo_run / "comparison.csv")
    assert list(dict.fromkeys(comparison["model"])) == ["alexnet", "r18", "vit", "r3d"]
    assert dict(comparison.drop_duplicates("model")[["model", "family"]].values) == {
        "alexnet": "cnn", "r18": "cnn", "vit": "transformer", "r3d": "video"}
    assert len(comparison) == 4 * 3 and comparison["n_subjects"].eq(2).all()
    assert comparison.groupby("roi")["rank_in_roi"].apply(sorted).map(list).eq([[1, 2, 3, 4]] * 3).all()
    assert set(pd.read_csv(zoo_run / "hierarchy.csv")["model"]) == {"alexnet", "r18", "vit", "r3d"}
    assert len(pd.read_csv(zoo_run / "model_pairs.csv")) == 3 * 6  # 3 ROIs x 6 pairs
    results = pd.read_csv(zoo_run / "results.csv")
    assert results["random_weights"].all()
    vit = results[results["model"] == "vit"]
    assert {c for c in vit.dropna(axis=1).columns if c.startswith("weight_")} == {
        "weight_early", "weight_late", "weight_encoder.ln"}


def test_each_clip_is_decoded_once_for_the_whole_zoo(tiny_workspace, zoo_run):
    """The four models sample 4 frames a clip alike: the first to reach a clip decodes it, the others read it back.

    The session's tiny run (same clips, same sampling) may have filled the cache first; either way
    no clip is decoded twice, and every model that extracted read the clips it did not decode.
    """
    records = [json.loads(p.read_text()) for p in (zoo_run / "units" / "extract").rglob("*.json")]
    extracted = [r["payload"] for r in records if "raw_shard" in r["payload"]]
    assert len({p["raw_shard"].split("/")[-3] for p in extracted}) >= 3  # r18, vit and r3d are the zoo's own
    decoded = sum(p["clips_decoded"] for p in extracted)
    assert all(p["clips_decoded"] + p["clips_from_frame_cache"] == p["n_videos"] for p in extracted)
    assert decoded <= 44 < sum(p["n_videos"] for p in extracted)
    (folder,) = (tiny_workspace / "feature_store" / "frames").glob("count4-*")
    assert len(list(folder.glob("*.npz"))) == 44


def test_two_ranks_give_the_plain_process_comparison(tiny_workspace, zoo_run):
    run_lwroi("run", str(ZOO_CONFIG), "--set", "run.output_dir=runs/zoo-mpi2", cwd=tiny_workspace, mpi_ranks=2)
    assert_same_tables(tiny_workspace / "runs" / "zoo-mpi2", zoo_run)


def test_a_zoo_killed_mid_run_resumes_to_the_same_comparison(tiny_workspace, zoo_run):
    out = tiny_workspace / "runs" / "zoo-killed"
    cmd = [mpiexec(), "-n", "2", *lwroi_command("run", str(ZOO_CONFIG), "--set", "run.output_dir=runs/zoo-killed")]

    def some_fits_done() -> bool:
        return len(list((out / "units" / "fit").rglob("*.json"))) >= 3

    code, _ = interrupt_when(cmd, tiny_workspace, some_fits_done, lambda job: job.send_signal(signal.SIGKILL),
                             what="three fits done", settle=0)
    assert code != 0
    before = {p: p.stat().st_mtime_ns for p in (out / "units").rglob("*.json")}
    run_lwroi("run", str(ZOO_CONFIG), "--set", "run.output_dir=runs/zoo-killed", cwd=tiny_workspace, mpi_ranks=2)
    assert_same_tables(out, zoo_run)
    counts = Counter(e["key"] for e in journal_events(out) if e["event"] == "done")
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())


def test_adding_a_model_computes_only_that_model_and_a_changed_one_is_refused(tiny_workspace, zoo_run, tmp_path):
    base = tiny_workspace / "runs" / "zoo-grown"
    run_lwroi("run", str(ZOO_CONFIG), "--mpi", "none", "--set", "run.output_dir=runs/zoo-grown", cwd=tiny_workspace)
    first = {e["key"] for e in journal_events(base) if e["event"] == "done"}
    models = "[alexnet,{name: r18, model: resnet18},{name: vit, model: vit_b_16, image_size: 32, layers: [" \
             "early=encoder.layers.encoder_layer_1.add_1, late=encoder.layers.encoder_layer_10.add_1, encoder.ln]}," \
             "{name: r3d, model: r3d_18, image_size: 32},{name: sq, model: squeezenet1_1}]"
    proc = run_lwroi("run", str(ZOO_CONFIG), "--mpi", "none", "--set", "run.output_dir=runs/zoo-grown",
                     "--set", f"features.models={models}", cwd=tiny_workspace)
    second = {e["key"] for e in journal_events(base) if e["event"] == "done"} - first
    assert second and all(key.split("/")[1] == "sq" for key in second), sorted(second)
    assert "sq" in set(pd.read_csv(base / "comparison.csv")["model"])
    grown = pd.read_csv(base / "comparison.csv")
    pd.testing.assert_frame_equal(grown[grown["model"] != "sq"].drop(columns="rank_in_roi").reset_index(drop=True),
                                  pd.read_csv(zoo_run / "comparison.csv").drop(columns="rank_in_roi"),
                                  check_exact=False, atol=1e-6, rtol=0)
    status = subprocess.run(lwroi_command("status", str(base)), cwd=tiny_workspace, capture_output=True, text=True)
    assert status.returncode == 0 and all(f"\n{m} " in status.stdout for m in ("r18", "vit", "r3d", "sq")), (
        status.stdout)

    changed = models.replace("{name: sq, model: squeezenet1_1}", "{name: sq, model: squeezenet1_0}")
    proc = run_lwroi("run", str(ZOO_CONFIG), "--mpi", "none", "--set", "run.output_dir=runs/zoo-grown",
                     "--set", f"features.models={changed}", cwd=tiny_workspace, check=False)
    assert proc.returncode == 2 and "model(s) sq with other settings" in proc.stderr, proc.stderr[-2000:]
    assert json.loads((base / "run.json").read_text())["models"]["sq"]


@pytest.mark.parametrize(("entry", "message"), [
    ("{name: bad, model: resnet1800}", "model bad: features.model: model 'resnet1800'"),
    ("{name: bad, model: resnet18, weights: nowhere.pth}", "model bad: features.weights: nowhere.pth"),
    ("{name: bad, model: resnet18, layers: [layer9]}", "model bad: features.layers: layer 'layer9'"),
    ("{name: bad, model: r3d_18, frame_sampling: stride}", "model bad: features.frame_sampling"),
])
def test_a_bad_model_is_refused_before_any_work_naming_it(tiny_workspace, entry, message):
    out = tiny_workspace / "runs" / "zoo-bad"
    proc = run_lwroi("run", str(ZOO_CONFIG), "--mpi", "none", "--set", "run.output_dir=runs/zoo-bad",
                     "--set", f"features.models=[alexnet,{entry}]", cwd=tiny_workspace, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()
