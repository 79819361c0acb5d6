"""One launch per run directory (or per shard): flock claims, refusals that name the holder, no stale locks."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from lwroi.orchestration.lock import LaunchLock, RunDirBusyError


def test_a_second_launch_of_the_whole_plan_is_refused_naming_the_first(tmp_path):
    first = LaunchLock(tmp_path, None, "launch-A").acquire()
    with pytest.raises(RunDirBusyError, match=r"launch launch-A on .* pid"):
        LaunchLock(tmp_path, None, "launch-B").acquire()
    first.release()
    LaunchLock(tmp_path, None, "launch-B").acquire().release()


def test_shards_run_side_by_side_but_not_twice_nor_beside_the_whole_plan(tmp_path):
    shard0 = LaunchLock(tmp_path, (0, 2), "s0").acquire()
    shard1 = LaunchLock(tmp_path, (1, 2), "s1").acquire()
    with pytest.raises(RunDirBusyError, match=r"this shard .*launch s0 shard 0/2"):
        LaunchLock(tmp_path, (0, 2), "again").acquire()
    with pytest.raises(RunDirBusyError, match="this run directory"):
        LaunchLock(tmp_path, None, "whole").acquire()
    shard0.release()
    shard1.release()
    whole = LaunchLock(tmp_path, None, "whole").acquire()
    with pytest.raises(RunDirBusyError):
        LaunchLock(tmp_path, (1, 2), "late").acquire()
    whole.release()


def test_a_killed_launch_never_blocks_the_next(tmp_path):
    holder = textwrap.dedent(f"""
        import sys, time
        from lwroi.orchestration.lock import LaunchLock
        lock = LaunchLock({str(tmp_path)!r}, None, "doomed").acquire()
        print("held", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusyError, match="launch doomed"):
            LaunchLock(tmp_path, None, "next").acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    lock = LaunchLock(tmp_path, None, "next").acquire()  # the kernel released the dead launch's lock
    lock.release()
