"""What each rank did, on disk: an append-only event journal and heartbeat markers of running units.

The journal is how a run counts its own work (a unit that finished once is never computed
again); the markers let ``lwroi status`` tell running units from stale ones without MPI.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lwroi._io import atomic_write_json

log = logging.getLogger("lwroi")

HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 120.0


class Journal:
    """Append JSON-line events of one process to ``journal/rank-<r>-<launch>.jsonl``."""

    def __init__(self, run_dir: str | Path, rank: int, launch_id: str) -> None:
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.launch_id = launch_id
        folder = self.run_dir / "journal"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"rank-{rank:03d}-{launch_id}.jsonl"
        self._last_beat: dict[str, float] = {}
        self._unwritable = False

    def event(self, event: str, key: str, **extra: Any) -> None:
        """Append one event; each line is flushed and fsynced so a crash loses at most that line.

        The journal is a log, not the results (unit records are): an event that cannot be written
        (a full disk) is reported once on the log and the run goes on.
        """
        line = json.dumps({"event": event, "key": key, "time": time.time(), "rank": self.rank,
                           "launch": self.launch_id, **extra}, sort_keys=True)
        try:
            with open(self.path, "a") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            if not self._unwritable:
                log.error("%s: cannot append to the journal (%s); unit records stay authoritative", self.path, exc)
            self._unwritable = True

    def marker_path(self, key: str) -> Path:
        return self.run_dir / "running" / f"{key}.json"

    @contextlib.contextmanager
    def running(self, key: str) -> Iterator[None]:
        """Mark ``key`` as running for the duration of the block (heartbeat file)."""
        self._write_marker(key, started=time.time())
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.marker_path(key).unlink()
            self._last_beat.pop(key, None)

    def heartbeat(self, key: str, **progress: Any) -> None:
        """Refresh the running marker (rate-limited), e.g. with the current epoch."""
        now = time.time()
        if now - self._last_beat.get(key, 0.0) >= HEARTBEAT_SECONDS:
            self._write_marker(key, **progress)

    def _write_marker(self, key: str, **fields: Any) -> None:
        self._last_beat[key] = time.time()
        marker = {"key": key, "rank": self.rank, "host": socket.gethostname(), "pid": os.getpid(),
                  "launch": self.launch_id, "heartbeat": time.time(), **fields}
        try:
            atomic_write_json(self.marker_path(key), marker)
        except OSError as exc:  # markers only inform `lwroi status`; a full disk must not stop the run here
            if not self._unwritable:
                log.error("%s: cannot write the running marker (%s)", self.marker_path(key), exc)
            self._unwritable = True


def read_journal(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every event of every process of the run, oldest first (a torn last line is ignored)."""
    events = []
    for path in sorted((Path(run_dir) / "journal").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return sorted(events, key=lambda e: e.get("time", 0.0))


def running_markers(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Running markers by unit key, each with ``stale`` set when its process cannot be running it.

    A marker is stale when its heartbeat is old, and at once when it was written on this host by
    a process that no longer exists (a ``kill -9`` leaves its marker behind).
    """
    out = {}
    root = Path(run_dir) / "running"
    now = time.time()
    host = socket.gethostname()
    for path in root.rglob("*.json"):
        with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
            marker = json.loads(path.read_text())
            dead = marker.get("host") == host and not pid_alive(int(marker["pid"]))
            marker["stale"] = dead or now - marker.get("heartbeat", 0.0) > STALE_SECONDS
            out[marker["key"]] = marker
    return out


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return True
