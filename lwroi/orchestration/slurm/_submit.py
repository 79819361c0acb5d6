"""Submitting a chain (each job checked first), and ``lwroi submit --check``: the site file against the cluster.

:func:`submit_chain` runs ``sbatch --test-only`` on every job, then ``sbatch --parsable`` job by
job, cancelling the submitted ones if one is refused.

A request no node can meet (8 CPUs per rank on 2-CPU nodes) is accepted by many sites' sbatch and then
pends forever with ``Reason=PartitionConfig``; asking the scheduler first (``--test-only``) and
comparing with the partition's nodes (``sinfo``) refuses it up front, naming the site setting.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lwroi.config import Config
from lwroi.exceptions import LwroiError
from lwroi.orchestration.rundir import prepare_run_dir
from lwroi.orchestration.slurm._chain import Chain, JobRef, JobSpec
from lwroi.orchestration.slurm._site import SiteSettings

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]
"""Runs a command and returns its completed process (tests pass a fake)."""


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(list(argv), 127, "", str(exc))


class SubmitError(LwroiError, RuntimeError):
    """sbatch refused a job of the chain (the jobs already submitted are cancelled)."""


def parse_job_id(stdout: str) -> str:
    """The job ID from ``sbatch --parsable`` output (``ID`` or ``ID;CLUSTER``)."""
    text = stdout.strip().split(";")[0]
    if not text.isdigit():
        raise SubmitError(f"sbatch --parsable printed {stdout.strip()!r}, not a job ID")
    return text


def submit_chain(chain: Chain, cfg: Config, site: SiteSettings) -> dict[str, str]:
    """Check every job with ``sbatch --test-only``, create the run directory and log folder, then submit in order.

    Returns the job IDs by job name. If sbatch refuses a job, the jobs already submitted are
    cancelled (so no half chain is left waiting) and :class:`SubmitError` says why.

    Raises
    ------
    ConfigMismatchError
        The run directory belongs to another config (from :func:`prepare_run_dir`).
    SubmitError
        sbatch is missing, refused a job, or says a job could never run (:func:`probe_job`; then
        nothing is submitted or created); the image or a bound folder does not exist.
    """
    if shutil.which("sbatch") is None:
        raise SubmitError("sbatch not found on PATH: run `lwroi submit` where Slurm's commands are (a login node)")
    if not chain.image.is_file():
        raise SubmitError(f"image not found: {chain.image} (build it as in containers/README.md, "
                          "then set LWROI_IMAGE in site.env or pass --image)")
    refused = [problem for job in chain.jobs if (problem := probe_job(job, site))]
    if refused:
        raise SubmitError("the cluster cannot run this chain; nothing was submitted:\n  - " + "\n  - ".join(refused))
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


def _option(argv: Sequence[str], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.startswith(f"{name}=")), None)


def _node_cpus(site: SiteSettings, run: Runner) -> int | None:
    """The most CPUs a node of the site's partition (or the default one) has, from ``sinfo``; None: unknown."""
    proc = run(["sinfo", "--noheader", *([f"--partition={site.partition}"] if site.partition else []),
                "--format=%c %P"])
    counts = [int(m[1]) for line in proc.stdout.splitlines() if (m := re.match(r"\s*(\d+)\+?\s+(\S+)", line))
              and (site.partition or m[2].endswith("*"))]
    return max(counts) if proc.returncode == 0 and counts else None


def _request(job: JobSpec, site: SiteSettings) -> str:
    """The site settings that size a job, as the site file writes them."""
    argv = [a for a in job.options if isinstance(a, str)]
    ranks = _option(argv, "--ntasks")
    if ranks is None:  # the reduce job: one task, its own time
        return f"LWROI_TIME_REDUCE={site.time_reduce}"
    parts = [f"LWROI_NODES={site.nodes}", f"LWROI_RANKS_PER_TASK={ranks} (or --ranks-per-task)",
             f"LWROI_CPUS_PER_RANK={site.cpus_per_rank}", f"LWROI_GPUS_PER_RANK={site.gpus_per_rank}"]
    if site.mem_per_cpu:
        parts.append(f"LWROI_MEM_PER_CPU={site.mem_per_cpu}")
    parts.append(f"LWROI_TIME_{'EXTRACT' if job.name.startswith('extract') else 'FIT'}={_option(argv, '--time')}")
    if site.partition:
        parts.append(f"LWROI_PARTITION={site.partition}")
    return ", ".join(parts)


def probe_job(job: JobSpec, site: SiteSettings, run: Runner = _run) -> str | None:
    """Why the cluster could never run ``job``, or None: ``sinfo`` against its CPUs, then ``sbatch --test-only``.

    The message names the site setting to change (``LWROI_CPUS_PER_RANK`` when a rank asks for more
    CPUs than any node has, ``LWROI_RANKS_PER_TASK``/``LWROI_NODES`` when the ranks do not fit the
    nodes) and what sbatch said. Dependencies on earlier jobs are left out of the test.
    """
    argv = [a for a in job.options if isinstance(a, str)]
    node_cpus = _node_cpus(site, run)
    ranks = int(_option(argv, "--ntasks") or 1)
    cpus = int(_option(argv, "--cpus-per-task") or 1)
    where = f"partition {site.partition}" if site.partition else "the default partition"
    if node_cpus is not None and cpus > node_cpus:
        return (f"the {job.name} job: LWROI_CPUS_PER_RANK={cpus} asks for more CPUs per rank than any node of "
                f"{where} has ({node_cpus}); lower it in the site file")
    if node_cpus is not None and ranks * cpus > site.nodes * node_cpus:
        return (f"the {job.name} job: {ranks} rank(s) x {cpus} CPU(s) do not fit on LWROI_NODES={site.nodes} node(s) "
                f"of {node_cpus} CPUs ({where}); lower LWROI_RANKS_PER_TASK (or --ranks-per-task) or "
                "LWROI_CPUS_PER_RANK, or raise LWROI_NODES")
    test = ["sbatch", "--test-only", *argv, str(job.script),
            *("0" if isinstance(a, JobRef) else a for a in job.args)]
    proc = run(test)
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip()).replace("\n", " ")
        return f"the {job.name} job cannot run as asked ({_request(job, site)}): sbatch --test-only: {said}"
    return None


@dataclass(frozen=True)
class Check:
    """One line of ``lwroi submit --check``."""

    what: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.what}: {self.detail}"


def check_site(chain: Chain, site: SiteSettings, run: Runner = _run) -> list[Check]:
    """The site file against the cluster, submitting nothing: what ``lwroi submit --check`` prints.

    Slurm's commands, the partition (``sinfo``), every job of the chain (:func:`probe_job`:
    ``sbatch --test-only``), apptainer and the image, and srun's PMI (``srun --mpi=list``).
    """
    checks = []
    missing = [c for c in ("sbatch", "sinfo", "srun") if shutil.which(c) is None]
    checks.append(Check("Slurm commands", not missing,
                        f"not on PATH: {', '.join(missing)} (run on a login node)" if missing
                        else "sbatch, sinfo, srun found"))
    if missing:
        return checks
    part = run(["sinfo", "--noheader", "--format=%P", *([f"--partition={site.partition}"] if site.partition else [])])
    names = [p.strip() for p in part.stdout.split()]
    if site.partition:
        ok = part.returncode == 0 and any(p.rstrip("*") == site.partition for p in names)
        detail = f"LWROI_PARTITION={site.partition} " + (
            "exists" if ok else "not found by sinfo (`sinfo -s` lists them)")
    else:
        default = [p.rstrip("*") for p in names if p.endswith("*")]
        ok = bool(default)
        detail = (f"LWROI_PARTITION empty: the default partition {default[0]}" if ok
                  else "LWROI_PARTITION empty and the cluster has no default partition: set it")
    checks.append(Check("partition", ok, detail))
    for job in chain.jobs:
        problem = probe_job(job, site, run)
        checks.append(Check(f"{job.name} job fits", problem is None,
                            problem or "sbatch --test-only accepts it (" + _request(job, site) + ")"))
    apptainer = shutil.which(site.apptainer)
    checks.append(Check("apptainer", apptainer is not None,
                        f"LWROI_APPTAINER={site.apptainer}: " + (apptainer or "not on PATH here (check the compute "
                                                                              "nodes too, or `module load` it)")))
    checks.append(Check("image", chain.image.is_file(),
                        str(chain.image) + ("" if chain.image.is_file() else " not found (LWROI_IMAGE or --image)")))
    mpi = run(["srun", "--mpi=list"])
    plugins = set(re.findall(r"\b(pmi2|pmix\S*|cray_shasta|none)\b", mpi.stdout + mpi.stderr))
    ok = site.srun_mpi in plugins
    checks.append(Check("srun PMI", ok, f"LWROI_SRUN_MPI={site.srun_mpi} " + (
        "is offered by srun --mpi=list" if ok else f"is not in srun --mpi=list ({', '.join(sorted(plugins)) or '?'})")))
    return checks
