"""The chain model: which sbatch submissions a run needs, with what options, scripts and arguments.

Nothing here touches Slurm or the disk beyond reading a record: :func:`build_chain` returns a
:class:`Chain` that :func:`~lwroi.orchestration.slurm.render_chain` prints and
:func:`~lwroi.orchestration.slurm.submit_chain` submits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lwroi.config import Config
from lwroi.exceptions import ConfigError
from lwroi.orchestration.results import ResultStore
from lwroi.orchestration.slurm._site import SCRIPTS, SiteSettings

LOG_DIR = "slurm"
"""Folder of the run directory that holds the jobs' Slurm logs."""


@dataclass(frozen=True)
class JobRef:
    """An argument holding the ID of an earlier job of the chain, known only once that job is submitted."""

    job: str
    prefix: str = ""


Arg = str | JobRef


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
    """The sbatch submissions of the chain for ``cfg`` (no side effects: see ``submit_chain``).

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
    # srun does not inherit sbatch's --cpus-per-task (Slurm >= 22.05): without it a rank may be bound to one core
    step = [f"--mpi={site.srun_mpi}", f"--cpus-per-task={site.cpus_per_rank}", *site.srun_flags, *container]

    common: list[Arg] = [f"--chdir={workdir}"]
    for option, value in (("--partition", site.partition), ("--account", site.account),
                          ("--mem-per-cpu", site.mem_per_cpu)):
        if value:
            common.append(f"{option}={value}")
    common += (*site.sbatch_flags, *site.module_export)
    ranks = [f"--nodes={site.nodes}", f"--ntasks={ranks_per_task}", f"--cpus-per-task={site.cpus_per_rank}"]
    if site.gpus_per_rank:
        ranks.append(f"--gpus-per-task={site.gpus_per_rank}")

    jobs = []
    shape = f"{ranks_per_task} rank(s) x {site.cpus_per_rank} CPU(s)" + (
        f" x {site.gpus_per_rank} GPU(s)" if site.gpus_per_rank else "")
    zoo = len(cfg.model_names) > 1
    if extract and zoo:  # a zoo's extraction units (models x video shards) as an array; the extract job reduces
        raw_tasks = min(shards, len(cfg.model_names) * cfg.run.extract_shards)
        jobs.append(JobSpec(
            "extract_array",
            (*common, f"--array={_array_spec(range(raw_tasks), site.array_max_running)}",
             _log_pattern(log_dir, "lwroi-extract-%A_%a.out"), *ranks, f"--time={site.time_extract}"),
            site.scripts_dir / SCRIPTS["array"],
            (str(raw_tasks), str(site.max_requeues), *step, "lwroi", "extract", "--raw", *lwroi_args),
            f"lwroi extract --raw --shard i/{raw_tasks} for i in 0-{raw_tasks - 1}: {len(cfg.model_names)} models x "
            f"{cfg.run.extract_shards} video shards, {shape} each",
        ))
    if extract:
        jobs.append(JobSpec(
            "extract",
            (*common, _log_pattern(log_dir, "lwroi-extract-%j.out"), *ranks,
             f"--time={site.time_extract}", *((JobRef("extract_array", "--dependency=afterok:"),) if zoo else ())),
            site.scripts_dir / SCRIPTS["extract"],
            (*step, "lwroi", "extract", *lwroi_args),
            f"lwroi extract, {shape}" + (": reduces every model's features (after the extract array)" if zoo else ""),
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


def features_done(cfg: Config, workdir: Path) -> bool:
    """True when the run directory holds a valid ``features`` record of every model (no extract job is needed)."""
    store = ResultStore(_absolute(cfg.run.output_dir, workdir), cfg.fingerprint(), cfg.model_fingerprints())
    return all(store.is_done(f"features/{name}") for name in cfg.model_names)
