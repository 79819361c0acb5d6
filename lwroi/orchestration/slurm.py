"""The Slurm job chain of a run: extract → array of plan shards → reduce, as sbatch command lines.

``lwroi submit`` builds the chain from a config and the site's settings (``slurm/site.env``),
submits it with ``sbatch --parsable`` and prints the job IDs; ``--dry-run`` prints it as a
shell script instead. Everything that varies by site lives in that one file; the batch
scripts beside it stay thin (they only launch the step, forward signals and requeue).

The chain:

1. ``lwroi-extract.sbatch``: ``lwroi extract CONFIG`` with R ranks (left out when the run's
   feature store is already done).
2. ``lwroi-array.sbatch``, ``afterok`` on 1: array task i runs ``lwroi fit CONFIG --shard i/N``
   with R ranks, each in ``apptainer exec`` under ``srun --mpi=pmi2``, one GPU per rank. The
   array indices are the shard numbers, so a subset (``--tasks 1,3``) resumes those shards.
3. ``lwroi-reduce.sbatch``, ``afterany`` on 2 (``afterok`` would never fire if a task
   failed): ``lwroi summarize RUN_DIR``, given the tasks' states from ``scontrol`` so it can
   say which tasks did not complete.
"""

from __future__ import annotations

import re
import shlex
import shutil
import string
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

from lwroi.config import Config
from lwroi.exceptions import ConfigError, LwroiError
from lwroi.orchestration.results import ResultStore
from lwroi.orchestration.rundir import prepare_run_dir

SCRIPTS = {"extract": "lwroi-extract.sbatch", "array": "lwroi-array.sbatch", "reduce": "lwroi-reduce.sbatch"}
LOG_DIR = "slurm"
"""Folder of the run directory that holds the jobs' Slurm logs."""


class SubmitError(LwroiError, RuntimeError):
    """sbatch refused a job of the chain (the jobs already submitted are cancelled)."""


@dataclass(frozen=True)
class SiteSettings:
    """A site's Slurm and container settings: the keys of ``slurm/site.env`` (``LWROI_<FIELD>``).

    Defaults apply to keys the file leaves out; ``slurm/site.env`` documents each key.
    """

    partition: str = ""
    account: str = ""
    sbatch_flags: tuple[str, ...] = ()
    shards: int = 4
    ranks_per_task: int = 2
    array_max_running: int = 0
    gpus_per_rank: int = 1
    cpus_per_rank: int = 8
    mem_per_cpu: str = ""
    time_extract: str = "02:00:00"
    time_fit: str = "08:00:00"
    time_reduce: str = "00:30:00"
    signal_seconds: int = 300
    max_requeues: int = 3
    image: str = ""
    bind: tuple[str, ...] = ()
    apptainer_flags: tuple[str, ...] = ("--nv",)
    apptainer: str = "apptainer"
    srun_mpi: str = "pmi2"
    srun_flags: tuple[str, ...] = ()
    scripts_dir: Path = Path("slurm")
    """Folder holding the ``lwroi-*.sbatch`` scripts: the folder of the site file."""


_MINIMUM = {"shards": 1, "ranks_per_task": 1, "array_max_running": 0, "gpus_per_rank": 0, "cpus_per_rank": 1,
            "signal_seconds": 0, "max_requeues": 0}
_SITE_FIELDS = {f"LWROI_{f.name.upper()}": f for f in fields(SiteSettings) if f.name != "scripts_dir"}


def _expand(value: str, env: Mapping[str, str], where: str) -> str:
    """``~``, ``$VAR`` and ``${VAR}`` from ``env``; an unset variable is an error, not an empty string."""
    if value == "~" or value.startswith("~/"):
        value = "${HOME}" + value[1:]
    try:
        return string.Template(value).substitute(env)
    except KeyError as exc:
        raise ConfigError(f"{where}: ${exc.args[0]} is not set in the environment") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc} (write $$ for a literal $)") from None


def read_site(path: str | Path, env: Mapping[str, str]) -> SiteSettings:
    """Read a ``site.env`` file: ``KEY=VALUE`` lines, shell quoting and ``#`` comments.

    Values are expanded from ``env`` (the submitting shell's environment). The batch scripts
    are taken from the file's folder, so a site copies the ``slurm/`` folder and edits its copy.

    Raises
    ------
    ConfigError
        The file or a script is missing, a line is not ``KEY=VALUE``, a key is unknown, or a
        value has the wrong type or range (the message names the file, line and key).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: site settings file not found (see slurm/site.env)") from None
    values: dict[str, object] = {}
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{path}:{number}"
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}: {line.strip()!r}") from None
        if not words:
            continue
        if len(words) != 1 or "=" not in words[0]:
            raise ConfigError(f"{where}: expected KEY=VALUE (quote values with spaces), got {line.strip()!r}")
        key, value = words[0].split("=", 1)
        if key not in _SITE_FIELDS:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(_SITE_FIELDS)}")
        where = f"{where}: {key}"
        value = _expand(value, env, where)
        name = _SITE_FIELDS[key].name
        default = getattr(SiteSettings, name)
        if isinstance(default, int):
            try:
                number_value = int(value)
            except ValueError:
                raise ConfigError(f"{where} = {value!r}: expected an integer") from None
            if number_value < _MINIMUM[name]:
                raise ConfigError(f"{where} = {number_value}: must be >= {_MINIMUM[name]}")
            values[name] = number_value
        elif name == "bind":
            values[name] = tuple(p.strip() for p in value.split(",") if p.strip())
        elif isinstance(default, tuple):
            values[name] = tuple(shlex.split(value))
        else:
            values[name] = value
    scripts_dir = path.absolute().parent
    missing = [name for name in SCRIPTS.values() if not (scripts_dir / name).is_file()]
    if missing:
        raise ConfigError(f"{path}: the batch scripts beside it are missing: {', '.join(missing)} "
                          f"(copy them from lwroi's slurm/ folder into {scripts_dir})")
    return SiteSettings(**values, scripts_dir=scripts_dir)


@dataclass(frozen=True)
class JobRef:
    """An argument holding the ID of an earlier job of the chain, known only once that job is submitted."""

    job: str
    prefix: str = ""


Arg = str | JobRef


def _shell_word(arg: Arg) -> str:
    if isinstance(arg, JobRef):
        return (shlex.quote(arg.prefix) if arg.prefix else "") + f'"${arg.job}_job"'
    return shlex.quote(arg)


@dataclass(frozen=True)
class JobSpec:
    """One ``sbatch`` submission: its options, batch script and the script's arguments."""

    name: str
    options: tuple[Arg, ...]
    script: Path
    args: tuple[Arg, ...]
    summary: str
    """One line for people: what the job runs and what it waits for."""

    def argv(self, job_ids: Mapping[str, str]) -> list[str]:
        """The ``sbatch --parsable ...`` command line, with earlier jobs' IDs filled in."""
        def fill(arg: Arg) -> str:
            return arg.prefix + job_ids[arg.job] if isinstance(arg, JobRef) else arg

        return ["sbatch", "--parsable", *map(fill, self.options), str(self.script), *map(fill, self.args)]

    def shell(self) -> str:
        """The submission as a line of a shell script that sets ``<name>_job`` to the job ID."""
        lines = ["sbatch --parsable", *map(_shell_word, self.options), shlex.quote(str(self.script)),
                 " ".join(map(_shell_word, self.args))]
        return f"{self.name}_job=$(" + " \\\n    ".join(lines) + f")\n{self.name}_job=${{{self.name}_job%%;*}}"


@dataclass(frozen=True)
class Chain:
    """The jobs of one submission, in submission order, and where they write."""

    jobs: tuple[JobSpec, ...]
    run_dir: Path
    log_dir: Path
    workdir: Path
    binds: tuple[str, ...]
    image: Path
    config_path: Path
    ensure_dirs: tuple[Path, ...] = ()
    """Folders to create before submitting (bind sources and the log folder must exist)."""


def _absolute(path: str | Path, workdir: Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else workdir / path


def _log_pattern(log_dir: Path, name: str) -> str:
    """``--output=log_dir/name``: ``%j``, ``%A``, ``%a`` in ``name`` are Slurm's; a ``%`` in ``log_dir`` is doubled."""
    return "--output=" + str(log_dir).replace("%", "%%") + "/" + name


def bind_paths(cfg: Config, config_path: Path, workdir: Path, extra: Sequence[str]) -> tuple[str, ...]:
    """Host paths the jobs need inside the container, each mounted at the same path.

    The working directory (relative config paths resolve against it), the config's folder,
    the data, the feature store and the run directory, minus those already inside another
    bound folder; then the site's own ``LWROI_BIND`` entries, verbatim. A weights file is not
    bound: it is baked into the image or lies in one of these folders (or in ``LWROI_BIND``).

    Raises
    ------
    ConfigError
        A path holds ``,`` or ``:``, which apptainer's ``--bind`` cannot express.
    """
    wanted = [workdir, config_path.parent, _absolute(cfg.data.root, workdir),
              _absolute(cfg.features.store_dir, workdir), _absolute(cfg.run.output_dir, workdir)]
    unique = list(dict.fromkeys(wanted))
    kept = [p for p in unique if not any(q in p.parents for q in unique)]
    for path in kept:
        if set(str(path)) & {",", ":"}:
            raise ConfigError(f"apptainer cannot bind a path containing ',' or ':': {path} "
                              "(rename it, or reach it through a symlink without them)")
    return (*map(str, kept), *extra)


def parse_tasks(text: str, shards: int) -> tuple[int, ...]:
    """``1,3-5`` → (1, 3, 4, 5): array tasks (shard numbers), each in 0..shards-1."""
    tasks: set[int] = set()
    for part in text.split(","):
        found = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not found:
            raise ConfigError(f"--tasks {text!r}: expected shard numbers like 1,3 or 0-2")
        tasks.update(range(int(found[1]), int(found[2] or found[1]) + 1))
    bad = sorted(t for t in tasks if not 0 <= t < shards)
    if not tasks or bad:
        raise ConfigError(f"--tasks {text!r}: tasks must be in 0..{shards - 1} (the shards of --shards {shards})")
    return tuple(sorted(tasks))


def _array_spec(tasks: Sequence[int], max_running: int) -> str:
    """Compact sbatch --array spec: ``0-3``, ``1,3``, with ``%N`` to limit running tasks."""
    runs: list[list[int]] = []
    for t in tasks:
        if runs and t == runs[-1][1] + 1:
            runs[-1][1] = t
        else:
            runs.append([t, t])
    spec = ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)
    return f"{spec}%{max_running}" if max_running else spec


def build_chain(cfg: Config, site: SiteSettings, *, config_path: Path, overrides: Sequence[str], workdir: Path,
                image: Path, shards: int, ranks_per_task: int, tasks: Sequence[int] | None = None,
                extract: bool = True) -> Chain:
    """The sbatch submissions of the chain for ``cfg`` (no side effects: see :func:`submit_chain`).

    Parameters
    ----------
    config_path : Path
        The config file as given; the jobs get its absolute path.
    overrides : sequence of str
        ``KEY=VALUE`` overrides, passed on to every job as ``--set``.
    workdir : Path
        Absolute working directory of the jobs (``sbatch --chdir``), where relative config
        paths resolve.
    tasks : sequence of int, optional
        Array tasks (shard numbers) to submit; default all ``range(shards)``.
    extract : bool, default=True
        Submit the extract job first (left out when the feature store is done).
    """
    for name, value in (("shards", shards), ("ranks per task", ranks_per_task)):
        if value < 1:
            raise ConfigError(f"{name} = {value}: must be >= 1")
    workdir = Path(workdir)
    config_path = _absolute(config_path, workdir)
    image = _absolute(image, workdir)
    run_dir = _absolute(cfg.run.output_dir, workdir)
    log_dir = run_dir / LOG_DIR
    binds = bind_paths(cfg, config_path, workdir, site.bind)
    tasks = tuple(range(shards)) if tasks is None else tuple(tasks)

    container = [site.apptainer, "exec", *site.apptainer_flags]
    for path in binds:
        container += ["--bind", path]
    container.append(str(image))
    lwroi_args = [str(config_path)]
    for item in overrides:
        lwroi_args += ["--set", item]
    step = [f"--mpi={site.srun_mpi}", *site.srun_flags, *container]

    common: list[Arg] = [f"--chdir={workdir}"]
    for option, value in (("--partition", site.partition), ("--account", site.account),
                          ("--mem-per-cpu", site.mem_per_cpu)):
        if value:
            common.append(f"{option}={value}")
    common += site.sbatch_flags
    ranks = [f"--ntasks={ranks_per_task}", f"--cpus-per-task={site.cpus_per_rank}"]
    if site.gpus_per_rank:
        ranks.append(f"--gpus-per-task={site.gpus_per_rank}")

    jobs = []
    shape = f"{ranks_per_task} rank(s) x {site.cpus_per_rank} CPU(s)" + (
        f" x {site.gpus_per_rank} GPU(s)" if site.gpus_per_rank else "")
    if extract:
        jobs.append(JobSpec(
            "extract",
            (*common, _log_pattern(log_dir, "lwroi-extract-%j.out"), *ranks,
             f"--time={site.time_extract}"),
            site.scripts_dir / SCRIPTS["extract"],
            (*step, "lwroi", "extract", *lwroi_args),
            f"lwroi extract, {shape}",
        ))
    array_options: list[Arg] = [*common, f"--array={_array_spec(tasks, site.array_max_running)}",
                                _log_pattern(log_dir, "lwroi-fit-%A_%a.out"), *ranks,
                                f"--time={site.time_fit}"]
    if site.signal_seconds:
        array_options.append(f"--signal=B:USR1@{site.signal_seconds}")
    if extract:
        array_options.append(JobRef("extract", "--dependency=afterok:"))
    jobs.append(JobSpec(
        "array", tuple(array_options), site.scripts_dir / SCRIPTS["array"],
        (str(shards), str(site.max_requeues), *step, "lwroi", "fit", *lwroi_args),
        f"lwroi fit --shard i/{shards} for i in {_array_spec(tasks, 0)}, {shape} each"
        + (" (after extract)" if extract else ""),
    ))
    jobs.append(JobSpec(
        "reduce",
        (*common, _log_pattern(log_dir, "lwroi-reduce-%j.out"), f"--time={site.time_reduce}",
         JobRef("array", "--dependency=afterany:")),
        site.scripts_dir / SCRIPTS["reduce"],
        (JobRef("array"), *container, "lwroi", "summarize", str(run_dir)),
        f"lwroi summarize {run_dir} (after every array task)",
    ))
    ensure = (log_dir, _absolute(cfg.features.store_dir, workdir))
    return Chain(tuple(jobs), run_dir, log_dir, workdir, binds, image, config_path, ensure)


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
    return "\n".join([*head, *(job.shell() for job in chain.jobs), tail]) + "\n"


def features_done(cfg: Config, workdir: Path) -> bool:
    """True when the run directory already holds a valid ``features`` record (the extract job can be left out)."""
    return ResultStore(_absolute(cfg.run.output_dir, workdir), cfg.fingerprint()).is_done("features")


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
