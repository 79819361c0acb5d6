"""The login node's install, exactly as the cluster docs give it, runs every login-node verb on a real run.

A fresh venv gets the packages of the docs' ``pip install ... && pip install --no-deps -e lwroi/`` line
(lwroi itself installed from this tree, non-editable) and nothing else: no torch, scipy, nibabel or
matplotlib. ``submit`` (``--dry-run``), ``status``, ``summarize`` and ``export`` must work on the tiny run;
``summarize`` leaves out the NIfTI maps with a warning and ``report`` stops with a plain error, as the
docs say. Needs a package index (or pip's cache) for the documented packages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO, TINY_CONFIG

pytestmark = pytest.mark.slow

DOCS = ("README.md", "slurm/README-cluster.md")
INSTALL_LINE = re.compile(r"^pip install (?P<packages>[^&\n]+?) && pip install --no-deps -e lwroi/$", re.MULTILINE)


def documented_packages() -> list[str]:
    """The packages of the login-node install line, which both docs must give alike."""
    found = {doc: INSTALL_LINE.findall((REPO / doc).read_text()) for doc in DOCS}
    assert all(len(lines) == 1 for lines in found.values()), f"one login install line per doc, found {found}"
    lines = {lines[0] for lines in found.values()}
    assert len(lines) == 1, f"the docs give different login installs: {lines}"
    return lines.pop().split()


@pytest.fixture(scope="module")
def login_venv(tmp_path_factory) -> Path:
    """A venv with only the documented packages and lwroi (no dependencies): its ``bin`` folder."""
    folder = tmp_path_factory.mktemp("login")
    root, source = folder / "venv", folder / "lwroi-src"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    # the source as a clone holds it, copied so that pip's build leaves nothing in this checkout
    shutil.copytree(REPO / "lwroi", source / "lwroi", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for args in (documented_packages(), ["--no-deps", str(source)]):
        proc = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"pip install {' '.join(args)} failed:\n{proc.stderr[-4000:]}"
    return root / "bin"


def login_lwroi(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``lwroi ARGS`` with the venv's entry point; nothing of this checkout on the path."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(bin_dir / "lwroi"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_login_venv_has_no_heavy_packages(login_venv):
    code = ("import importlib.util as u; print(sorted(m for m in ('torch', 'scipy', 'sklearn', 'nibabel', "
            "'matplotlib', 'mpi4py', 'av') if u.find_spec(m)))")
    proc = subprocess.run([str(login_venv / "python"), "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
    assert sys.prefix not in str(login_venv)


def test_login_verbs_work_with_the_documented_install(login_venv, tiny_run, tiny_workspace, tmp_path):
    run = tmp_path / "runs" / "plain"
    shutil.copytree(tiny_run, run)  # summarize, export and report write into the run; the fixture is shared
    for name in ("results.csv", "summary.csv"):
        (run / name).unlink()

    status = login_lwroi(login_venv, "status", str(run), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert re.search(r"^alexnet\s+fit\s+6\s", status.stdout, re.MULTILINE), status.stdout

    summary = login_lwroi(login_venv, "summarize", str(run), cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr
    assert f"wrote {run / 'summary.csv'}" in summary.stdout
    assert "nibabel is not installed here" in summary.stderr and "Traceback" not in summary.stderr
    for name in ("results.csv", "summary.csv"):  # the same tables as the full install's run wrote
        pd.testing.assert_frame_equal(pd.read_csv(run / name), pd.read_csv(tiny_run / name))

    export = login_lwroi(login_venv, "export", str(run), cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert (run / "export" / "mini_track.zip").is_file() and (run / "export" / "full_track.zip").is_file()

    report = login_lwroi(login_venv, "report", str(run), cwd=tmp_path)
    assert report.returncode == 2
    assert "pip install matplotlib" in report.stderr and "Traceback" not in report.stderr

    site = tmp_path / "site"
    shutil.copytree(REPO / "slurm", site)
    submit = login_lwroi(login_venv, "submit", str(TINY_CONFIG), "--site", str(site / "site.env"),
                         "--image", "lwroi.sif", "--set", "run.output_dir=runs/login", "--dry-run", cwd=tiny_workspace)
    assert submit.returncode == 0, submit.stderr
    assert submit.stdout.startswith("#!/bin/bash\n") and "lwroi fit" in submit.stdout
    assert "torch is not importable here" in submit.stderr
    assert not (tiny_workspace / "runs" / "login").exists()
