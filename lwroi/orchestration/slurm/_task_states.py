"""The array tasks' states, from ``sacct`` (accounting) or ``scontrol show job --oneliner``, for the reduce job.

The reduce job asks ``sacct`` first: the controller forgets a finished job ``MinJobAge`` seconds
after it ended (300 by default), so on a busy cluster ``scontrol`` may no longer know the first
tasks of a long array. Without accounting it falls back to ``scontrol``. Either way Slurm's
word is second to the run's own records: :func:`describe_unfinished_tasks` counts a task whose
units are all recorded done as done, whatever state Slurm gives it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskState:
    """One array task's state as ``sacct`` or ``scontrol show job`` reports it."""

    job_id: str
    task: str
    """``ArrayTaskId``: one index, or a range of tasks still pending together (``2-5``)."""
    state: str
    exit_code: str
    """``code:signal``, e.g. ``1:0`` (exited 1) or ``0:15`` (killed by SIGTERM)."""
    restarts: int
    reason: str

    @property
    def n_tasks(self) -> int:
        """How many tasks the record stands for (``0-3%2`` → 4)."""
        spec = self.task.split("%")[0]
        return sum(int(b or a) - int(a) + 1 for a, b in re.findall(r"(\d+)(?:-(\d+))?", spec)) or 1


_FIELD = re.compile(r"(?:^|\s)(JobId|ArrayTaskId|JobState|ExitCode|Restarts|Reason)=(\S*)")
SACCT_FORMAT = "JobID,JobIDRaw,State,ExitCode,Reason"
"""The ``sacct --parsable2 --format`` the reduce job asks for (with its header line)."""


def _by_task(states: list[TaskState]) -> list[TaskState]:
    first = lambda s: int(re.match(r"\d*", s.task).group() or -1)  # noqa: E731 - local sort key
    return sorted(states, key=first)


def _parse_scontrol(text: str) -> list[TaskState]:
    out = []
    for line in text.splitlines():
        found = dict(_FIELD.findall(line))
        if "ArrayTaskId" not in found:
            continue
        out.append(TaskState(found.get("JobId", "?"), found["ArrayTaskId"], found.get("JobState", "?"),
                             found.get("ExitCode", "?"), int(found.get("Restarts", "0") or 0),
                             found.get("Reason", "")))
    return out


def _parse_sacct(lines: list[str]) -> list[TaskState]:
    """``sacct --allocations --duplicates --parsable2 --format=SACCT_FORMAT`` rows (header first).

    Array tasks are ``ARRAY_TASK`` (pending ones together: ``ARRAY_[4-6%2]``); with
    ``--duplicates`` a requeued task has an earlier ``REQUEUED`` row per requeue, which counts
    as a restart; the last other row is its state. ``CANCELLED by 0`` is ``CANCELLED``.
    """
    header = lines[0].split("|")
    rows: dict[str, list[dict[str, str]]] = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split("|"), strict=False))
        found = re.fullmatch(r"\d+_\[?([^\]]+)\]?", row.get("JobID", ""))
        if found:
            rows.setdefault(found[1], []).append(row)
    out = []
    for task, entries in rows.items():
        requeued = sum(1 for e in entries if e.get("State", "").startswith("REQUEUED"))
        last = ([e for e in entries if not e.get("State", "").startswith("REQUEUED")] or entries)[-1]
        state = (last.get("State") or "?").split()[0]
        out.append(TaskState(last.get("JobIDRaw") or "?", task, state, last.get("ExitCode") or "?", requeued,
                             last.get("Reason", "")))
    return out


def parse_task_states(text: str) -> list[TaskState]:
    """The array tasks in ``sacct --parsable2`` or ``scontrol show job --oneliner`` output, ordered by task.

    ``sacct`` output is told apart by its header line (``JobID|...``).
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("JobID|"):
        return _by_task(_parse_sacct(lines))
    return _by_task(_parse_scontrol(text))


def describe_unfinished_tasks(states: Sequence[TaskState],
                              recorded_done: Callable[[TaskState], bool] = lambda s: False) -> list[str]:
    """One line per array task that did not end COMPLETED, for the reduce job's log.

    ``recorded_done(state)`` says whether the run's own records hold every unit of that task;
    such a task is done whatever Slurm says, and its line says so.
    """
    lines = []
    for s in states:
        if s.state == "COMPLETED":
            continue
        why = f", reason {s.reason}" if s.reason not in ("", "None") else ""
        again = f", requeued {s.restarts}x" if s.restarts else ""
        tasks = "tasks" if s.n_tasks > 1 else "task"
        done = ("; all its units are recorded done, so it counts as done" if recorded_done(s) else "")
        lines.append(f"array {tasks} {s.task} (job {s.job_id}): {s.state}, exit code {s.exit_code}{why}{again}{done}")
    return lines
