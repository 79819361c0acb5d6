"""Resume from files: finished units are skipped, corrupt ones recomputed, a checkpointed fit continues,
and a changed config is refused."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess

import pandas as pd
import pytest

from lwroi.orchestration.results import record_checksum
from tests.conftest import DEMO_CONFIG, interrupt_when, journal_events, lwroi_command, run_lwroi
from tests.orchestration.test_mpi import assert_tables_equal, done_events

pytestmark = pytest.mark.slow


def copy_run(reference_run, demo_workspace, name):
    target = demo_workspace / "runs" / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(reference_run, target)
    return target


def test_second_run_recomputes_no_finished_unit(demo_workspace, reference_run):
    run = copy_run(reference_run, demo_workspace, "again")
    before = done_events(run)
    proc = run_lwroi("run", str(DEMO_CONFIG), "--mpi", "none", "--set", "run.output_dir=runs/again",
                     cwd=demo_workspace)
    assert done_events(run) == before
    assert f"0 of {sum(before.values())} units to compute" in proc.stderr


def test_extract_needs_only_the_videos(demo_workspace, reference_run, tmp_path):
    """Feature extraction can start before the response pickles arrive; the fit phases still need them."""
    data = tmp_path / "videos-only"
    data.mkdir()
    videos = "AlgonautsVideos268_All_30fpsmax"
    (data / videos).symlink_to(demo_workspace / "data" / "demo" / videos)
    overrides = ["--set", f"data.root={data}", "--set", f"run.output_dir={tmp_path / 'run'}"]
    run_lwroi("extract", str(DEMO_CONFIG), "--mpi", "none", *overrides, cwd=demo_workspace)
    refused = run_lwroi("fit", str(DEMO_CONFIG), "--mpi", "none", *overrides, cwd=demo_workspace, check=False)
    assert refused.returncode == 2 and "responses folder not found" in refused.stderr


def test_a_second_launch_on_a_busy_run_dir_is_refused_and_a_killed_one_blocks_nothing(demo_workspace,
                                                                                       reference_run):
    out = demo_workspace / "runs" / "concurrent"
    args = ("run", str(DEMO_CONFIG), "--mpi", "none", "--set", "run.output_dir=runs/concurrent")
    second = {}

    def launch_second_then_kill_first(job) -> None:
        second["proc"] = run_lwroi(*args, cwd=demo_workspace, check=False)
        job.send_signal(signal.SIGKILL)

    interrupt_when(lwroi_command(*args), demo_workspace, lambda: any((out / "running").rglob("*.json")),
                   launch_second_then_kill_first, what="the first launch computing", settle=0)
    refused = second["proc"]
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "another launch is already working on this run directory (launch " in refused.stderr
    run_lwroi(*args, cwd=demo_workspace)  # the killed launch's lock died with it
    assert_tables_equal(out, reference_run)
    assert max(done_events(out).values()) == 1


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs (mounting needs root, as CI has): a disk that can really fill up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_fails_the_unit_with_one_clear_line_and_a_rerun_resumes(demo_workspace, reference_run,
                                                                          small_disk):
    out = small_disk / "run"
    args = ("run", str(DEMO_CONFIG), "--mpi", "none", "--set", f"run.output_dir={out}", "--set", "data.rois=[V1]",
            "--set", "run.checkpoint_every=1")
    filler = small_disk / "filler"

    def fill_the_disk(job) -> None:
        """Fill the disk to the last byte (the run writes beside us), then give back 256 kB: room for a
        failure record, not for a checkpoint."""
        block = b"\0" * 2**20
        with open(filler, "wb", buffering=0) as fh:
            with contextlib.suppress(OSError):
                while True:
                    fh.write(block)
        os.truncate(filler, max(0, filler.stat().st_size - 256 * 1024))

    code, stderr = interrupt_when(lwroi_command(*args), demo_workspace,
                                  lambda: any((out / "running" / "tune").rglob("*.json")), fill_the_disk,
                                  what="tuning V1", settle=0)
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    line = next(x for x in stderr.splitlines() if "failed: DiskFullError" in x)
    assert re.search(rf"tune/sub01/V1 failed: DiskFullError: {re.escape(str(out))}/checkpoints/tune/sub01/V1.pt: "
                     r"disk full \(about [\d.]+ MB needed, [\d.]+ MB free\)", line), line
    status = run_lwroi("status", str(out), cwd=demo_workspace).stdout
    assert re.search(r"tune\s+0\s+0\s+0\s+1", status), status  # recorded as failed, not pending

    filler.unlink()
    run_lwroi(*args, cwd=demo_workspace)
    got, want = (pd.read_csv(p / "results.csv") for p in (out, reference_run))
    pd.testing.assert_frame_equal(got, want[want["roi"] == "V1"].reset_index(drop=True), check_exact=False,
                                  atol=1e-6, rtol=0)


def test_corrupt_result_file_is_recomputed_not_reduced(demo_workspace, reference_run):
    run = copy_run(reference_run, demo_workspace, "corrupt")
    record = run / "units" / "fit" / "sub02" / "V1.json"
    record.write_text(record.read_text()[:50])  # a torn write
    scores = run / "units" / "fit" / "sub01" / "FFA.scores.npy"
    scores.write_bytes(scores.read_bytes()[:-8])  # a truncated array
    before = done_events(run)
    run_lwroi("run", str(DEMO_CONFIG), "--mpi", "none", "--set", "run.output_dir=runs/corrupt", cwd=demo_workspace)
    after = done_events(run)
    recomputed = {k for k in after if after[k] > before.get(k, 0)}
    assert recomputed == {"fit/sub02/V1", "fit/sub01/FFA"}
    assert_tables_equal(run, reference_run)


def test_changed_config_is_refused_with_what_changed(demo_workspace, reference_run):
    run = copy_run(reference_run, demo_workspace, "changed")
    proc = run_lwroi("run", str(DEMO_CONFIG), "--mpi", "none", "--set", "run.output_dir=runs/changed",
                     "--set", "encoding.lr=0.5", cwd=demo_workspace, check=False)
    assert proc.returncode == 2
    assert "holds results of a different configuration" in proc.stderr
    assert "encoding.lr: 0.001 -> 0.5" in proc.stderr
    assert not list(run.glob("*.old-*")) and (run / "summary.csv").exists()


def test_restart_moves_the_old_run_aside(demo_workspace, reference_run):
    copy_run(reference_run, demo_workspace, "restarted")
    run_lwroi("extract", str(DEMO_CONFIG), "--mpi", "none", "--set", "run.output_dir=runs/restarted",
              "--set", "encoding.lr=0.5", "--restart", cwd=demo_workspace)
    assert list((demo_workspace / "runs").glob("restarted.old-*/summary.csv"))


def test_summarize_reports_missing_units_and_writes_nothing(demo_workspace, reference_run):
    run = copy_run(reference_run, demo_workspace, "missing")
    (run / "units" / "fit" / "sub03" / "WB.json").unlink()
    (run / "summary.csv").unlink()
    proc = run_lwroi("summarize", str(run), cwd=demo_workspace, check=False)
    assert proc.returncode == 3
    assert "missing: fit/sub03/WB" in proc.stderr
    assert not (run / "summary.csv").exists()


def test_summarize_from_files_matches_the_run(demo_workspace, reference_run):
    run = copy_run(reference_run, demo_workspace, "resummarized")
    for name in ("summary.csv", "results.csv"):
        (run / name).unlink()
    run_lwroi("summarize", str(run), cwd=demo_workspace)
    assert_tables_equal(run, reference_run, atol=0)


def test_read_only_verbs_trust_the_fingerprint_the_run_recorded(demo_workspace, reference_run):
    """A run written by an lwroi whose fingerprint differed (e.g. before a setting was added) is still
    summarised, reported and exported from its own records, and none of them is moved aside."""
    run = copy_run(reference_run, demo_workspace, "older")
    for path in [run / "run.json", *(run / "units").rglob("*.json")]:
        record = json.loads(path.read_text())
        record["fingerprint"] = "written-by-an-older-lwroi"
        if "checksum" in record:  # a unit record: signed as that lwroi would have
            record["checksum"] = record_checksum(record)
        path.write_text(json.dumps(record))
    for name in ("summary.csv", "results.csv"):
        (run / name).unlink()
    run_lwroi("summarize", str(run), cwd=demo_workspace)
    run_lwroi("report", str(run), cwd=demo_workspace)
    run_lwroi("export", str(run), cwd=demo_workspace)
    assert_tables_equal(run, reference_run, atol=0)
    assert not list((run / "units").rglob("*.invalid-*"))


def test_status_counts_units_per_phase(demo_workspace, reference_run):
    run = copy_run(reference_run, demo_workspace, "status")
    (run / "units" / "fit" / "sub01" / "V1.json").unlink()
    out = run_lwroi("status", str(run), cwd=demo_workspace).stdout
    fit_line = next(line for line in out.splitlines() if line.startswith("fit"))
    assert fit_line.split()[1:6] == ["29", "0", "1", "0", "30"]


def test_sigterm_mid_fit_checkpoints_and_rerun_continues_from_that_epoch(demo_workspace):
    overrides = ["--mpi", "none", "--set", "run.output_dir=runs/sigterm", "--set", "data.rois=[V1]",
                 "--set", "data.subjects=[sub01]", "--set", "encoding.wc=[1]", "--set", "encoding.lay=[0.1]",
                 "--set", "encoding.max_epochs=600", "--set", "encoding.patience=600",
                 "--set", "run.checkpoint_every=50"]
    out = demo_workspace / "runs" / "sigterm"
    checkpoint = out / "checkpoints" / "fit" / "sub01" / "V1.pt"
    code, stderr = interrupt_when(lwroi_command("run", str(DEMO_CONFIG), *overrides), demo_workspace,
                                  checkpoint.exists, lambda job: job.send_signal(signal.SIGTERM),
                                  what="a fit checkpoint")
    assert code == 75, stderr[-3000:]
    saved = [e["epoch"] for e in journal_events(out) if e["event"] == "checkpoint" and e["key"] == "fit/sub01/V1"]
    assert saved and saved[-1] < 600

    run_lwroi("run", str(DEMO_CONFIG), *overrides, cwd=demo_workspace)
    resumed = [e["epoch"] for e in journal_events(out) if e["event"] == "resume" and e["key"] == "fit/sub01/V1"]
    assert resumed == [saved[-1]]
    record = json.loads((out / "units" / "fit" / "sub01" / "V1.json").read_text())
    assert record["payload"]["n_epochs"] == 600
    assert not checkpoint.exists()
