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
from tests.conftest import TINY_CONFIG, interrupt_when, journal_events, lwroi_command, run_lwroi
from tests.orchestration.test_mpi import assert_tables_equal, done_events

pytestmark = pytest.mark.slow(seconds=75)


def copy_run(tiny_run, tiny_workspace, name):
    target = tiny_workspace / "runs" / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(tiny_run, target)
    return target


def test_second_run_recomputes_no_finished_unit(tiny_workspace, tiny_run):
    run = copy_run(tiny_run, tiny_workspace, "again")
    before = done_events(run)
    proc = run_lwroi("run", str(TINY_CONFIG), "--mpi", "none", "--set", "run.output_dir=runs/again",
                     cwd=tiny_workspace)
    assert done_events(run) == before
    assert f"0 of {sum(before.values())} units to compute" in proc.stderr


def test_extract_needs_only_the_videos(tiny_workspace, tiny_run, tmp_path):
    """Feature extraction can start before the response pickles arrive; the fit phases still need them."""
    data = tmp_path / "videos-only"
    data.mkdir()
    videos = "AlgonautsVideos268_All_30fpsmax"
    (data / videos).symlink_to(tiny_workspace / "data" / "tiny" / videos)
    overrides = ["--set", f"data.root={data}", "--set", f"run.output_dir={tmp_path / 'run'}"]
    run_lwroi("extract", str(TINY_CONFIG), "--mpi", "none", *overrides, cwd=tiny_workspace)
    refused = run_lwroi("fit", str(TINY_CONFIG), "--mpi", "none", *overrides, cwd=tiny_workspace, check=False)
    assert refused.returncode == 2 and "responses folder not found" in refused.stderr


def test_a_second_launch_on_a_busy_run_dir_is_refused_and_a_killed_one_blocks_nothing(tiny_workspace, tiny_run):
    out = tiny_workspace / "runs" / "concurrent"
    args = ("run", str(TINY_CONFIG), "--mpi", "none", "--set", "run.output_dir=runs/concurrent")
    second = {}

    def launch_second_then_kill_first(job) -> None:
        """The first launch is stopped (SIGSTOP: its lock held, its units unfinished) while the second tries:
        the tiny run would otherwise finish before a second process has even started."""
        job.send_signal(signal.SIGSTOP)
        second["proc"] = run_lwroi(*args, cwd=tiny_workspace, check=False)
        job.send_signal(signal.SIGKILL)

    interrupt_when(lwroi_command(*args), tiny_workspace, lambda: any((out / "running").rglob("*.json")),
                   launch_second_then_kill_first, what="the first launch computing", settle=0)
    refused = second["proc"]
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "another launch is already working on this run directory (launch " in refused.stderr
    run_lwroi(*args, cwd=tiny_workspace)  # the killed launch's lock died with it
    assert_tables_equal(out, tiny_run)
    assert max(done_events(out).values()) == 1


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs (mounting needs root, as CI has): a disk that can really fill up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_fails_the_unit_with_one_clear_line_and_a_rerun_resumes(tiny_workspace, tiny_run, small_disk):
    out = small_disk / "run"
    args = ("run", str(TINY_CONFIG), "--mpi", "none", "--set", f"run.output_dir={out}", "--set", "data.rois=[V1]",
            "--set", "run.checkpoint_every=1")
    filler = small_disk / "filler"
    # Fill the disk to the last byte before the launch, then give back 512 kB: room for the run's first
    # records (run.json, journal, extract and features: about 100 kB) and a failure record, not for the
    # first checkpoint (tune/alexnet/sub01/V1 after epoch 1: about 3 MB). The tiny run's units finish in well
    # under a second, too fast to fill the disk in the middle of one.
    block = b"\0" * 2**20
    with open(filler, "wb", buffering=0) as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(block)
    os.truncate(filler, max(0, filler.stat().st_size - 512 * 1024))

    proc = run_lwroi(*args, cwd=tiny_workspace, check=False)
    code, stderr = proc.returncode, proc.stderr
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    line = next(x for x in stderr.splitlines() if "failed: DiskFullError" in x)
    assert re.search(rf"tune/alexnet/sub01/V1 failed: DiskFullError: {re.escape(str(out))}/checkpoints/tune/alexnet/"
                     r"sub01/V1.pt: "
                     r"disk full \(about [\d.]+ MB needed, [\d.]+ MB free\)", line), line
    status = run_lwroi("status", str(out), cwd=tiny_workspace).stdout
    assert re.search(r"tune\s+0\s+0\s+0\s+1", status), status  # recorded as failed, not pending

    filler.unlink()
    run_lwroi(*args, cwd=tiny_workspace)
    got, want = (pd.read_csv(p / "results.csv") for p in (out, tiny_run))
    pd.testing.assert_frame_equal(got, want[want["roi"] == "V1"].reset_index(drop=True), check_exact=False,
                                  atol=1e-6, rtol=0)


def test_corrupt_result_file_is_recomputed_not_reduced(tiny_workspace, tiny_run):
    run = copy_run(tiny_run, tiny_workspace, "corrupt")
    record = run / "units" / "fit" / "alexnet" / "sub02" / "V1.json"
    record.write_text(record.read_text()[:50])  # a torn write
    scores = run / "units" / "fit" / "alexnet" / "sub01" / "LOC.scores.npy"
    scores.write_bytes(scores.read_bytes()[:-8])  # a truncated array
    before = done_events(run)
    run_lwroi("run", str(TINY_CONFIG), "--mpi", "none", "--set", "run.output_dir=runs/corrupt", cwd=tiny_workspace)
    after = done_events(run)
    recomputed = {k for k in after if after[k] > before.get(k, 0)}
    assert recomputed == {"fit/alexnet/sub02/V1", "fit/alexnet/sub01/LOC"}
    assert_tables_equal(run, tiny_run)


def test_changed_config_is_refused_with_what_changed(tiny_workspace, tiny_run):
    run = copy_run(tiny_run, tiny_workspace, "changed")
    proc = run_lwroi("run", str(TINY_CONFIG), "--mpi", "none", "--set", "run.output_dir=runs/changed",
                     "--set", "encoding.sgd.lr=0.5", cwd=tiny_workspace, check=False)
    assert proc.returncode == 2
    assert "holds results of a different configuration" in proc.stderr
    assert "encoding.sgd.lr: 0.001 -> 0.5" in proc.stderr
    assert not list(run.glob("*.old-*")) and (run / "summary.csv").exists()


def test_restart_moves_the_old_run_aside(tiny_workspace, tiny_run):
    copy_run(tiny_run, tiny_workspace, "restarted")
    run_lwroi("extract", str(TINY_CONFIG), "--mpi", "none", "--set", "run.output_dir=runs/restarted",
              "--set", "encoding.sgd.lr=0.5", "--restart", cwd=tiny_workspace)
    assert list((tiny_workspace / "runs").glob("restarted.old-*/summary.csv"))


def test_summarize_reports_missing_units_and_writes_nothing(tiny_workspace, tiny_run):
    run = copy_run(tiny_run, tiny_workspace, "missing")
    (run / "units" / "fit" / "alexnet" / "sub02" / "WB.json").unlink()
    (run / "summary.csv").unlink()
    proc = run_lwroi("summarize", str(run), cwd=tiny_workspace, check=False)
    assert proc.returncode == 3
    assert "missing: fit/alexnet/sub02/WB" in proc.stderr
    assert not (run / "summary.csv").exists()


def test_summarize_from_files_matches_the_run(tiny_workspace, tiny_run):
    run = copy_run(tiny_run, tiny_workspace, "resummarized")
    for name in ("summary.csv", "results.csv"):
        (run / name).unlink()
    run_lwroi("summarize", str(run), cwd=tiny_workspace)
    assert_tables_equal(run, tiny_run, atol=0)


def test_read_only_verbs_trust_the_fingerprint_the_run_recorded(tiny_workspace, tiny_run):
    """A run written by an lwroi whose fingerprint differed (e.g. before a setting was added) is still
    summarised, reported and exported from its own records, and none of them is moved aside."""
    run = copy_run(tiny_run, tiny_workspace, "older")
    for path in [run / "run.json", *(run / "units").rglob("*.json")]:
        record = json.loads(path.read_text())
        record["fingerprint"] = "written-by-an-older-lwroi"
        if "models" in record:  # run.json: the per-model fingerprints that lwroi wrote beside it
            record["models"] = {name: "written-by-an-older-lwroi" for name in record["models"]}
        if "checksum" in record:  # a unit record: signed as that lwroi would have
            record["checksum"] = record_checksum(record)
        path.write_text(json.dumps(record))
    for name in ("summary.csv", "results.csv"):
        (run / name).unlink()
    run_lwroi("summarize", str(run), cwd=tiny_workspace)
    run_lwroi("report", str(run), cwd=tiny_workspace)
    run_lwroi("export", str(run), cwd=tiny_workspace)
    assert_tables_equal(run, tiny_run, atol=0)
    assert not list((run / "units").rglob("*.invalid-*"))


def test_status_counts_units_per_phase(tiny_workspace, tiny_run):
    run = copy_run(tiny_run, tiny_workspace, "status")
    (run / "units" / "fit" / "alexnet" / "sub01" / "V1.json").unlink()
    out = run_lwroi("status", str(run), cwd=tiny_workspace).stdout
    fit_line = next(line for line in out.splitlines() if line.split()[:2] == ["alexnet", "fit"])
    assert fit_line.split()[2:7] == ["5", "0", "1", "0", "6"]  # 2 subjects x 3 ROIs


def test_sigterm_mid_fit_checkpoints_and_rerun_continues_from_that_epoch(tiny_workspace):
    overrides = ["--mpi", "none", "--set", "run.output_dir=runs/sigterm", "--set", "data.rois=[V1]",
                 "--set", "data.subjects=[sub01]", "--set", "encoding.wc=[1]", "--set", "encoding.lay=[0.1]",
                 "--set", "encoding.sgd.max_epochs=600", "--set", "encoding.sgd.patience=600",
                 "--set", "run.checkpoint_every=50"]
    out = tiny_workspace / "runs" / "sigterm"
    checkpoint = out / "checkpoints" / "fit" / "alexnet" / "sub01" / "V1.pt"
    code, stderr = interrupt_when(lwroi_command("run", str(TINY_CONFIG), *overrides), tiny_workspace,
                                  checkpoint.exists, lambda job: job.send_signal(signal.SIGTERM),
                                  what="a fit checkpoint", settle=0)  # tiny epochs: 550 more take about 1 s
    assert code == 75, stderr[-3000:]
    key = "fit/alexnet/sub01/V1"
    saved = [e["epoch"] for e in journal_events(out) if e["event"] == "checkpoint" and e["key"] == key]
    assert saved and saved[-1] < 600

    run_lwroi("run", str(TINY_CONFIG), *overrides, cwd=tiny_workspace)
    resumed = [e["epoch"] for e in journal_events(out) if e["event"] == "resume" and e["key"] == key]
    assert resumed == [saved[-1]]
    record = json.loads((out / "units" / "fit" / "alexnet" / "sub01" / "V1.json").read_text())
    assert record["payload"]["n_epochs"] == 600
    assert not checkpoint.exists()
