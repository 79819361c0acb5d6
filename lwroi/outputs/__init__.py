"""What a run leaves for people: summary tables and status views."""

from lwroi.outputs.status import format_status, run_status
from lwroi.outputs.summary import reduce_run, write_tables

__all__ = ["format_status", "reduce_run", "run_status", "write_tables"]
