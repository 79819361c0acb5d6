"""How well runs on a `lwroi synth` dataset recover its planted truth, side by side.

Per ROI and run: the Spearman correlation of the fitted layer profile (summary.csv
``profile_<layer>``) with the planted layer shares (min/max of the profile for an ROI planted
flat), and the held-out r as a share of the planted noise ceiling. Used to decide defaults by
evidence (README, "Choosing defaults on planted data"):

    python scripts/planted_recovery.py DATA_DIR RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr


def recovery(truth: dict, summary: pd.DataFrame) -> pd.DataFrame:
    """One row per ROI: planted shape, profile recovery statistic and accuracy share of the ceiling."""
    columns = [f"profile_{layer}" for layer in truth["layers"]]
    table = summary.set_index("roi")
    rows = []
    for roi, planted in truth["rois"].items():
        profile = table.loc[roi, columns].to_numpy(float)
        flat = planted["shape"] == "flat"
        stat = profile.min() / profile.max() if flat else spearmanr(planted["layer_shares"], profile).statistic
        rows.append({"roi": roi, "shape": planted["shape"], "stat": "min/max" if flat else "spearman",
                     "recovery": stat, "r/ceiling": table.loc[roi, "pcc_mean"] / planted["noise_ceiling"]})
    return pd.DataFrame(rows).set_index("roi")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="the dataset folder lwroi synth wrote (has ground_truth.json)")
    parser.add_argument("run_dirs", type=Path, nargs="+", help="finished runs on that dataset")
    args = parser.parse_args()
    truth = json.loads((args.data_dir / "ground_truth.json").read_text())
    tables = {run.name: recovery(truth, pd.read_csv(run / "summary.csv")) for run in args.run_dirs}
    first = next(iter(tables.values()))
    out = first[["shape", "stat"]].copy()
    for name, table in tables.items():
        out[f"{name} recovery"] = table["recovery"].round(2)
        out[f"{name} r/ceiling"] = table["r/ceiling"].round(3)
    print(out.to_string())
    print("mean " + "  ".join(f"{name}: recovery {np.mean(t['recovery']):.3f}, r/ceiling {np.mean(t['r/ceiling']):.3f}"
                              for name, t in tables.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
