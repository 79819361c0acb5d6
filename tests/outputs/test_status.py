"""``lwroi status`` verifies what it reports: checksums decide done, live processes decide running."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import numpy as np

from lwroi.orchestration.journal import Journal
from lwroi.orchestration.plan import Unit
from lwroi.orchestration.results import ResultStore
from lwroi.outputs.status import run_status

UNITS = [Unit(f"fit/sub01/{roi}", "fit", subject="sub01", roi=roi) for roi in ("V1", "V2", "V3", "V4")]


def counts(store: ResultStore) -> dict[str, int]:
    (fit,) = run_status(store, UNITS)
    return {"done": fit.done, "running": fit.running, "pending": fit.pending, "failed": fit.failed}


def write_marker(run, key: str, **fields) -> None:
    path = Journal(run, 0, "L").marker_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "rank": 0, "launch": "L", "heartbeat": time.time(), **fields}))


def exited_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_unit_whose_array_fails_its_checksum_is_not_done_and_is_left_in_place(tmp_path):
    store = ResultStore(tmp_path, "abc")
    for unit in UNITS[:2]:
        store.write_ok(unit.key, {"pcc": 0.5}, {"scores": np.arange(4.0)})
    garbled = store.array_path(UNITS[1].key, "scores")
    garbled.write_bytes(garbled.read_bytes()[:-8] + b"\0" * 8)  # same size, other bytes
    assert counts(store) == {"done": 1, "running": 0, "pending": 3, "failed": 0}
    assert store.record_path(UNITS[1].key).exists()  # status only looks; the run moves it aside


def test_a_killed_units_marker_is_not_running_while_a_live_ones_is(tmp_path):
    store = ResultStore(tmp_path, "abc")
    host = socket.gethostname()
    write_marker(tmp_path, UNITS[0].key, host=host, pid=exited_pid())  # killed a moment ago: fresh heartbeat
    write_marker(tmp_path, UNITS[1].key, host=host, pid=os.getpid())
    write_marker(tmp_path, UNITS[2].key, host="another-node", pid=exited_pid())  # can't tell: trust the heartbeat
    write_marker(tmp_path, UNITS[3].key, host="another-node", pid=1, heartbeat=time.time() - 600)
    assert counts(store) == {"done": 0, "running": 2, "pending": 2, "failed": 0}


def test_a_journal_marker_names_its_host_and_process(tmp_path):
    journal = Journal(tmp_path, 0, "L")
    with journal.running("fit/sub01/V1"):
        marker = json.loads(journal.marker_path("fit/sub01/V1").read_text())
    assert (marker["host"], marker["pid"]) == (socket.gethostname(), os.getpid())
