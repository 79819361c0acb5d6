"""Before submitting: every job checked against the cluster (``sinfo``, ``sbatch --test-only``); ``submit --check``.

The cluster is a fake runner here (canned ``sinfo``/``sbatch``/``srun`` answers); the real one-node
Slurm runs the same checks in tests/cluster/test_cluster_e2e.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from lwroi.config import load_config
from lwroi.orchestration.slurm import SiteSettings, build_chain, check_site, probe_job
from tests.conftest import DEMO_CONFIG, REPO


class FakeCluster:
    """Answers ``sinfo``, ``sbatch --test-only`` and ``srun --mpi=list`` like a cluster of 2-CPU nodes."""

    def __init__(self, node_cpus: int = 2, test_only_rc: int = 0, mpi: str = "none\npmi2\ncray_shasta\n") -> None:
        self.node_cpus, self.test_only_rc, self.mpi = node_cpus, test_only_rc, mpi
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "sinfo":
            out = f"{self.node_cpus} debug*\n" if "--format=%c %P" in argv else "debug*\n"
            return subprocess.CompletedProcess(argv, 0, out, "")
        if argv[0] == "sbatch":
            err = ("sbatch: error: Batch job submission failed: Requested node configuration is not available"
                   if self.test_only_rc else "sbatch: Job 12 to start at 2026-12-01T19:00:00 using 2 processors")
            return subprocess.CompletedProcess(argv, self.test_only_rc, "", err)
        if argv[:2] == ["srun", "--mpi=list"]:
            return subprocess.CompletedProcess(argv, 0, f"MPI plugin types are...\n{self.mpi}", "")
        raise AssertionError(argv)


def chain(site: SiteSettings, ranks: int = 2):
    cfg = load_config(DEMO_CONFIG, ["run.output_dir=/tmp/lwroi-x"])
    return build_chain(cfg, site, config_path=DEMO_CONFIG, overrides=[], workdir=REPO, image=Path("x.sif"),
                       shards=2, ranks_per_task=ranks)


def test_a_rank_asking_for_more_cpus_than_a_node_has_is_refused_naming_the_setting():
    site = SiteSettings(cpus_per_rank=8, gpus_per_rank=0)
    array = chain(site).jobs[1]
    problem = probe_job(array, site, FakeCluster(node_cpus=2))
    assert problem is not None
    assert "LWROI_CPUS_PER_RANK=8 asks for more CPUs per rank than any node of the default partition has (2)" in problem


def test_ranks_that_do_not_fit_the_nodes_name_ranks_and_nodes():
    site = SiteSettings(cpus_per_rank=2, gpus_per_rank=0)
    problem = probe_job(chain(site, ranks=3).jobs[1], site, FakeCluster(node_cpus=2))
    assert problem is not None and "3 rank(s) x 2 CPU(s) do not fit on LWROI_NODES=1" in problem
    assert probe_job(chain(site, ranks=3).jobs[1], replace(site, nodes=3), FakeCluster(node_cpus=2)) is None


def test_what_sbatch_test_only_refuses_is_quoted_with_the_request():
    site = SiteSettings(cpus_per_rank=1, gpus_per_rank=1, partition="gpu")
    fake = FakeCluster(node_cpus=2, test_only_rc=1)
    problem = probe_job(chain(site).jobs[0], site, fake)
    assert problem is not None and problem.startswith("the extract job cannot run as asked (LWROI_NODES=1, ")
    assert "LWROI_GPUS_PER_RANK=1" in problem and "Requested node configuration is not available" in problem
    test_only = next(c for c in fake.calls if c[0] == "sbatch")
    assert test_only[:2] == ["sbatch", "--test-only"] and not any(a.startswith("--dependency") for a in test_only)


def test_array_and_reduce_are_tested_without_their_dependencies():
    site = SiteSettings(cpus_per_rank=1, gpus_per_rank=0)
    fake = FakeCluster()
    for job in chain(site).jobs:
        assert probe_job(job, site, fake) is None
    assert all("--dependency" not in " ".join(c) for c in fake.calls)


def test_check_prints_one_line_per_check(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    site = SiteSettings(cpus_per_rank=1, gpus_per_rank=0, srun_mpi="pmix")
    checks = check_site(chain(site), site, FakeCluster())
    lines = [str(c) for c in checks]
    assert [c.what for c in checks] == ["Slurm commands", "partition", "extract job fits", "array job fits",
                                       "reduce job fits", "apptainer", "image", "srun PMI"]
    assert lines[1] == "ok    partition: LWROI_PARTITION empty: the default partition debug"
    assert not checks[6].ok  # x.sif does not exist
    assert lines[7].startswith("FAIL  srun PMI: LWROI_SRUN_MPI=pmix is not in srun --mpi=list")
    assert check_site(chain(site), replace(site, srun_mpi="pmi2"), FakeCluster())[7].ok
