"""The MPI-coordinated driver: one entry point for a plain process, ``mpiexec``, ``srun`` and array shards.

Rank 0 checks the run directory and the data once and tells every rank; then all ranks pull
units from the shared plan until it is empty or a stop signal arrives.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lwroi.config import Config
from lwroi.data import check_dataset, list_videos
from lwroi.data.algonauts import response_problems, video_fingerprints
from lwroi.exceptions import DataLayoutError, DeviceError, LwroiError
from lwroi.orchestration.environment import (
    JobEnvironment,
    allocated_gpus,
    check_launch,
    read_environment,
    threads_per_rank,
    visible_devices,
)
from lwroi.orchestration.journal import Journal
from lwroi.orchestration.lock import LaunchLock
from lwroi.orchestration.plan import PHASES, Unit, build_plan, shard_units
from lwroi.orchestration.progress import StatusConsole
from lwroi.orchestration.results import ResultStore
from lwroi.orchestration.rundir import prepare_run_dir
from lwroi.orchestration.schedule import (
    EXIT_USAGE,
    StopFlag,
    abort_on_error,
    combine_exit_codes,
    execute,
    node_local_rank,
    quiet_bcast,
    world_communicator,
)
from lwroi.orchestration.tasks import UnitRunner

log = logging.getLogger("lwroi")


@dataclass
class LaunchResult:
    """What one launch did, for the CLI to report and (on rank 0) reduce."""

    exit_code: int
    rank: int
    run_dir: Path
    units: list[Unit]
    store: ResultStore


class LaunchError(LwroiError):
    """Raised on every rank when rank 0 found the run cannot start (bad run dir, bad data)."""


def setup_logging(run_dir: Path | None, rank: int, size: int, level: int = logging.INFO) -> None:
    """Log to stderr (rank prefix under MPI, a live status line on a terminal) and to the run's logs/."""
    logger = logging.getLogger("lwroi")
    logger.setLevel(level)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    prefix = f"[rank {rank}] " if size > 1 else ""
    fmt = logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s", "%H:%M:%S")
    console = StatusConsole(sys.stderr)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if run_dir is not None:
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(run_dir / "logs" / f"rank{rank:03d}.log")
        file_handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s"))
        logger.addHandler(file_handler)
    logger.propagate = False


def _agree(comm: Any, action: Any) -> Any:
    """Run ``action`` on rank 0 and share its result or its error with every rank."""
    result: tuple[str, Any] = ("ok", None)
    if comm.rank == 0:
        try:
            result = ("ok", action())
        except (LwroiError, OSError, ValueError, RuntimeError) as exc:
            result = ("error", f"{exc}")
    status, value = quiet_bcast(comm, result, root=0)
    if status == "error":
        raise LaunchError(value)
    return value


def _gpu_count() -> int:
    from lwroi.encoding.devices import visible_gpu_count  # torch: not at import (login nodes)

    return visible_gpu_count()


def launch(cfg: Config, *, up_to: str = "fit", shard: tuple[int, int] | None = None, mpi: str = "auto",
           restart: bool = False, tune_split: str = "roi") -> LaunchResult:
    """Run (or resume) the plan of ``cfg`` up to phase ``up_to`` on every rank of the world communicator.

    Any exception but :class:`LaunchError` on one rank of several aborts them all
    (:func:`~lwroi.orchestration.schedule.abort_on_error`), with that rank's traceback, instead of
    leaving the others waiting for it.

    Raises
    ------
    LaunchError
        The launch cannot start (same message on every rank); nothing was computed.
    """
    comm = world_communicator(mpi)
    with abort_on_error(comm, collective=(LaunchError,)):
        return _launch(comm, cfg, up_to=up_to, shard=shard, restart=restart, tune_split=tune_split)


def _launch(comm: Any, cfg: Config, *, up_to: str, shard: tuple[int, int] | None, restart: bool,
            tune_split: str) -> LaunchResult:
    local_rank, local_size = node_local_rank(comm)
    job = read_environment(comm.rank, comm.size, local_rank=local_rank, local_size=local_size)
    try:
        check_launch(job)
    except RuntimeError as exc:
        raise LaunchError(str(exc)) from None
    _agree(comm, lambda: check_inputs(cfg, up_to))
    launch_id = _agree(comm, lambda: time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6])
    held: list[LaunchLock] = []

    def claim_run_dir() -> Path:
        lock = LaunchLock(cfg.run.output_dir, shard, launch_id).acquire()  # before --restart moves anything
        try:
            run_dir = prepare_run_dir(cfg, restart=restart)
        except BaseException:
            lock.release()
            raise
        if not lock.folder.exists():  # --restart moved the locked folder aside: lock the new one
            lock.release()
            lock = LaunchLock(run_dir, shard, launch_id).acquire()
        held.append(lock)
        return run_dir

    run_dir = _agree(comm, claim_run_dir)
    try:
        setup_logging(run_dir, comm.rank, comm.size)
        log.info("%s", job)
        device = _pick_device(cfg, job)
        stop = StopFlag()
        stop.install()
        journal = Journal(run_dir, comm.rank, launch_id)
        store = ResultStore(run_dir, cfg.fingerprint(), cfg.model_fingerprints())
        runner = UnitRunner(cfg, store, journal, stop, device)
        units = build_plan(cfg, runner.roi_cost, up_to=up_to, tune_split=tune_split)
        if shard is not None:
            units = shard_units(units, *shard)
            log.info("shard %d/%d: %d units", shard[0], shard[1], len(units))
            if comm.rank == 0:
                _hint_features(cfg, units, shard, store)
        outcome = execute(units, runner, store=store, comm=comm, stop=stop, journal=journal)
        code = combine_exit_codes(comm, outcome.exit_code)
    finally:
        for lock in held:
            lock.release()
    log.info("this rank: %d units done, %d failed%s; job exit code %d", len(outcome.done), len(outcome.failed),
             ", interrupted" if outcome.interrupted else "", code)
    return LaunchResult(code, comm.rank, run_dir, units, store)


class InputError(LwroiError, ValueError):
    """The config, data, model or device of a run fail a check made before any work; the message lists all."""


_MAX_LISTED = 25


def _hint_features(cfg: Config, units: list[Unit], shard: tuple[int, int], store: ResultStore) -> None:
    """Say once, up front, when this shard's units wait for ``features`` units that another launch computes."""
    mine = {u.key for u in units}
    waited = sorted({d for u in units for d in u.deps if d.startswith("features/") and d not in mine})
    pending = [key for key in waited if not store.is_done(key)]
    if pending:
        log.warning("shard %d/%d waits for %s, which shard 0/%d computes: run `lwroi extract %s` (same --set "
                    "options) or `--shard 0/%d` first or alongside, else this shard waits forever", shard[0],
                    shard[1], ", ".join(pending), shard[1], cfg.source, shard[1])


def check_inputs(cfg: Config, up_to: str, *, device: bool = True, model: bool = True) -> None:
    """Everything that can be checked before the run directory is touched (a failure claims nothing).

    The data layout, every response pickle (shapes, dtypes, video counts, WB masks), the
    shards and SGD sizes against the data, the model, layers and weights (of the models whose
    feature store is not built yet), and the device. Extraction reads only the videos, so
    launches up to ``features`` do not need the responses.
    ``device=False`` and ``model=False`` leave out the checks that need torch (and, for the
    device, the machine the work runs on): ``lwroi submit`` on a login node.

    Raises
    ------
    InputError
        One error listing every problem found.
    """
    problems = [*_data_problems(cfg, up_to), *_row_problems(cfg, up_to)]
    if model:
        built = set() if problems else _models_with_built_stores(cfg)  # the videos are readable
        for name in cfg.model_names:
            if name not in built:
                from lwroi.features.extract import model_problems

                named = f"model {name}: " if cfg.features.models else ""
                problems += [named + line for line in model_problems(cfg.for_model(name).features)]
    if device:
        problems += _device_problems(cfg.run.device)
    if problems:
        shown = [p.replace("\n", "\n    ") for p in problems[:_MAX_LISTED]]
        more = [f"... and {len(problems) - len(shown)} more"] if len(problems) > len(shown) else []
        raise InputError(f"{cfg.source}: cannot start, nothing was written to {cfg.run.output_dir}; "
                         "found before any work:\n  - " + "\n  - ".join([*shown, *more]))


def _models_with_built_stores(cfg: Config) -> set[str]:
    """The models whose feature store is complete: the run will not load their networks.

    Their model, layers and weights were checked when the store was built, so a launch skips
    that check (torchvision's import, a model construction and a graph trace: seconds per
    launch, more for a zoo).
    """
    from lwroi.features.store import feature_paths, feature_store_complete

    d = cfg.data
    videos = video_fingerprints(list_videos(Path(d.root) / d.videos_dir))
    return {name for name in cfg.model_names
            if feature_store_complete(feature_paths(cfg.for_model(name), videos).store)}


def _data_problems(cfg: Config, up_to: str) -> list[str]:
    """The dataset layout, the response pickles (when the plan fits) and the video shards."""
    d = cfg.data
    root = Path(d.root)
    responses = PHASES.index(up_to) > PHASES.index("features")
    problems = []
    try:
        check_dataset(root, videos_dir=d.videos_dir, responses_dir=d.responses_dir, subjects=d.subjects,
                      rois=d.rois, n_train_videos=d.n_train_videos, n_videos=d.n_videos, responses=responses)
    except DataLayoutError as exc:
        problems.append(str(exc))
    if responses:
        problems += response_problems(root / d.responses_dir, d.subjects, d.rois, n_train_videos=d.n_train_videos)
    try:
        n_videos = len(list_videos(root / d.videos_dir))
    except DataLayoutError:
        return problems  # check_dataset named the folder
    if cfg.run.extract_shards > n_videos:
        problems.append(f"run.extract_shards = {cfg.run.extract_shards}: more than the {n_videos} videos in "
                        f"{root / d.videos_dir} (each shard needs a video, and loads the network anew)")
    return problems


def _row_problems(cfg: Config, up_to: str) -> list[str]:
    """The SGD solver's folds and minibatch against the training rows every subject has.

    Tuning cuts the n_train_videos - n_test training rows into ``folds`` validation parts of two
    rows at least (a Pearson r needs two); a minibatch above all the rows is no minibatch.
    """
    d, e = cfg.data, cfg.encoding
    if e.solver != "sgd" or PHASES.index(up_to) < PHASES.index("tune"):
        return []
    rows = d.n_train_videos - d.n_test
    have = f"the {rows} training rows (data.n_train_videos - data.n_test = {d.n_train_videos} - {d.n_test})"
    problems = []
    if e.folds > rows // 2:
        problems.append(f"encoding.folds = {e.folds}: {have} allow at most {rows // 2} folds "
                        "(each validation fold needs >= 2 rows)")
    if e.sgd.batch_size > rows:
        problems.append(f"encoding.sgd.batch_size = {e.sgd.batch_size}: more than {have}")
    return problems


def _device_problems(requested: str) -> list[str]:
    """GPUs allocated that torch cannot see; an explicit ``cuda`` device that torch does not see.

    ``auto`` may fall back to the CPU, but not while the job holds GPUs (an old node driver).
    """
    if requested == "cpu":
        return []
    from lwroi.encoding.devices import check_allocated_gpus, choose_device, cuda_build

    n_gpus = _gpu_count()
    try:
        check_allocated_gpus(requested, allocated_gpus(), n_gpus, cuda_build())
    except DeviceError as exc:
        return [f"run.device = {requested!r}: {exc}"]
    if requested == "auto":
        return []
    try:
        choose_device(requested, 0, n_gpus)
    except DeviceError:
        return [f"run.device = {requested!r}: torch sees {n_gpus} GPU(s) here "
                f"(CUDA_VISIBLE_DEVICES={visible_devices() or '<unset>'}); "
                "use run.device: auto (a GPU when one is visible, else the CPU) or cpu"]
    return []


def _pick_device(cfg: Config, job: JobEnvironment) -> str:
    """One GPU per rank (node-local rank modulo visible GPUs), else the CPU; sets CPU threads."""
    from lwroi.encoding.devices import choose_device, set_cpu_threads

    requested = cfg.run.device
    n_gpus = 0 if requested == "cpu" else _gpu_count()
    device, why = choose_device(requested, job.local_rank, n_gpus)
    node_cpus = os.cpu_count() or 1
    bound = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else node_cpus  # Linux only
    threads = threads_per_rank(cfg.run.threads, node_cpus=node_cpus, bound_cpus=bound, local_size=job.local_size,
                               cpus_per_task=job.cpus_per_task)
    set_cpu_threads(threads)
    log.info("device %s (%s), %d CPU thread(s), bound to %d of the node's %d CPU(s)", device, why, threads, bound,
             node_cpus)
    return device


__all__ = ["EXIT_USAGE", "InputError", "LaunchError", "LaunchResult", "check_inputs", "launch", "setup_logging"]
