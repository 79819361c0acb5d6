"""``lwroi report`` draws its figures without touching matplotlib's process-wide backend or pyplot, and says
plainly where matplotlib is missing (a login node's minimal install)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

import lwroi.outputs.report as report
from lwroi.exceptions import LwroiError

CODE = """
import sys, matplotlib, pandas as pd
from pathlib import Path
import lwroi.outputs.report as report
results = pd.DataFrame({"roi": ["V1", "FFA"], "weight_conv1": [0.2, 0.7], "weight_fc8": [0.8, 0.3]})
name = report._save(Path(sys.argv[1]), "heat.png", report._heatmap(results, ["V1", "FFA"], ["conv1", "fc8"],
                                                                   "weight_", "weight"))
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules, (Path(sys.argv[1]) / name).stat().st_size > 0)
"""


def test_importing_and_drawing_the_report_leaves_the_backend_alone(tmp_path):
    # a backend that is not Agg, as a user's session may have chosen: the report must not switch it
    env = {**os.environ, "MPLBACKEND": "svg"}
    proc = subprocess.run([sys.executable, "-c", CODE, str(tmp_path)], capture_output=True, text=True, env=env,
                          check=True)
    assert proc.stdout.split() == ["svg", "False", "True"], proc.stderr


def test_without_matplotlib_the_report_says_how_to_get_it(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(report.importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib"
                        else find_spec(name, *a))
    with pytest.raises(LwroiError, match=r"pip install matplotlib, or run `lwroi report` in the image"):
        report.write_report(tmp_path, store=None)
    assert not (tmp_path / "report").exists()
