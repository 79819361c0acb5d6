"""The array tasks' states from ``scontrol show job --oneliner``, for the reduce job to report."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskState:
    """One array task's state as ``scontrol show job`` reports it."""

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


def parse_task_states(text: str) -> list[TaskState]:
    """The array tasks in ``scontrol show job --oneliner ARRAY_JOB`` output, ordered by task."""
    out = []
    for line in text.splitlines():
        found = dict(_FIELD.findall(line))
        if "ArrayTaskId" not in found:
            continue
        out.append(TaskState(found.get("JobId", "?"), found["ArrayTaskId"], found.get("JobState", "?"),
                             found.get("ExitCode", "?"), int(found.get("Restarts", "0") or 0),
                             found.get("Reason", "")))
    first = lambda s: int(re.match(r"\d*", s.task).group() or -1)  # noqa: E731 - local sort key
    return sorted(out, key=first)


def describe_unfinished_tasks(states: Sequence[TaskState]) -> list[str]:
    """One line per array task that did not end COMPLETED, for the reduce job's log."""
    lines = []
    for s in states:
        if s.state == "COMPLETED":
            continue
        why = f", reason {s.reason}" if s.reason not in ("", "None") else ""
        again = f", requeued {s.restarts}x" if s.restarts else ""
        tasks = "tasks" if s.n_tasks > 1 else "task"
        lines.append(f"array {tasks} {s.task} (job {s.job_id}): {s.state}, exit code {s.exit_code}{why}{again}")
    return lines
