"""The Slurm job chain of a run: extract → array of plan shards → reduce, as sbatch command lines.

``lwroi submit`` reads the site's settings (``slurm/site.env``, :mod:`._site`), builds the chain
from a config (:mod:`._chain`), submits it with ``sbatch --parsable`` and prints the job IDs
(:mod:`._submit`); ``--dry-run`` prints it as a shell script instead (:mod:`._render`). The reduce
job reads the array tasks' states from ``sacct``, else ``scontrol`` (:mod:`._task_states`); ``lwroi submit``
checks every job with ``sbatch --test-only`` first, and ``--check`` checks the site file alone. Everything that varies
by site lives in the site file; the batch scripts beside it stay thin (they only launch the step,
forward signals and requeue).

The chain:

1. ``lwroi-extract.sbatch``: ``lwroi extract CONFIG`` with R ranks (left out when the run's
   feature store is already done).
2. ``lwroi-array.sbatch``, ``afterok`` on 1: array task i runs ``lwroi fit CONFIG --shard i/N``
   with R ranks, each in ``apptainer exec`` under ``srun --mpi=pmi2``, one GPU per rank. The
   array indices are the shard numbers, so a subset (``--tasks 1,3``) resumes those shards.
3. ``lwroi-reduce.sbatch``, ``afterany`` on 2 (``afterok`` would never fire if a task
   failed): ``lwroi summarize RUN_DIR``, given the tasks' states from ``sacct`` (else ``scontrol``)
   so it can say which tasks did not complete (a task whose units are all recorded done is done).
"""

from lwroi.orchestration.slurm._chain import (
    LOG_DIR,
    Chain,
    JobRef,
    JobSpec,
    bind_paths,
    build_chain,
    features_done,
    parse_tasks,
)
from lwroi.orchestration.slurm._render import render_chain
from lwroi.orchestration.slurm._site import SCRIPTS, SiteSettings, read_site
from lwroi.orchestration.slurm._submit import Check, SubmitError, check_site, parse_job_id, probe_job, submit_chain
from lwroi.orchestration.slurm._task_states import TaskState, describe_unfinished_tasks, parse_task_states

__all__ = [
    "LOG_DIR",
    "SCRIPTS",
    "Chain",
    "Check",
    "JobRef",
    "JobSpec",
    "SiteSettings",
    "SubmitError",
    "TaskState",
    "bind_paths",
    "build_chain",
    "check_site",
    "describe_unfinished_tasks",
    "features_done",
    "parse_job_id",
    "parse_task_states",
    "parse_tasks",
    "probe_job",
    "read_site",
    "render_chain",
    "submit_chain",
]
