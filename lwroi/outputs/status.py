"""``lwroi status``: per phase, how many units are done, running, pending or failed, and an ETA.

Reads only the run directory (records, journal, heartbeat markers), so it works from a
login node while the job runs, without MPI. It verifies what it reports: a unit counts as
done only when its record and arrays pass their checksums, and as running only while the
process that marked it can be alive. It changes nothing (an invalid record is left for the
run to move aside).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from lwroi.orchestration.journal import read_journal, running_markers
from lwroi.orchestration.plan import PHASES, Unit
from lwroi.orchestration.progress import format_seconds
from lwroi.orchestration.results import ResultStore


@dataclass
class PhaseStatus:
    """Unit counts of one model's phase and the estimated time left."""

    model: str
    phase: str
    done: int = 0
    running: int = 0
    pending: int = 0
    failed: int = 0
    eta_seconds: float | None = None

    @property
    def total(self) -> int:
        return self.done + self.running + self.pending + self.failed


def run_status(store: ResultStore, units: list[Unit]) -> list[PhaseStatus]:
    """Classify every unit of the plan; ETA = mean time of finished units × units left / busy ranks.

    A unit whose record fails its checksums is pending: the next launch computes it again.
    """
    markers = running_markers(store.run_dir)
    events = read_journal(store.run_dir)
    durations: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.get("event") == "done" and "seconds" in e:
            durations[e.get("phase", "")].append(float(e["seconds"]))
    busy_ranks = max(1, len({(m["launch"], m["rank"]) for m in markers.values() if not m["stale"]}))
    models = list(dict.fromkeys(u.model for u in units))
    by_phase = {(m, p): PhaseStatus(m, p) for m in models for p in PHASES}
    for unit in units:
        status = by_phase[unit.model, unit.phase]
        record = store.read(unit.key, quarantine=False)
        if record is not None:
            if record.status == "ok":
                status.done += 1
            else:
                status.failed += 1
        elif unit.key in markers and not markers[unit.key]["stale"]:
            status.running += 1
        else:
            status.pending += 1
    for (_, phase), status in by_phase.items():
        left = status.pending + status.running
        if durations[phase] and left:
            status.eta_seconds = float(np.mean(durations[phase])) * left / busy_ranks
        elif not left:
            status.eta_seconds = 0.0
    return [s for s in by_phase.values() if s.total]


def format_status(rows: list[PhaseStatus]) -> str:
    """A fixed-width table, one line per model and phase."""
    width = max([len("model"), *(len(r.model) for r in rows)]) + 2
    lines = [f"{'model':<{width}}{'phase':<10}{'done':>7}{'running':>9}{'pending':>9}{'failed':>8}{'total':>7}  eta"]
    for r in rows:
        eta = "?" if r.eta_seconds is None else format_seconds(r.eta_seconds)
        lines.append(f"{r.model:<{width}}{r.phase:<10}{r.done:>7}{r.running:>9}{r.pending:>9}{r.failed:>8}"
                     f"{r.total:>7}  {eta}")
    return "\n".join(lines)
