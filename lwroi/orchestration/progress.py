"""Progress you can watch: a live status line on a terminal, plain periodic lines in batch logs.

On a terminal the console log handler keeps one status line (units done/total, ETA, the
current unit's epoch or video count) under the scrolling log, redrawn in place with a carriage
return. Written to a file or a pipe (a Slurm output file), it never writes that line: the log
gets a plain ``progress:`` line at most every ``interval`` seconds and at the end, so batch
logs hold no carriage-return spam. The status line and the run's progress it shows belong to
that handler (:class:`StatusConsole`), not to module state.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger("lwroi")

LOG_INTERVAL_SECONDS = 30.0
"""Least time between two plain progress lines in a batch log."""


class StatusConsole(logging.StreamHandler):
    """Console log handler with one live status line at the bottom of a terminal (none elsewhere)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.live = bool(getattr(stream, "isatty", lambda: False)())
        self.status = ""
        self.progress = ""
        """The run's progress (:class:`ProgressReporter`), which a unit's detail follows on the status line."""

    def set_status(self, text: str) -> None:
        """Show ``text`` as the status line (terminal only); an empty text clears it."""
        if not self.live:
            return
        width = shutil.get_terminal_size((100, 20)).columns - 1
        with self.lock:
            self.status = text[:width]
            self.stream.write("\r" + self.status + "\033[K")
            self.flush()

    def set_progress(self, text: str, *, draw: bool = True) -> None:
        """Make ``text`` the run's progress (empty: none) and, with ``draw``, the status line."""
        self.progress = text
        if draw:
            self.set_status(text)

    def set_detail(self, current: str) -> None:
        """Show what the running unit is doing after the run's progress."""
        self.set_status(f"{self.progress} | {current}" if self.progress else current)

    def emit(self, record: logging.LogRecord) -> None:
        if self.live and self.status:
            self.stream.write("\r\033[K")  # the log line takes the status line's place ...
        super().emit(record)
        if self.live and self.status:
            self.stream.write(self.status)  # ... and the status line is drawn again below it
            self.flush()


def _consoles() -> list[StatusConsole]:
    """The status consoles of the lwroi logger (the one :func:`~lwroi.orchestration.driver.setup_logging` adds)."""
    return [handler for handler in log.handlers if isinstance(handler, StatusConsole)]


def show_status(text: str) -> None:
    """Set the live status line of the lwroi console (a no-op when it is not a terminal)."""
    for console in _consoles():
        console.set_status(text)


def show_detail(current: str) -> None:
    """Show what the running unit is doing next to the run's progress (terminal only)."""
    for console in _consoles():
        console.set_detail(current)


def format_seconds(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``12.3s``."""
    seconds = max(0.0, seconds)
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"


class ProgressReporter:
    """Units handed out of a total, with an ETA from the mean time per unit so far."""

    def __init__(self, total: int, *, interval: float = LOG_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.last_logged: float | None = None
        self.text = f"progress: 0/{total} units handed out"
        self._show(self.text, draw=False)

    @staticmethod
    def _show(text: str, *, draw: bool = True) -> None:
        """Make ``text`` the run's progress on the lwroi console; a unit's detail follows it."""
        for console in _consoles():
            console.set_progress(text, draw=draw)

    def update(self, handed: int) -> None:
        """Report that ``handed`` units are handed out: the status line always, the log now and then."""
        elapsed = self.clock() - self.started
        eta = elapsed / handed * (self.total - handed) if handed else 0.0
        self.text = f"progress: {handed}/{self.total} units handed out, ETA {format_seconds(eta)}"
        self._show(self.text)
        now = self.clock()
        if handed >= self.total or self.last_logged is None or now - self.last_logged >= self.interval:
            log.info(self.text)
            self.last_logged = now

    def close(self) -> None:
        """Clear the status line, so the shell prompt starts on a clean line."""
        self._show("")
