"""``lwroi summarize --array-states``: Slurm's word on the array tasks, with the run's own records as the truth."""

from __future__ import annotations

import shutil

from tests.conftest import run_lwroi

STATES = ("JobId=8_0 ArrayTaskId=0 JobState=COMPLETED ExitCode=0:0 Restarts=0 Reason=None\n"
          "JobId=8_1 ArrayTaskId=1 JobState=TIMEOUT ExitCode=0:15 Restarts=2 Reason=TimeLimit\n")


def test_a_task_slurm_calls_unfinished_counts_done_when_the_records_hold_every_unit(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (tmp_path / "states.txt").write_text(STATES)
    proc = run_lwroi("summarize", str(run), "--array-states", "states.txt", cwd=tmp_path)
    assert "2 of 2 array task(s) COMPLETED (1 by the run's records)" in proc.stderr
    assert (run / "summary.csv").exists()


def test_an_unfinished_task_with_missing_units_is_named(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "summary.csv").unlink(missing_ok=True)
    (run / "units" / "fit" / "alexnet" / "sub02" / "WB.json").unlink()
    (tmp_path / "states.txt").write_text(STATES)
    proc = run_lwroi("summarize", str(run), "--array-states", "states.txt", cwd=tmp_path, check=False)
    assert "1 of 2 array task(s) COMPLETED" in proc.stderr
    assert "TIMEOUT" in proc.stderr
