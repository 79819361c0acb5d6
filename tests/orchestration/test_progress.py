"""Progress: a live status line on a terminal, plain periodic lines (no carriage returns) in batch logs."""

from __future__ import annotations

import io
import logging
import os
import subprocess

import pytest

from lwroi.orchestration.progress import ProgressReporter, StatusConsole, show_detail, show_status
from tests.conftest import TINY_CONFIG, lwroi_command, run_lwroi


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def console():
    """The lwroi logger with only a StatusConsole on a fake terminal; restored afterwards."""
    logger = logging.getLogger("lwroi")
    saved = logger.handlers[:], logger.level, logger.propagate
    stream = Terminal()
    logger.handlers[:] = [StatusConsole(stream)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield stream
    logger.handlers[:], logger.level, logger.propagate = saved


def test_status_line_is_redrawn_below_each_log_line(console):
    show_status("progress: 1/4")
    logging.getLogger("lwroi").info("done unit")
    show_status("")
    assert console.getvalue() == "\rprogress: 1/4\033[K\r\033[Kdone unit\nprogress: 1/4\r\033[K"


def test_no_status_line_off_a_terminal():
    stream = io.StringIO()
    handler = StatusConsole(stream)
    handler.set_status("progress: 1/4")
    handler.emit(logging.LogRecord("lwroi", logging.INFO, __file__, 1, "done unit", None, None))
    assert stream.getvalue() == "done unit\n"


def test_a_units_detail_follows_the_runs_progress_until_it_closes(console):
    handler = logging.getLogger("lwroi").handlers[0]
    reporter = ProgressReporter(4, clock=lambda: 0.0)
    show_detail("epoch 3/50")
    assert handler.status == "progress: 0/4 units handed out | epoch 3/50"
    reporter.update(1)
    show_detail("video 2/9")
    assert handler.status == "progress: 1/4 units handed out, ETA 0.0s | video 2/9"
    reporter.close()
    assert handler.status == ""
    show_detail("loading")
    assert handler.status == "loading"


def test_plain_progress_lines_are_rate_limited(console, caplog):
    now = [0.0]
    reporter = ProgressReporter(100, interval=30.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="lwroi"):
        logging.getLogger("lwroi").addHandler(caplog.handler)
        for handed in range(1, 101):
            now[0] += 1.0  # one unit a second: 100 s in all
            reporter.update(handed)
        reporter.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert lines[0].startswith("progress: 1/100") and lines[-1].startswith("progress: 100/100")
    assert 4 <= len(lines) <= 6  # at t = 1, 31, 61, 91 and the last, not 100 lines
    assert "ETA 0.0s" in lines[-1] and "ETA 1m39s" in lines[0]


@pytest.mark.slow
def test_terminal_gets_a_live_line_and_a_pipe_gets_none(tiny_workspace):
    args = ["extract", str(TINY_CONFIG), "--mpi", "none"]
    piped = run_lwroi(*args, "--set", "run.output_dir=runs/progress-pipe", cwd=tiny_workspace)
    assert "progress: " in piped.stderr and "\r" not in piped.stderr
    leader, follower = os.openpty()
    job = subprocess.Popen(lwroi_command(*args, "--set", "run.output_dir=runs/progress-tty"), cwd=tiny_workspace,
                           stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert job.wait(timeout=600) == 0
    seen = b"".join(chunks).decode(errors="replace")
    assert "\rprogress: " in seen and "units handed out, ETA" in seen
