"""Resume from files: finished units are skipped, corrupt ones recomputed, a checkpointed fit continues,
and a changed config is refused."""

from __future__ import annotations

import json
import shutil
import signal

import pytest

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
