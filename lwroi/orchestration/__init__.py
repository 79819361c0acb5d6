"""Turning a config into work units and running them on one process, MPI ranks, or array shards."""

from lwroi.orchestration.plan import PHASES, Unit, build_plan, shard_units
from lwroi.orchestration.results import ResultStore

__all__ = ["PHASES", "ResultStore", "Unit", "build_plan", "shard_units"]
