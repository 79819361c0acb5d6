"""Shared fixtures: synthetic datasets in the real Algonauts layout, each built once per test session.

The datasets are written by the real ``lwroi synth`` (real mp4 files, real pickles, planted
layer profiles), and each one's feature store is shared by every run on it, as runs on a
cluster share one. The tests of orchestration, resume, MPI, export and the cluster path check
bookkeeping and table equality, not science: they run the tiny config (``tiny_workspace``,
``tiny_run``; tests/tiny.yaml). Only tests/test_science.py runs a full-size dataset (its own).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share the cores, so waiting OpenMP threads (torch's, here and in every lwroi and MPI
    # rank the tests start, which inherit this) must sleep instead of spinning on cores the other
    # worker needs. Set before numpy and torch load their thread pools; it changes no number.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
TINY_CONFIG = REPO / "tests" / "tiny.yaml"
ZOO_CONFIG = REPO / "tests" / "zoo.yaml"


def pytest_collection_modifyitems(config, items) -> None:
    """The order the image build and the workers want (stable otherwise).

    In one process the container tests come last: the image builds in the background meanwhile.
    Under pytest-xdist (``scripts/test.sh``, whole files per worker, in this order) they come
    first, then the slow files: one worker waits for the build while the other starts on the
    longest work, so the short files fill both workers' ends and neither core waits at the end.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: (item.get_closest_marker("container") is None,
                                     item.get_closest_marker("slow") is None, -_seconds(item)))
    else:
        items.sort(key=lambda item: item.get_closest_marker("container") is not None)


def _seconds(item: pytest.Item) -> float:
    """A slow file's own estimate of its length (``pytest.mark.slow(seconds=N)``), 0 when it gives none.

    The longest file must start early: started last, it runs alone while the other worker idles
    (tests/test_science.py, 200-270 s, once ended the suite with one core idle for two minutes).
    """
    marker = item.get_closest_marker("slow")
    return float(marker.kwargs.get("seconds", 0)) if marker else 0.0


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, one torch thread for the tests a worker runs in its own process.

    Each worker has one core's share; lwroi processes the tests start still choose their own
    thread counts, as a launch does.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def shared_root(config: pytest.Config) -> Path:
    """The session's temporary root, the same for every pytest-xdist worker (each works in a folder of it).

    Reads pytest's ``_tmp_path_factory``, as pytest-xdist does to give its workers their folders.
    """
    base = config._tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def image_build(config: pytest.Config):
    """The session's one image build (tests/cluster/image.py): the one scripts/test.sh started before the
    install (``LWROI_TEST_IMAGE_BUILD``), or one in the session's shared root."""
    from tests.cluster.image import ImageBuild

    started = os.environ.get("LWROI_TEST_IMAGE_BUILD")
    return ImageBuild(Path(started) if started else shared_root(config) / "image")


def pytest_collection_finish(session) -> None:
    """Start the image build now when a container test will run and no prebuilt image is given."""
    if session.config.option.collectonly or os.environ.get("LWROI_TEST_IMAGE") or not shutil.which("apptainer"):
        return  # the lwroi_image fixture says what is missing
    if any(item.get_closest_marker("container") for item in session.items):
        image_build(session.config).start()


def pytest_sessionfinish(session) -> None:
    """A build no test waited for (the session stopped early) is stopped and removed, once all workers are done."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        image_build(session.config).remove()


def shared_once(config: pytest.Config, name: str, build) -> Path:
    """``build(path)`` once per test session, whatever the number of pytest-xdist workers; returns the path.

    ``name`` is relative to the session's shared root. A marker written after the build says it
    is complete, so a worker that failed halfway leaves nothing another would take for finished
    (the next one starts afresh).
    """
    path = shared_root(config) / name
    built = path.with_name(f"{path.name}.built")
    with FileLock(path.with_name(f"{path.name}.lock")):
        if not built.exists():
            shutil.rmtree(path, ignore_errors=True)
            build(path)
            built.touch()
    return path


TINY_SYNTH = ("--subjects", "2", "--videos", "40", "--challenge", "4")
"""``lwroi synth`` options of the tiny dataset: what tests/tiny.yaml's data section says it holds."""


def lwroi_command(*args: str) -> list[str]:
    """The installed CLI, run with this interpreter."""
    return [sys.executable, "-m", "lwroi.cli", *args]


def run_lwroi(*args: str, cwd: Path, timeout: float = 900, check: bool = True, env: dict | None = None,
              mpi_ranks: int | None = None) -> subprocess.CompletedProcess:
    """Run ``lwroi ARGS`` (under ``mpiexec -n mpi_ranks`` when given) and return the finished process."""
    cmd = lwroi_command(*args)
    if mpi_ranks is not None:
        cmd = [mpiexec(), "-n", str(mpi_ranks), *cmd]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n"
                             f"--- stderr\n{proc.stderr[-6000:]}")
    return proc


def interrupt_when(cmd: list[str], cwd: Path, ready, action, *, what: str, timeout: float = 300,
                   settle: float = 0.5) -> tuple[int, str]:
    """Start ``cmd``, wait (bounded) until ``ready()``, call ``action(process)``, and wait for the exit.

    Returns the exit code and the process's stderr (kept in a file, so a chatty process never
    blocks on a full pipe). The process is killed if anything goes wrong, so no test hangs.
    """
    log = cwd / f"interrupted-{time.monotonic_ns()}.log"
    with open(log, "w") as err:
        job = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, text=True)
        try:
            wait_for(lambda: ready() or job.poll() is not None, timeout, what)
            if job.poll() is not None:
                raise AssertionError(f"exited {job.returncode} before {what}:\n{log.read_text()[-3000:]}")
            time.sleep(settle)
            action(job)
            job.wait(timeout=120)
        finally:
            if job.poll() is None:
                job.kill()
                job.wait()
    return job.returncode, log.read_text()


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def journal_events(run: Path) -> list[dict]:
    """Every event of the run's journal."""
    return [json.loads(line) for p in (run / "journal").glob("*.jsonl") for line in p.read_text().splitlines()]


def mpiexec() -> str:
    """The mpiexec of the MPI that mpi4py uses (PyPI's mpich installs it beside python)."""
    path = Path(sys.executable).parent / "mpiexec"
    found = str(path) if path.exists() else shutil.which("mpiexec")
    if not found:
        raise RuntimeError("mpiexec not found: pip install mpich (scripts/setup.sh does)")
    return found


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_workspace(request) -> Path:
    """A folder with the tiny synthetic dataset at ``data/tiny`` (2 subjects, 40 + 4 videos) and a shared
    ``feature_store`` (one for the session, whatever the number of pytest-xdist workers)."""

    def synth(root: Path) -> None:
        root.mkdir(parents=True)
        run_lwroi("synth", "data/tiny", *TINY_SYNTH, "--config", str(TINY_CONFIG), cwd=root)

    return shared_once(request.config, "tiny", synth)


@pytest.fixture(scope="session")
def tiny_run(request, tiny_workspace) -> Path:
    """The tiny config run as one plain process (no MPI): the reference every other launch must match."""

    def run(out: Path) -> None:
        run_lwroi("run", str(TINY_CONFIG), "--mpi", "none", "--set", f"run.output_dir={out}", cwd=tiny_workspace)

    return shared_once(request.config, "tiny/runs/plain", run)


@pytest.fixture(scope="session")
def zoo_run(request, tiny_workspace) -> Path:
    """The test zoo (tests/zoo.yaml) run as one plain process: the reference of every zoo launch."""

    def run(out: Path) -> None:
        run_lwroi("run", str(ZOO_CONFIG), "--mpi", "none", "--set", f"run.output_dir={out}", cwd=tiny_workspace)

    return shared_once(request.config, "tiny/runs/zoo-plain", run)
