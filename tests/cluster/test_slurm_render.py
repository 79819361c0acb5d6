"""The Slurm chain as rendered command lines: golden file, shell quoting of odd paths, site file, task states."""

from __future__ import annotations

import difflib
import json
import os
import shlex
import shutil
import stat
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from lwroi.cli import main
from lwroi.config import load_config
from lwroi.exceptions import ConfigError
from lwroi.orchestration.slurm import (
    SCRIPTS,
    SiteSettings,
    build_chain,
    describe_unfinished_tasks,
    parse_job_id,
    parse_task_states,
    parse_tasks,
    read_site,
    render_chain,
)
from tests.conftest import DEMO_CONFIG, REPO
from tests.test_preflight import write_layout

GOLDEN = Path(__file__).parent / "golden" / "chain_odd_paths.sh"
ODD = "/clusters/it's a \"dir\" with $pace"
"""A path with spaces, both quotes and a dollar sign: every command builder must keep it one word."""


OVERRIDES = [f"run.output_dir={ODD}/runs/demo out", f"data.root={ODD}/data", "data.rois=[V1, 'FFA']"]


def odd_chain(**kwargs):
    cfg = load_config(DEMO_CONFIG, OVERRIDES)
    site = SiteSettings(partition="gpu", account="proj 42", sbatch_flags=("--qos=normal", "--comment=a b"),
                        gpus_per_rank=1, cpus_per_rank=4, bind=("/scratch", "/opt/ref:/ref:ro"),
                        apptainer_flags=("--nv", "--env", "NOTE=x y"), srun_flags=("--cpu-bind=cores",),
                        scripts_dir=Path(ODD) / "slurm", array_max_running=2, modules=("apptainer/1.3", "openmpi"))
    options = {"config_path": Path("configs/demo.yaml"), "overrides": OVERRIDES,
               "workdir": Path(ODD) / "work", "image": Path("images/lwroi.sif"), "shards": 4, "ranks_per_task": 2,
               **kwargs}
    return build_chain(cfg, site, **options)


def test_rendered_chain_matches_the_golden_file():
    text = render_chain(odd_chain())
    if os.environ.get("LWROI_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    want = GOLDEN.read_text()
    diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True), str(GOLDEN), "rendered"))
    assert text == want, f"rendered chain differs from the golden file (LWROI_UPDATE_GOLDEN=1 rewrites it):\n{diff}"


@pytest.fixture
def fake_sbatch(tmp_path):
    """An ``sbatch`` that records its argv as one JSON line and prints the next job ID."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.jsonl"
    script = bin_dir / "sbatch"
    script.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                      f"log = {str(log)!r}\n"
                      "with open(log, 'a') as fh: fh.write(json.dumps(sys.argv[1:]) + '\\n')\n"
                      "print(str(100 + sum(1 for _ in open(log))) + ';cluster')\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir, log


def test_rendered_script_gives_sbatch_exactly_the_argv_of_each_job(fake_sbatch):
    bin_dir, log = fake_sbatch
    chain = odd_chain()
    proc = subprocess.run(["bash", "-c", render_chain(chain)], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, check=True)
    ids = {"extract": "101", "array": "102", "reduce": "103"}
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [job.argv(ids)[1:] for job in chain.jobs]
    assert proc.stdout.split() == ["extract=101", "array=102", "reduce=103"]


def test_chain_waits_afterok_on_extract_and_afterany_on_the_array():
    jobs = {job.name: job.argv({"extract": "7", "array": "8"}) for job in odd_chain().jobs}
    assert "--dependency=afterok:7" in jobs["array"]
    assert "--dependency=afterany:8" in jobs["reduce"]
    assert jobs["reduce"][jobs["reduce"].index(str(Path(ODD) / "slurm" / SCRIPTS["reduce"])) + 1] == "8"


def test_chain_without_extract_starts_with_the_array():
    chain = odd_chain(extract=False)
    assert [job.name for job in chain.jobs] == ["array", "reduce"]
    assert not any(arg.startswith("--dependency") for arg in chain.jobs[0].argv({}))


def test_a_zoo_extracts_in_an_array_over_models_and_video_shards_before_the_extract_job():
    cfg = load_config(REPO / "configs" / "zoo-demo.yaml")
    site = SiteSettings(scripts_dir=Path("/site/slurm"), array_max_running=3)
    chain = build_chain(cfg, site, config_path=Path("configs/zoo-demo.yaml"), overrides=[], workdir=Path("/work"),
                        image=Path("lwroi.sif"), shards=8, ranks_per_task=1)
    assert [job.name for job in chain.jobs] == ["extract_array", "extract", "array", "reduce"]
    ids = {"extract_array": "6", "extract": "7", "array": "8"}
    raw, extract, array = (job.argv(ids) for job in chain.jobs[:3])
    tasks = min(8, len(cfg.model_names) * cfg.run.extract_shards)  # 5 models x 2 video shards
    assert f"--array=0-{tasks - 1}%3" in raw and raw[raw.index("/site/slurm/" + SCRIPTS["array"]) + 1] == str(tasks)
    assert raw[raw.index("extract"):][:3] == ["extract", "--raw", "/work/configs/zoo-demo.yaml"]
    assert "--dependency=afterok:6" in extract and "--raw" not in extract
    assert "--dependency=afterok:7" in array
    script = render_chain(chain)
    assert 'extract_array_job=$(' in script and '--dependency=afterok:"$extract_array_job"' in script


def test_array_indices_are_the_shard_numbers_of_a_subset():
    array = odd_chain(tasks=parse_tasks("1,3", 4)).jobs[1].argv({"extract": "7"})
    assert "--array=1,3%2" in array
    assert array[array.index(str(Path(ODD) / "slurm" / SCRIPTS["array"])) + 1] == "4"  # N stays 4


def test_binds_cover_the_working_dir_the_data_and_the_site_paths_once():
    chain = odd_chain()
    # the config's folder and the feature store lie inside the working directory
    assert chain.binds == (f"{ODD}/work", f"{ODD}/data", f"{ODD}/runs/demo out", "/scratch", "/opt/ref:/ref:ro")


def test_a_path_with_a_colon_cannot_be_bound():
    cfg = load_config(DEMO_CONFIG, ["data.root=/data/a:b"])
    with pytest.raises(ConfigError, match=r"cannot bind a path containing ',' or ':': /data/a:b"):
        build_chain(cfg, SiteSettings(), config_path=DEMO_CONFIG, overrides=[], workdir=REPO,
                    image=Path("x.sif"), shards=2, ranks_per_task=2)


def test_every_job_gets_the_site_modules_in_its_environment():
    for job in odd_chain().jobs:
        assert "--export=ALL,LWROI_MODULES=apptainer/1.3 openmpi" in job.argv({"extract": "7", "array": "8"})


def test_site_file_modules_are_read_and_checked(site_dir):
    path = site_dir / "site.env"
    path.write_text('LWROI_MODULES="apptainer/1.3  openmpi"\nLWROI_SBATCH_FLAGS=--qos=high\n')
    site = read_site(path, {})
    assert site.modules == ("apptainer/1.3", "openmpi")
    assert site.sbatch_flags == ("--qos=high",)
    assert site.module_export == ("--export=ALL,LWROI_MODULES=apptainer/1.3 openmpi",)
    path.write_text('LWROI_MODULES=apptainer\nLWROI_SBATCH_FLAGS="--export=NONE"\n')
    with pytest.raises(ConfigError, match=r"LWROI_SBATCH_FLAGS already has an --export option"):
        read_site(path, {})
    path.write_text("LWROI_MODULES='apptainer,x'\n")
    with pytest.raises(ConfigError, match=r"LWROI_MODULES = \['apptainer,x'\]: not a module name"):
        read_site(path, {})


@pytest.fixture
def fake_job_commands(tmp_path):
    """``srun`` and ``scontrol`` that append their argv to ``calls.log`` (``srun`` exits 0)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("srun", "scontrol"):
        (bin_dir / name).write_text(f'#!/bin/bash\necho "{name} $*" >>{shlex.quote(str(log))}\n')
        (bin_dir / name).chmod(0o755)
    return bin_dir, log


SCRIPT_ARGS = {"extract": ["--mpi=pmi2", "apptainer", "exec"], "array": ["4", "3", "--mpi=pmi2", "apptainer"],
               "reduce": ["8", "srun", "summarize"]}
"""Arguments of each batch script as the chain passes them (the reduce job's command is ``srun`` here, to log it)."""


@pytest.mark.parametrize("job", sorted(SCRIPTS))
@pytest.mark.parametrize("has_module", [True, False], ids=["module", "no-module"])
def test_batch_scripts_load_the_site_modules_before_the_step(fake_job_commands, job, has_module):
    bin_dir, log = fake_job_commands
    # `module` as the shell function that Lmod and Environment Modules define and export to jobs
    define = f'module() {{ echo "module $*" >>{shlex.quote(str(log))}; }}; export -f module; ' if has_module else ""
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "LWROI_MODULES": "apptainer/1.3 openmpi",
           "SLURM_JOB_ID": "9", "SLURM_ARRAY_JOB_ID": "8", "SLURM_ARRAY_TASK_ID": "1"}
    proc = subprocess.run(["bash", "-c", define + 'exec bash "$@"', "bash", str(REPO / "slurm" / SCRIPTS[job]),
                           *SCRIPT_ARGS[job]], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = [line.split()[0] for line in log.read_text().splitlines() if not line.startswith("scontrol")]
    if has_module:
        assert calls == ["module", "srun"]
        assert "module load apptainer/1.3 openmpi" in log.read_text()
        assert "module load apptainer/1.3 openmpi" in proc.stdout
    else:
        assert calls == ["srun"]
        assert "no `module` command" in proc.stderr and "LWROI_MODULES=apptainer/1.3 openmpi not loaded" in proc.stderr


@pytest.mark.parametrize("job", sorted(SCRIPTS))
def test_batch_scripts_load_nothing_without_site_modules(fake_job_commands, job):
    bin_dir, log = fake_job_commands
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "SLURM_JOB_ID": "9", "SLURM_ARRAY_JOB_ID": "8",
           "SLURM_ARRAY_TASK_ID": "1"}
    proc = subprocess.run(["bash", str(REPO / "slurm" / SCRIPTS[job]), *SCRIPT_ARGS[job]], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "module" not in proc.stdout + proc.stderr
    assert [line.split()[0] for line in log.read_text().splitlines() if not line.startswith("scontrol")] == ["srun"]


@pytest.mark.parametrize("text,want", [("0", (0,)), ("3,1", (1, 3)), ("0-2,2", (0, 1, 2))])
def test_parse_tasks_reads_lists_and_ranges(text, want):
    assert parse_tasks(text, 4) == want


@pytest.mark.parametrize("text", ["4", "x", "1-", ""])
def test_parse_tasks_refuses_tasks_outside_the_shards(text):
    with pytest.raises(ConfigError, match=r"--tasks"):
        parse_tasks(text, 4)


def test_parse_job_id_takes_the_id_before_the_cluster_name():
    assert parse_job_id("1234;gpu-cluster\n") == "1234"


@pytest.fixture
def site_dir(tmp_path):
    """A copy of the slurm/ folder under a path with spaces and quotes, as a site would make it."""
    folder = tmp_path / "site \"a\" it's"
    shutil.copytree(REPO / "slurm", folder)
    return folder


def test_repository_site_file_states_the_defaults(site_dir):
    site = read_site(site_dir / "site.env", {"HOME": "/home/me"})
    for f in fields(SiteSettings):
        if f.name not in ("image", "scripts_dir"):
            assert getattr(site, f.name) == f.default, f.name
    assert site.image == "/home/me/lwroi.sif"
    assert site.scripts_dir == site_dir


def test_site_file_values_are_unquoted_and_expanded(site_dir):
    path = site_dir / "site.env"
    path.write_text('LWROI_IMAGE="~/img dir/lwroi.sif"  # the image\nLWROI_BIND="${DATA}, /b"\n'
                    "LWROI_SBATCH_FLAGS='--qos=high --comment=\"a b\"'\nLWROI_SHARDS=12\n")
    site = read_site(path, {"HOME": "/h", "DATA": "/data/x"})
    assert (site.image, site.bind, site.shards) == ("/h/img dir/lwroi.sif", ("/data/x", "/b"), 12)
    assert site.sbatch_flags == ("--qos=high", "--comment=a b")


@pytest.mark.parametrize("line,match", [
    ("LWROI_PARTITON=gpu", r"site.env:2: unknown key 'LWROI_PARTITON'; valid keys, with their defaults: "
                           r"LWROI_PARTITION='', "),
    ("LWROI_SHARDS=four", r"site.env:2: LWROI_SHARDS = 'four': expected an integer"),
    ("LWROI_RANKS_PER_TASK=0", r"site.env:2: LWROI_RANKS_PER_TASK = 0: must be >= 1"),
    ("LWROI_IMAGE=$NOPE/x.sif", r"site.env:2: LWROI_IMAGE: \$NOPE is not set in the environment"),
    ("LWROI_PARTITION gpu", r"site.env:2: expected KEY=VALUE"),
])
def test_site_file_errors_name_the_line_and_key(site_dir, line, match):
    path = site_dir / "site.env"
    path.write_text(f"# site\n{line}\n")
    with pytest.raises(ConfigError, match=match):
        read_site(path, {})


def test_unknown_site_key_lists_every_valid_key_with_its_default(site_dir):
    path = site_dir / "site.env"
    path.write_text("LWROI_GPUS=2\n")
    with pytest.raises(ConfigError) as caught:
        read_site(path, {})
    listed = str(caught.value).split("valid keys, with their defaults: ", 1)[1].split(", ")
    want = {f"LWROI_{f.name.upper()}": f.default for f in fields(SiteSettings) if f.name != "scripts_dir"}
    assert [item.split("=", 1)[0] for item in listed] == list(want)
    assert {"LWROI_SHARDS=4", "LWROI_TIME_FIT=08:00:00", "LWROI_APPTAINER_FLAGS=--nv", "LWROI_IMAGE=''"} <= set(listed)
    # each listed default, written back as a site file, reads as the default
    path.write_text("\n".join(listed) + "\n")
    site = read_site(path, {})
    assert all(getattr(site, f.name) == f.default for f in fields(SiteSettings) if f.name != "scripts_dir")


def test_site_file_needs_the_batch_scripts_beside_it(tmp_path):
    (tmp_path / "site.env").write_text("LWROI_SHARDS=2\n")
    with pytest.raises(ConfigError, match=r"batch scripts beside it are missing: lwroi-extract.sbatch"):
        read_site(tmp_path / "site.env", {})


def test_submit_dry_run_prints_the_chain_and_submits_nothing(site_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_layout(tmp_path / "data" / "demo", subjects=("sub01",), rois=("V1",), n_train=150, n_challenge=12)
    code = main(["submit", str(DEMO_CONFIG), "--site", str(site_dir / "site.env"), "--image", "lwroi.sif",
                 "--shards", "3", "--set", "run.output_dir=runs/x", "--set", "data.subjects=[sub01]",
                 "--set", "data.rois=[V1]", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("#!/bin/bash\n")
    assert "--array=0-2" in out and "lwroi fit" in out and "--shard" not in out
    assert not (tmp_path / "runs").exists()


SCONTROL = """\
JobId=4 ArrayJobId=4 ArrayTaskId=3 JobName=lwroi-fit JobState=COMPLETED Reason=None Dependency=(null) Requeue=1 \
Restarts=0 BatchFlag=1 ExitCode=0:0 Command=/a b/lwroi-array.sbatch StdOut=/tmp/x y.out
JobId=7 ArrayJobId=4 ArrayTaskId=2 JobName=lwroi-fit JobState=CANCELLED Reason=None Restarts=0 ExitCode=0:15
JobId=6 ArrayJobId=4 ArrayTaskId=1 JobName=lwroi-fit JobState=FAILED Reason=NonZeroExitCode Restarts=2 ExitCode=1:0
JobId=5 ArrayJobId=4 ArrayTaskId=0 JobName=lwroi-fit JobState=COMPLETED Reason=None Restarts=1 ExitCode=0:0
JobId=9 ArrayJobId=9 ArrayTaskId=4-6%2 JobName=lwroi-fit JobState=CANCELLED Reason=DependencyNeverSatisfied \
Dependency=afterok:8(failed) Restarts=0 ExitCode=0:0
"""


def test_task_states_from_scontrol_name_the_tasks_that_did_not_complete():
    states = parse_task_states(SCONTROL)
    assert [s.task for s in states] == ["0", "1", "2", "3", "4-6%2"]
    assert [s.n_tasks for s in states] == [1, 1, 1, 1, 3]
    assert describe_unfinished_tasks(states) == [
        "array task 1 (job 6): FAILED, exit code 1:0, reason NonZeroExitCode, requeued 2x",
        "array task 2 (job 7): CANCELLED, exit code 0:15",
        "array tasks 4-6%2 (job 9): CANCELLED, exit code 0:0, reason DependencyNeverSatisfied",
    ]


# `sacct --jobs 4 --allocations --duplicates --parsable2 --format=JobID,JobIDRaw,State,ExitCode,Reason` as a
# Slurm 22.05 site with slurmdbd prints it (task 0 requeued once; tasks 4-6 still pending together)
SACCT = """\
JobID|JobIDRaw|State|ExitCode|Reason
4_0|5|REQUEUED|0:0|None
4_0|5|COMPLETED|0:0|None
4_1|6|FAILED|1:0|NonZeroExitCode
4_2|7|CANCELLED by 0|0:15|None
4_3|4|COMPLETED|0:0|None
4_[4-6%2]|4|PENDING|0:0|Dependency
"""


def test_task_states_from_sacct_match_scontrols():
    states = parse_task_states(SACCT)
    assert [(s.task, s.job_id, s.state, s.exit_code, s.restarts) for s in states] == [
        ("0", "5", "COMPLETED", "0:0", 1), ("1", "6", "FAILED", "1:0", 0), ("2", "7", "CANCELLED", "0:15", 0),
        ("3", "4", "COMPLETED", "0:0", 0), ("4-6%2", "4", "PENDING", "0:0", 0)]
    assert states[-1].n_tasks == 3
    assert describe_unfinished_tasks(states)[:2] == [
        "array task 1 (job 6): FAILED, exit code 1:0, reason NonZeroExitCode",
        "array task 2 (job 7): CANCELLED, exit code 0:15",
    ]


def test_a_task_whose_units_are_recorded_done_is_done_whatever_slurm_says():
    states = parse_task_states(SCONTROL)
    lines = describe_unfinished_tasks(states, lambda s: s.task == "2")
    assert "array task 2 (job 7): CANCELLED, exit code 0:15; all its units are recorded done" in lines[1]
    assert "recorded done" not in lines[0]


def test_ranks_and_steps_ask_for_nodes_and_cpus_explicitly():
    """srun does not inherit sbatch's --cpus-per-task (Slurm >= 22.05): the step line passes it itself."""
    for job in odd_chain().jobs[:2]:
        argv = job.argv({"extract": "7"})
        assert "--nodes=1" in argv and "--ntasks=2" in argv and "--cpus-per-task=4" in argv
        step = argv[argv.index("--mpi=pmi2"):]
        assert step[1] == "--cpus-per-task=4", step[:3]
