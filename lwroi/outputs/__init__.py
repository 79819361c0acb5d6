"""What a run leaves for people: summary tables and status views."""

from lwroi.outputs.export import collect_submission, write_submission
from lwroi.outputs.status import format_status, run_status
from lwroi.outputs.summary import reduce_run, write_tables

__all__ = ["collect_submission", "format_status", "reduce_run", "run_status", "write_submission", "write_tables"]
