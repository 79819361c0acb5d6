"""Submitting a chain: ``sbatch --parsable`` job by job, cancelling the submitted ones if one is refused."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from lwroi.config import Config
from lwroi.exceptions import LwroiError
from lwroi.orchestration.rundir import prepare_run_dir
from lwroi.orchestration.slurm._chain import Chain


class SubmitError(LwroiError, RuntimeError):
    """sbatch refused a job of the chain (the jobs already submitted are cancelled)."""


def parse_job_id(stdout: str) -> str:
    """The job ID from ``sbatch --parsable`` output (``ID`` or ``ID;CLUSTER``)."""
    text = stdout.strip().split(";")[0]
    if not text.isdigit():
        raise SubmitError(f"sbatch --parsable printed {stdout.strip()!r}, not a job ID")
    return text


def submit_chain(chain: Chain, cfg: Config) -> dict[str, str]:
    """Create the run directory and log folder, then submit every job of the chain in order.

    Returns the job IDs by job name. If sbatch refuses a job, the jobs already submitted are
    cancelled (so no half chain is left waiting) and :class:`SubmitError` says why.

    Raises
    ------
    ConfigMismatchError
        The run directory belongs to another config (from :func:`prepare_run_dir`).
    SubmitError
        sbatch is missing or refused a job; the image or a bound folder does not exist.
    """
    if shutil.which("sbatch") is None:
        raise SubmitError("sbatch not found on PATH: run `lwroi submit` where Slurm's commands are (a login node)")
    if not chain.image.is_file():
        raise SubmitError(f"image not found: {chain.image} (build it as in containers/README.md, "
                          "then set LWROI_IMAGE in site.env or pass --image)")
    prepare_run_dir(replace(cfg, run=replace(cfg.run, output_dir=str(chain.run_dir))))
    for folder in chain.ensure_dirs:
        folder.mkdir(parents=True, exist_ok=True)
    missing = [b for b in chain.binds if not Path(b.split(":")[0]).exists()]
    if missing:
        raise SubmitError(f"bind path(s) not found on this host: {', '.join(missing)}")
    job_ids: dict[str, str] = {}
    for job in chain.jobs:
        proc = subprocess.run(job.argv(job_ids), capture_output=True, text=True)
        if proc.returncode != 0:
            cancelled = ""
            if job_ids:
                subprocess.run(["scancel", *job_ids.values()], capture_output=True)
                cancelled = f"; cancelled the jobs already submitted ({', '.join(job_ids.values())})"
            raise SubmitError(f"sbatch refused the {job.name} job (exit {proc.returncode}): "
                              f"{proc.stderr.strip() or proc.stdout.strip()}{cancelled}")
        job_ids[job.name] = parse_job_id(proc.stdout)
    return job_ids
