"""One launch per run directory (or per shard of it), claimed with ``flock`` locks.

Two launches on one run directory would compute every unit twice. A launch of the whole plan
takes ``locks/all.lock`` exclusively; a launch of one shard (``--shard i/N``) takes it shared and
``locks/shard-i-of-N.lock`` exclusively, so the shards of an array job run side by side while the
same shard twice, or a whole-plan launch beside any shard, is refused. The kernel releases a
lock when its process dies (even by SIGKILL), so a dead launch never blocks a resume. Each
holder leaves an owner note beside its lock to name it in the refusal. ``flock`` works across
nodes on NFSv4 and on Lustre mounted with ``-o flock``.

Launches of different runs may share a feature store; :func:`building` lets one of them build a
shard or a store while the others wait for it and then reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lwroi._io import atomic_write_json
from lwroi.exceptions import LwroiError

LOCK_DIR = "locks"

log = logging.getLogger("lwroi")


class RunDirBusyError(LwroiError, RuntimeError):
    """Another live launch holds the run directory (or the same shard of it)."""


class LaunchLock:
    """The locks of one launch; :meth:`release` (or the process's exit) frees them."""

    def __init__(self, run_dir: str | Path, shard: tuple[int, int] | None, launch_id: str) -> None:
        self.folder = Path(run_dir) / LOCK_DIR
        self.shard = shard
        self.launch_id = launch_id
        self._held: list[tuple[IO[str], Path]] = []

    def acquire(self) -> LaunchLock:
        """Take the locks or raise :class:`RunDirBusyError` naming the launch(es) that hold them."""
        self.folder.mkdir(parents=True, exist_ok=True)
        claims = [("all", fcntl.LOCK_EX if self.shard is None else fcntl.LOCK_SH)]
        if self.shard is not None:
            claims.append((f"shard-{self.shard[0]}-of-{self.shard[1]}", fcntl.LOCK_EX))
        for name, mode in claims:
            path = self.folder / f"{name}.lock"
            handle = open(path, "a")
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                self.release()
                raise RunDirBusyError(self._busy_message(name)) from None
            self._held.append((handle, path))
        own = self.folder / f"{claims[-1][0]}.{self.launch_id}.owner.json"
        atomic_write_json(own, {"launch": self.launch_id, "host": socket.gethostname(), "pid": os.getpid(),
                                "shard": list(self.shard) if self.shard else None, "started": time.time()})
        self._owner = own
        return self

    def release(self) -> None:
        """Drop the owner note and the locks (idempotent)."""
        owner = getattr(self, "_owner", None)
        if owner is not None:
            owner.unlink(missing_ok=True)
            self._owner = None
        for handle, _ in reversed(self._held):
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._held = []

    def _busy_message(self, name: str) -> str:
        what = "this shard" if name.startswith("shard") else "this run directory"
        holders = [_describe(note) for note in sorted(self.folder.glob("*.owner.json")) if _is_live(note)]
        listed = "; ".join(holders) if holders else "its owner note is missing"
        return (f"{self.folder.parent}: another launch is already working on {what} ({listed}). "
                "Wait for it to finish or stop it (a killed launch releases its lock at once); "
                "shards of one array job (--shard i/N) may run side by side.")


def building_lock(product: Path) -> Path:
    """The lock beside ``product`` (a folder), hidden so that no glob of the products matches it."""
    return product.with_name(f".{product.name}.lock")


@contextlib.contextmanager
def building(product: Path) -> Iterator[None]:
    """Hold ``product``'s lock while building it, waiting (and saying so) while another launch holds it.

    Runs that share a feature store would otherwise build the same shard or store side by side,
    and the later writer would replace files that the earlier one's next units had verified. The
    caller checks again, under the lock, whether the product is complete by now.
    """
    lock = building_lock(product)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another launch building %s (it holds %s)", product, lock)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_live(note: Path) -> bool:
    """Whether the launch of an owner note still runs: its lock is held and, on this host, its pid lives."""
    try:
        owner = json.loads(note.read_text())
        if owner["host"] == socket.gethostname():
            os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError, KeyError, TypeError):
        pass  # unreadable note, or a pid we may not signal: let the lock decide
    lock = note.with_name(note.name.split(".")[0] + ".lock")
    try:
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def _describe(note: Path) -> str:
    try:
        owner = json.loads(note.read_text())
    except (OSError, ValueError):
        return f"{note.name} (unreadable)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    shard = owner.get("shard")
    part = f" shard {shard[0]}/{shard[1]}" if shard else ""
    return f"launch {owner.get('launch')}{part} on {owner.get('host')} pid {owner.get('pid')} since {started}"
