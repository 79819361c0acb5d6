"""Hand units to ranks: a shared counter over the ordered plan, so every rank pulls its next unit.

One rank is an ordinary case (no mpi4py needed). Under MPI, ``mpi4py.util.sync.Counter``
(one-sided fetch-and-add) lets every rank, rank 0 included, take the next pending unit as
soon as it is free, which balances units whose costs differ by 100×. Dependencies are met
by order (a unit's dependencies come earlier in the plan, so they are already taken) plus
waiting for their result files.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import stat
import struct
import sys
import termios
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from lwroi.exceptions import Interrupted
from lwroi.orchestration.journal import Journal
from lwroi.orchestration.plan import Unit
from lwroi.orchestration.progress import ProgressReporter, format_seconds
from lwroi.orchestration.results import ResultStore

log = logging.getLogger("lwroi")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_RESUBMIT = 75
"""Stopped by SIGTERM/SIGUSR1 after checkpointing: resubmit the same command to continue."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
POLL_SECONDS = 0.2
WAIT_POLL_SECONDS = 0.01
"""How often a rank waiting for the others tests the barrier: 100 tests a second cost nothing measurable."""


class StopFlag:
    """Set by a signal handler, or by another rank's stop; checked between units and between epochs.

    A stop must reach every rank of the launch: a rank that checkpoints and leaves while another
    waits for one of its units would leave that rank waiting forever. Under MPI the first rank to
    see a signal raises a shared one-sided counter, which the others read at most every
    ``SHARE_SECONDS`` (reading it costs a round trip to rank 0, too much for every epoch).
    A second SIGINT (Ctrl-C twice) interrupts at once, without a checkpoint.
    """

    SHARE_SECONDS = 0.5

    def __init__(self) -> None:
        self.reason: str | None = None
        self._shared: Any = None
        self._published = False
        self._checked = 0.0

    def __bool__(self) -> bool:
        if self.reason is None and self._shared is not None:
            now = time.monotonic()
            if now - self._checked >= self.SHARE_SECONDS:
                self._checked = now
                if self._shared.next(0) > 0:
                    self.reason = "another rank was stopped"
                    self._published = True
                    log.warning("%s: finishing the current epoch, checkpointing, then exiting", self.reason)
        if self.reason is not None and self._shared is not None and not self._published:
            self._published = True
            self._shared.next(1)
        return self.reason is not None

    def install(self) -> None:
        """Catch SIGTERM, SIGUSR1 and SIGINT: only set the flag, so the current epoch or unit ends cleanly."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def share(self, comm: Any) -> None:
        """Make a stop of any rank of ``comm`` a stop of all (collective; pair with :meth:`unshare`)."""
        if not isinstance(comm, SelfComm) and comm.size > 1:
            from mpi4py.util.sync import Counter

            self._shared = Counter(comm=comm)

    def unshare(self) -> None:
        """Free the shared flag (collective)."""
        if self._shared is not None:
            self._shared.free()
            self._shared = None

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self.reason is not None:
            raise KeyboardInterrupt
        if self.reason is None:
            log.warning("received %s: finishing the current epoch, checkpointing, then exiting%s", name,
                        " (Ctrl-C again to abort at once)" if signum == signal.SIGINT else "")
            self.reason = f"received {name}"


class SelfComm:
    """The one-process stand-in for an MPI communicator (rank 0 of 1)."""

    rank = 0
    size = 1

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def allreduce(self, value: int, op: Any = None) -> int:
        return value


def world_communicator(mode: str) -> Any:
    """``COMM_WORLD`` when MPI is wanted (``mpi``) or available (``auto``), else :class:`SelfComm`.

    mpi4py is imported only here, so a plain process needs no MPI library at all.
    """
    if mode == "none":
        return SelfComm()
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as exc:  # no mpi4py, or no MPI library for it to load
        if mode == "mpi":
            raise RuntimeError(f"--mpi mpi was given but MPI is unavailable ({exc}); "
                               "pip install mpi4py mpich") from None
        log.info("running as one process: MPI unavailable (%s)", exc)
        return SelfComm()
    return MPI.COMM_WORLD


@contextmanager
def abort_on_error(comm: Any, collective: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Abort every rank of ``comm`` when an exception leaves this block on one rank (as ``python -m mpi4py`` does).

    An exception that only one rank raises leaves the others waiting in their next collective
    call (a ``bcast``, a barrier) until the job's time limit. Here it prints its traceback and
    aborts the communicator, so the launch ends at once with a non-zero exit code. Exceptions
    of the ``collective`` types are raised by every rank together and pass through; so does
    everything when ``comm`` has one rank.
    """
    try:
        yield
    except collective:
        raise
    except BaseException:
        if comm.size > 1:
            sys.stderr.write(f"lwroi: rank {comm.rank} of {comm.size} failed; aborting all ranks\n"
                             + traceback.format_exc())
            sys.stderr.flush()
            wait_until_read(sys.stderr)
            comm.Abort(1)
        raise


def wait_until_read(stream: Any, timeout: float = 5.0) -> None:
    """Wait (bounded) until the reader of ``stream``'s pipe or socket has taken everything written to it.

    A rank's stderr is a pipe to the launcher (mpiexec's proxy, srun), and an abort kills that
    reader too: whatever it had not read yet is lost, and the job log shows an abort without
    its traceback. The bytes still in the pipe are counted with ``FIONREAD``. Files and
    terminals are not waited for.
    """
    try:
        fd = stream.fileno()
        if not (stat.S_ISFIFO(mode := os.fstat(fd).st_mode) or stat.S_ISSOCK(mode)):
            return
        deadline = time.monotonic() + timeout
        while _unread_bytes(fd) and time.monotonic() < deadline:
            time.sleep(WAIT_POLL_SECONDS)
    except (AttributeError, OSError, ValueError):  # no descriptor, or one that cannot say
        return


def _unread_bytes(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def node_local_rank(comm: Any) -> tuple[int, int]:
    """(rank, size) within this node, from a shared-memory split of the communicator."""
    if isinstance(comm, SelfComm):
        return 0, 1
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return local.Get_rank(), local.Get_size()
    finally:
        local.Free()


class _Counter:
    """Next-index source: a plain int for one rank, mpi4py's one-sided counter for many.

    The counter lives in rank 0's memory. MPICH only serves a passive-target RMA request when
    the target rank enters the MPI library, and rank 0 spends minutes inside torch between MPI
    calls, so a rank asking for work would wait for rank 0's unit to end. A light thread on
    rank 0 pokes MPI's progress engine every few milliseconds to keep the counter answering.
    """

    PROGRESS_SECONDS = 0.005

    def __init__(self, comm: Any) -> None:
        self._mpi = None
        self._next = 0
        self._progress: threading.Thread | None = None
        self._stopping = threading.Event()
        if not isinstance(comm, SelfComm) and comm.size > 1:
            from mpi4py import MPI
            from mpi4py.util.sync import Counter

            self._mpi = Counter(comm=comm)
            if comm.rank == 0 and MPI.Query_thread() == MPI.THREAD_MULTIPLE:
                self._progress = threading.Thread(target=self._poke, args=(comm,),
                                                  name="lwroi-mpi-progress", daemon=True)
                self._progress.start()

    def _poke(self, comm: Any) -> None:
        while not self._stopping.wait(self.PROGRESS_SECONDS):
            comm.Iprobe()  # any MPI call drives the progress engine; this one consumes nothing

    def next(self) -> int:
        if self._mpi is not None:
            return self._mpi.next()
        value, self._next = self._next, self._next + 1
        return value

    def free(self) -> None:
        if self._progress is not None:
            self._stopping.set()
            self._progress.join()
        if self._mpi is not None:
            self._mpi.free()


@dataclass
class Outcome:
    """What this rank did in one launch."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_RESUBMIT
        return EXIT_FAILED if self.failed else EXIT_OK


def _wait_for(dep: str, store: ResultStore, stop: StopFlag, journal: Journal, key: str) -> str:
    """Block until unit ``dep`` has a record; return its status (``ok``/``error``).

    Raises Interrupted when a stop is requested while waiting.
    """
    announced = False
    while True:
        record = store.read(dep)
        if record is not None:
            return record.status
        if stop:
            raise Interrupted(f"stopped while {key} waited for {dep}")
        if not announced:
            log.info("%s waits for %s", key, dep)
            announced = True
        journal.heartbeat(key, waiting_for=dep)
        time.sleep(POLL_SECONDS)


def execute(units: list[Unit], run_unit: Callable[[Unit], None], *, store: ResultStore, comm: Any,
            stop: StopFlag, journal: Journal) -> Outcome:
    """Run every unit of ``units`` that has no valid result yet, spread over the ranks of ``comm``.

    ``run_unit`` computes one unit and writes its record; an exception it raises becomes the
    unit's error record (the rerun tries again), except :class:`Interrupted`, which stops
    this rank after the unit has checkpointed.
    """
    pending = None
    if comm.rank == 0:
        pending = [u.key for u in units if not store.is_done(u.key)]
    pending = quiet_bcast(comm, pending, root=0)
    by_key = {u.key: u for u in units}
    todo = [by_key[k] for k in pending]
    outcome = Outcome()
    if comm.rank == 0:
        log.info("%d of %d units to compute (%d already done)", len(todo), len(units), len(units) - len(todo))
    counter = _Counter(comm)
    stop.share(comm)
    progress = ProgressReporter(len(todo))
    try:
        while not stop:
            index = counter.next()
            if index >= len(todo):
                break
            unit = todo[index]
            try:
                _run_one(unit, run_unit, store, stop, journal, outcome)
            except Interrupted as exc:
                log.warning("%s: %s", unit.key, exc)
                journal.event("interrupted", unit.key)
                outcome.interrupted = True
                break
            progress.update(min(index + 1, len(todo)))
        if stop:
            outcome.interrupted = True
    finally:
        progress.close()
        wait_all(comm)
        stop.unshare()
        counter.free()
    return outcome


def _run_one(unit: Unit, run_unit: Callable[[Unit], None], store: ResultStore, stop: StopFlag,
             journal: Journal, outcome: Outcome) -> None:
    with journal.running(unit.key):
        failed_deps = [d for d in unit.deps if _wait_for(d, store, stop, journal, unit.key) != "ok"]
        t0 = time.monotonic()
        journal.event("start", unit.key, phase=unit.phase)
        log.info("start %s", unit.key)
        try:
            if failed_deps:
                raise RuntimeError(f"dependency failed: {', '.join(failed_deps)}")
            run_unit(unit)
        except Interrupted:
            raise
        except Exception as exc:  # a failed unit is recorded, the run goes on
            log.error("%s failed: %s: %s", unit.key, type(exc).__name__, exc)
            try:
                store.write_error(unit.key, exc)
            except OSError as unrecorded:  # e.g. the disk is still full: units waiting for it would wait forever
                log.error("%s: the failure could not be recorded either (%s); stopping this launch", unit.key,
                          unrecorded)
                stop.reason = stop.reason or f"the failure of {unit.key} could not be recorded"
            journal.event("error", unit.key, phase=unit.phase, seconds=time.monotonic() - t0)
            outcome.failed.append(unit.key)
            return
        seconds = time.monotonic() - t0
        journal.event("done", unit.key, phase=unit.phase, seconds=seconds)
        log.info("done %s in %s", unit.key, format_seconds(seconds))
        outcome.done.append(unit.key)


def wait_all(comm: Any) -> None:
    """Non-blocking barrier: ranks that arrive early wait here without spinning a core.

    MPICH's blocking collectives poll at full speed until the last rank arrives (mostly in
    sched_yield: a rank waiting 4 s in a ``bcast`` burns 4 CPU-seconds, measured), so ranks that
    may arrive seconds apart meet here first, testing a non-blocking barrier between short sleeps.
    """
    if isinstance(comm, SelfComm) or comm.size == 1:
        return
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(WAIT_POLL_SECONDS)


def quiet_bcast(comm: Any, obj: Any, root: int = 0) -> Any:
    """``comm.bcast`` after :func:`wait_all`: for a value one rank computes while the others wait."""
    wait_all(comm)
    return comm.bcast(obj, root=root)


def combine_exit_codes(comm: Any, code: int) -> int:
    """The job's exit code from every rank's: resubmit beats failed beats ok."""
    rank_of = {EXIT_OK: 0, EXIT_FAILED: 1, EXIT_RESUBMIT: 2}
    worst = comm.allreduce(rank_of.get(code, 1), op=_max_op(comm))
    return {v: k for k, v in rank_of.items()}[worst]


def _max_op(comm: Any) -> Any:
    if isinstance(comm, SelfComm):
        return None
    from mpi4py import MPI

    return MPI.MAX
