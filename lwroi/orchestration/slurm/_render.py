"""The chain as a bash script that submits it: what ``lwroi submit --dry-run`` prints."""

from __future__ import annotations

import shlex

from lwroi.orchestration.slurm._chain import Arg, Chain, JobRef, JobSpec


def _shell_word(arg: Arg) -> str:
    """One shell word; an earlier job's ID is the variable ``<job>_job`` that its own line set."""
    if isinstance(arg, JobRef):
        return (shlex.quote(arg.prefix) if arg.prefix else "") + f'"${arg.job}_job"'
    return shlex.quote(arg)


def _job_lines(job: JobSpec) -> str:
    """The submission of ``job`` as shell lines that set ``<name>_job`` to the job ID."""
    lines = ["sbatch --parsable", *map(_shell_word, job.options), shlex.quote(str(job.script)),
             " ".join(map(_shell_word, job.args))]
    return f"{job.name}_job=$(" + " \\\n    ".join(lines) + f")\n{job.name}_job=${{{job.name}_job%%;*}}"


def render_chain(chain: Chain) -> str:
    """The chain as a bash script that submits it (what ``lwroi submit --dry-run`` prints)."""
    head = [
        "#!/bin/bash",
        f"# The lwroi job chain for {chain.config_path}: run directory {chain.run_dir}, logs in {chain.log_dir}.",
        "# Printed by `lwroi submit --dry-run`; `lwroi submit` also creates the run directory and log folder.",
        "set -euo pipefail",
    ]
    names = [job.name for job in chain.jobs]
    tail = "echo " + " ".join(f'"{n}=${n}_job"' for n in names)
    return "\n".join([*head, *map(_job_lines, chain.jobs), tail]) + "\n"
