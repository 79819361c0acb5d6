"""One GPU per rank from the node-local rank; CPU fallback; one error for a bad device; launcher mismatch caught."""

from __future__ import annotations

import pytest

from lwroi.encoding.devices import check_allocated_gpus, choose_device, cuda_build, resolve_device
from lwroi.exceptions import DeviceError
from lwroi.orchestration.environment import allocated_gpus, check_launch, read_environment, threads_per_rank


@pytest.mark.parametrize("local_rank,n_gpus,expected", [(0, 4, "cuda:0"), (3, 4, "cuda:3"), (5, 4, "cuda:1"),
                                                        (1, 1, "cuda:0"), (2, 0, "cpu")])
def test_auto_device_is_local_rank_modulo_visible_gpus(local_rank, n_gpus, expected):
    assert choose_device("auto", local_rank, n_gpus)[0] == expected


def test_explicit_cpu_is_kept():
    assert choose_device("cpu", 3, 8)[0] == "cpu"


@pytest.mark.parametrize("spec,n_gpus,match", [
    ("cuda:2", 1, r"device 'cuda:2': only 1 CUDA device\(s\) visible \(cuda:0..cuda:0\)"),
    ("cuda", 0, r"device 'cuda': no CUDA device is available"),
    ("cuda:0", 0, r"device 'cuda:0': no CUDA device is available"),
    ("gpu0", 4, r"device 'gpu0': expected 'auto', 'cpu', 'cuda' or 'cuda:N'"),
])
def test_a_device_that_cannot_be_had_is_one_error(spec, n_gpus, match):
    with pytest.raises(DeviceError, match=match):
        choose_device(spec, 0, n_gpus)


def test_the_torch_device_follows_the_same_policy():
    assert str(resolve_device("cpu")) == "cpu"
    with pytest.raises(DeviceError, match=r"'gpu0': expected"):
        resolve_device("gpu0")


def test_threads_share_the_node():
    assert threads_per_rank(0, node_cpus=16, bound_cpus=16, local_size=4) == 4
    assert threads_per_rank(0, node_cpus=2, bound_cpus=2, local_size=3) == 1
    assert threads_per_rank(6, node_cpus=16, bound_cpus=16, local_size=4, cpus_per_task=2) == 6


def test_threads_follow_the_slurm_allocation_not_the_node():
    # a 64-core node, the job got 2 ranks x 4 CPUs: Slurm's count wins, then the rank's CPU binding
    assert threads_per_rank(0, node_cpus=64, bound_cpus=64, local_size=2, cpus_per_task=4) == 4
    assert threads_per_rank(0, node_cpus=64, bound_cpus=4, local_size=2) == 4


@pytest.mark.parametrize("var", ["SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"])
def test_local_rank_comes_from_the_launcher(var):
    job = read_environment(5, 8, env={var: "1", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert job.local_rank == 1
    assert job.visible_devices == "0,1"


def test_communicator_split_wins_over_variables():
    job = read_environment(5, 8, local_rank=2, local_size=4, env={"SLURM_LOCALID": "1"})
    assert (job.local_rank, job.local_size) == (2, 4)


def test_slurm_ids_are_read_once():
    env = {"SLURM_JOB_ID": "77", "SLURM_ARRAY_JOB_ID": "70", "SLURM_ARRAY_TASK_ID": "3", "SLURM_RESTART_COUNT": "2",
           "SLURM_CPUS_PER_TASK": "6"}
    job = read_environment(0, 1, env=env)
    assert (job.job_id, job.array_job_id, job.array_task_id, job.restart_count) == ("77", "70", "3", 2)
    assert job.cpus_per_task == 6 and read_environment(0, 1, env={}).cpus_per_task is None
    assert "array=70_3" in str(job) and "restarts=2" in str(job)


def test_launcher_mpi_mismatch_is_refused():
    job = read_environment(0, 1, env={"SLURM_NTASKS": "4"})
    with pytest.raises(RuntimeError, match=r"started 1 MPI rank\(s\) but SLURM_NTASKS=4"):
        check_launch(job)


def test_matching_launch_passes():
    check_launch(read_environment(1, 4, env={"SLURM_NTASKS": "4"}))
    check_launch(read_environment(0, 1, env={}))


@pytest.mark.parametrize("env,expected", [
    ({}, None),
    ({"CUDA_VISIBLE_DEVICES": ""}, None),
    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, None),  # Slurm: a GRES job on a node without the devices
    ({"CUDA_VISIBLE_DEVICES": "-1"}, None),  # the usual way to hide every GPU
    ({"SLURM_JOB_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"}, ("SLURM_JOB_GPUS", "2,3")),
    ({"SLURM_STEP_GPUS": "1", "SLURM_JOB_GPUS": "0,1"}, ("SLURM_STEP_GPUS", "1")),
    ({"CUDA_VISIBLE_DEVICES": "0"}, ("CUDA_VISIBLE_DEVICES", "0")),
])
def test_allocated_gpus_come_from_the_launcher(env, expected):
    assert allocated_gpus(env) == expected


def test_allocated_gpus_that_torch_cannot_see_stop_the_job_naming_the_cuda_build():
    with pytest.raises(DeviceError, match=r"GPUs were allocated \(SLURM_JOB_GPUS=0\) but torch sees none: "
                                          r"this torch is built for CUDA 13\.0, which needs an NVIDIA driver"):
        check_allocated_gpus("auto", ("SLURM_JOB_GPUS", "0"), 0, "13.0")
    with pytest.raises(DeviceError, match=r"CPU-only build"):
        check_allocated_gpus("cuda", ("CUDA_VISIBLE_DEVICES", "0"), 0, None)
    check_allocated_gpus("cpu", ("SLURM_JOB_GPUS", "0"), 0, "13.0")  # the CPU on purpose
    check_allocated_gpus("auto", ("SLURM_JOB_GPUS", "0"), 1, "13.0")  # the GPU is there
    check_allocated_gpus("auto", None, 0, "13.0")  # no GPU job: auto takes the CPU


@pytest.mark.parametrize("variable", ["SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES"])
def test_pre_work_check_fires_on_a_gpu_job_where_torch_sees_no_gpu(monkeypatch, variable):
    """This machine has no GPU: with Slurm's GPU variables set, the driver's pre-work check must refuse."""
    from lwroi.encoding.devices import visible_gpu_count
    from lwroi.orchestration import driver

    if visible_gpu_count():
        pytest.skip("a GPU is visible here: the check rightly passes")
    for name in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "0")
    problems = driver._device_problems("auto")
    assert len(problems) == 1 and f"GPUs were allocated ({variable}=0) but torch sees none" in problems[0]
    build = cuda_build()
    assert (f"built for CUDA {build}" if build else "CPU-only build") in problems[0]
    assert driver._device_problems("cpu") == []
