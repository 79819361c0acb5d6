"""``lwroi report`` draws its figures without touching matplotlib's process-wide backend or pyplot."""

from __future__ import annotations

import os
import subprocess
import sys

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
