"""The cluster path for real: the image built from containers/lwroi.def, the job chain submitted to Slurm.

Three chains, each submitted with ``lwroi submit`` as an array of 2 tasks × 2 MPI ranks (``srun
--mpi=pmi2 apptainer exec``) and checked against the plain-process reference run of the same
settings: the test zoo (tests/zoo.yaml) as it runs when nothing goes wrong, and the tiny config
(tests/tiny.yaml, on all ten ROIs of its dataset so that a shard has work left to interrupt)
with a task cancelled midway, and with a task signalled USR1 midway. Needs a running Slurm and
apptainer (``scripts/testcluster.sh up``, as root): without them these tests fail, they
never skip. Every wait is bounded; jobs left behind are cancelled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lwroi.orchestration.slurm import TaskState, parse_task_states
from tests.conftest import REPO, TINY_CONFIG, ZOO_CONFIG, image_build, run_lwroi
from tests.orchestration.test_mpi import assert_tables_equal, done_events

pytestmark = [pytest.mark.slurm, pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(2400)]

# Every ROI of the tiny dataset: 10 x (tune, select, 2 fits) = 40 units. Balanced by voxel count, the
# whole-brain ROI's 4 units make one array task and the nine others (36 units) the second: the one a
# signal can land in midway (its units take about 0.4 s each).
ALL_ROIS = ("--set", "data.rois=[V1,V2,V3,V4,LOC,EBA,FFA,STS,PPA,WB]")
CHAIN_SECONDS = 900
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}
TEST_SITE = """\
# The test node: one 2-core node, no GPU.
LWROI_SHARDS=2
LWROI_RANKS_PER_TASK=2
LWROI_GPUS_PER_RANK=0
LWROI_CPUS_PER_RANK=1
LWROI_TIME_EXTRACT=00:20:00
LWROI_TIME_FIT=00:20:00
LWROI_TIME_REDUCE=00:05:00
LWROI_SIGNAL_SECONDS=120
LWROI_MAX_REQUEUES=1
LWROI_APPTAINER_FLAGS=--nv
"""


def _wait_until(predicate: Callable[[], object], timeout: float, what: str, poll: float = 1.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{_queue()}")
        time.sleep(poll)


def _slurm(*argv: str, check: bool = False) -> str:
    """Run a Slurm command (bounded: a hung controller fails the test instead of hanging it)."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=check).stdout


def _queue() -> str:
    return _slurm("squeue")


def _check_command(argv: list[str], what: str) -> None:
    if shutil.which(argv[0]) is None or subprocess.run(argv, capture_output=True, timeout=60).returncode != 0:
        pytest.fail(f"{what} is not available (`{' '.join(argv)}` fails): run `scripts/testcluster.sh up` as root "
                    "(scripts/test.sh does)")


@pytest.fixture(scope="session")
def lwroi_image(request) -> Iterator[Path]:
    """The image built from containers/lwroi.def with CI's build arguments (tests/cluster/image.py).

    The build started in the background when the session began (tests/conftest.py), in whichever
    pytest-xdist worker collected first; a session that did not start one starts it here.
    ``LWROI_TEST_IMAGE=PATH`` uses a prebuilt image instead (developers iterating on these tests;
    CI always builds). A failed build fails the tests.
    """
    _check_command(["apptainer", "--version"], "apptainer")
    if os.environ.get("LWROI_TEST_IMAGE"):
        yield Path(os.environ["LWROI_TEST_IMAGE"])
        return
    build = image_build(request.config)
    build.start()
    try:
        image = build.wait()
        print(f"built {image} in {time.time() - build.started:.0f}s (in the background)")
        yield image
    finally:
        build.remove()


@pytest.fixture(scope="session")
def cluster_site(tmp_path_factory) -> Path:
    """A site folder as a site makes one: a copy of slurm/ (in a folder named with a space), the test node's knobs."""
    _check_command(["scontrol", "ping"], "Slurm")
    folder = tmp_path_factory.mktemp("site") / "test site"
    folder.mkdir()
    for script in REPO.glob("slurm/*.sbatch"):
        shutil.copy2(script, folder)
    (folder / "site.env").write_text(TEST_SITE)
    return folder / "site.env"


class Jobs:
    """The jobs a test submitted: their states from scontrol, their logs; cancelled at teardown."""

    def __init__(self, workspace: Path, site: Path, image: Path) -> None:
        self.workspace, self.site, self.image = workspace, site, image
        self.ids: list[str] = []

    def submit(self, out: str, *extra: str, config: Path = TINY_CONFIG) -> dict[str, str]:
        rois = ALL_ROIS if config == TINY_CONFIG else ()
        proc = run_lwroi("submit", str(config), "--site", str(self.site), "--image", str(self.image),
                         *rois, "--set", f"run.output_dir={out}", *extra, cwd=self.workspace, timeout=120)
        ids = dict(re.findall(r"^\s+(extract_array|extract|array|reduce)\s+(\d+)\s", proc.stdout, re.MULTILINE))
        assert {"array", "reduce"} <= set(ids), proc.stdout
        self.ids += ids.values()
        return ids

    @staticmethod
    def show(job: str) -> str:
        return _slurm("scontrol", "show", "job", "--oneliner", job)

    def state(self, job: str) -> tuple[str, str]:
        """(JobState, ExitCode) of a job that is not an array."""
        text = self.show(job)
        found = dict(re.findall(r"(?:^|\s)(JobState|ExitCode)=(\S*)", text))
        return found.get("JobState", "?"), found.get("ExitCode", "?")

    def tasks(self, array_job: str) -> dict[str, TaskState]:
        return {s.task: s for s in parse_task_states(self.show(array_job))}

    def wait_ended(self, job: str, timeout: float = CHAIN_SECONDS) -> tuple[str, str]:
        return _wait_until(lambda: (s := self.state(job))[0] in ENDED and s, timeout, f"job {job} to end")

    def cancel_all(self) -> None:
        if self.ids:
            _slurm("scancel", *self.ids)


@pytest.fixture(scope="session")
def all_rois_run(tiny_workspace) -> Path:
    """The submitted settings run as one plain process (no MPI): the reference every chain must match."""
    run_lwroi("run", str(TINY_CONFIG), "--mpi", "none", *ALL_ROIS, "--set", "run.output_dir=runs/plain-all-rois",
              cwd=tiny_workspace)
    return tiny_workspace / "runs" / "plain-all-rois"


@pytest.fixture
def jobs(cluster_site, lwroi_image, tiny_workspace, all_rois_run) -> Iterator[Jobs]:
    """Slurm checked first, then the image built, then the dataset and the reference run."""
    submitted = Jobs(tiny_workspace, cluster_site, lwroi_image)
    yield submitted
    submitted.cancel_all()


def task_log(run: Path, array_job: str, task: int | str) -> str:
    path = run / "slurm" / f"lwroi-fit-{array_job}_{task}.out"
    return path.read_text() if path.exists() else ""


def reduce_log(run: Path, job: str) -> str:
    return (run / "slurm" / f"lwroi-reduce-{job}.out").read_text()


def busy_task(run: Path, array_job: str, n_tasks: int) -> int | None:
    """An array task whose ranks are fitting and have at least 10 units to go (so a signal lands mid-unit).

    The fit phase is the shard's last, and its units run epochs (0.1 s each here); a select unit
    runs none, and a signal that landed in the select phase found no rank mid-unit (no checkpoint
    to resume from), so the task must have reached the fit units.
    """
    for task in range(n_tasks):
        text = task_log(run, array_job, task)
        todo = re.search(r"\[rank 0\] INFO (\d+) of \d+ units to compute", text)
        done = len(re.findall(r"INFO done (?:tune|select|fit)/", text))
        if todo and "INFO start fit/" in text and int(todo.group(1)) - done >= 10:
            return task
    return None


def submit_and_wait_for_busy_task(jobs, out: str) -> tuple[Path, dict[str, str], int]:
    """Submit the chain into ``out``; return the run folder, the job IDs and a task midway through its shard."""
    run = jobs.workspace / out
    ids = jobs.submit(out)
    task = _wait_until(lambda: busy_task(run, ids["array"], 2), CHAIN_SECONDS, "a task midway through its fit units",
                       poll=0.1)
    return run, ids, task


def journal_events(run: Path) -> Counter:
    return Counter(json.loads(line)["event"] for p in (run / "journal").glob("*.jsonl")
                   for line in p.read_text().splitlines())


def test_a_zoo_runs_as_one_chain_and_reduces_to_the_plain_process_tables(jobs, zoo_run):
    """tests/zoo.yaml (four models, three families): extract array, extract job, fit array, reduce.

    The chain as it runs when nothing goes wrong: each array task runs its own shard with 2 real
    MPI ranks inside the container, bound to the CPUs Slurm gave it, and the reduce job's tables
    are the plain process's.
    """
    out = "runs/slurm-zoo"
    run = jobs.workspace / out
    ids = jobs.submit(out, config=ZOO_CONFIG)
    assert {"extract_array", "extract", "array", "reduce"} <= set(ids)  # a new run directory: extraction first
    assert jobs.wait_ended(ids["reduce"]) == ("COMPLETED", "0:0"), reduce_log(run, ids["reduce"])
    assert all(t.state == "COMPLETED" for t in jobs.tasks(ids["extract_array"]).values())
    assert_tables_equal(run, zoo_run, names=("summary.csv", "comparison.csv", "hierarchy.csv", "model_pairs.csv",
                                            "results.csv"))  # fmt: skip
    tasks = jobs.tasks(ids["array"])
    assert sorted(tasks) == ["0", "1"]
    assert all(t.state == "COMPLETED" for t in tasks.values()), tasks
    for task in tasks:  # each task ran its own shard with 2 real MPI ranks inside the container
        text = task_log(run, ids["array"], task)
        assert f"shard {task}/2:" in text and "[rank 1]" in text and f"array={ids['array']}_{task}" in text
        # each rank starts as many threads as the CPUs Slurm gave it (LWROI_CPUS_PER_RANK=1, srun --cpus-per-task)
        # and is bound to (the test box binds tasks with task/affinity, as sites do)
        threads = re.findall(r"\[rank (\d)\] INFO device \S+ \(.*?\), (\d+) CPU thread\(s\), "
                             r"bound to (\d+) of the node's (\d+) CPU\(s\)", text)
        assert sorted(r for r, *_ in threads) == ["0", "1"], text
        for _, n, bound, node in threads:
            assert int(n) == int(bound) == 1 < int(node), threads
    assert max(done_events(run).values()) == 1
    assert "2 of 2 array task(s) COMPLETED" in reduce_log(run, ids["reduce"])


def test_cancelled_task_resubmitted_resumes_and_recomputes_nothing_finished(jobs, all_rois_run):
    out = "runs/slurm-cancel"
    run, ids, task = submit_and_wait_for_busy_task(jobs, out)
    _slurm("scancel", f"{ids['array']}_{task}", check=True)

    # the first chain's reduce job runs after the cancelled task and says what is missing
    assert jobs.wait_ended(ids["reduce"]) == ("FAILED", "3:0")
    log = reduce_log(run, ids["reduce"])
    assert re.search(rf"array task {task} \(job \d+\): CANCELLED", log), log
    assert "missing: " in log
    assert "received SIGTERM" in task_log(run, ids["array"], task)  # through srun and apptainer to the ranks
    finished_before = set(done_events(run))
    records_before = {p: p.stat().st_mtime_ns for p in (run / "units").rglob("*.json")}
    assert finished_before and not (run / "summary.csv").exists()

    again = jobs.submit(out, "--tasks", str(task))
    assert "extract" not in again  # the feature store of this run is done
    assert jobs.wait_ended(again["reduce"]) == ("COMPLETED", "0:0"), reduce_log(run, again["reduce"])
    assert_tables_equal(run, all_rois_run)
    counts = done_events(run)
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1]
    for path, mtime in records_before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"


def test_usr1_before_the_time_limit_checkpoints_requeues_and_finishes(jobs, all_rois_run):
    out = "runs/slurm-usr1"
    run, ids, task = submit_and_wait_for_busy_task(jobs, out)
    # what --signal=B:USR1@N does shortly before the time limit, sent now: to the batch shell only
    _slurm("scancel", "--signal=USR1", "--batch", f"{ids['array']}_{task}", check=True)

    assert jobs.wait_ended(ids["reduce"]) == ("COMPLETED", "0:0"), reduce_log(run, ids["reduce"])
    assert_tables_equal(run, all_rois_run)
    state = jobs.tasks(ids["array"])[str(task)]
    assert (state.state, state.restarts) == ("COMPLETED", 1)
    log = task_log(run, ids["array"], task)
    assert "got SIGUSR1" in log and f"requeueing {ids['array']}_{task}" in log
    assert "SLURM_RESTART_COUNT=1 " in log and f"array={ids['array']}_{task} restarts=1" in log  # the requeued run
    events = journal_events(run)
    assert events["interrupted"] >= 1, events  # ranks stopped at an epoch's end, after checkpointing,
    assert events["resume"] >= 1, events  # and the requeued run went on from those checkpoints
    assert max(done_events(run).values()) == 1


def test_check_passes_on_the_test_site_and_an_impossible_request_is_refused(cluster_site, lwroi_image,
                                                                            tiny_workspace):
    def submit(site: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_lwroi("submit", str(TINY_CONFIG), "--site", str(site), "--image", str(lwroi_image),
                         "--set", "run.output_dir=runs/slurm-check", *extra, cwd=tiny_workspace, timeout=120,
                         check=False)

    ok = submit(cluster_site, "--check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "FAIL" not in ok.stdout and re.search(r"(\d+) of \1 checks passed", ok.stdout), ok.stdout
    assert "ok    srun PMI: LWROI_SRUN_MPI=pmi2" in ok.stdout and "ok    array job fits" in ok.stdout

    nproc = int(_slurm("sinfo", "--noheader", "--format=%c").split()[0])
    greedy = cluster_site.parent / "greedy.env"  # beside the scripts: more CPUs per rank than the node has
    greedy.write_text(cluster_site.read_text() + f"LWROI_CPUS_PER_RANK={nproc * 4}\n")
    check = submit(greedy, "--check")
    assert check.returncode == 1 and f"FAIL  array job fits: the array job: LWROI_CPUS_PER_RANK={nproc * 4}" \
        in check.stdout, check.stdout
    queued = lambda: set(_slurm("squeue", "--noheader", "--format=%i").split())  # noqa: E731
    before = queued()
    refused = submit(greedy)
    assert refused.returncode != 0 and f"LWROI_CPUS_PER_RANK={nproc * 4} asks for more CPUs per rank" \
        in refused.stderr, refused.stdout + refused.stderr
    assert "nothing was submitted" in refused.stderr and queued() <= before  # no new job
    assert not (tiny_workspace / "runs" / "slurm-check").exists()
