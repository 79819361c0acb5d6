"""Reduce unit records into the run's tables: ``results.csv``, ``summary.csv`` and per-voxel scores.

Works from the files alone (no MPI), so ``lwroi summarize RUN_DIR`` gives the same tables
as the end of a run, and reports every unit that is missing or failed instead of
silently summarising a partial run.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lwroi._io import atomic_path, atomic_save_npy
from lwroi.data import noise_normalised
from lwroi.orchestration.plan import Unit
from lwroi.orchestration.results import ResultStore
from lwroi.outputs.comparison import compare_models, hierarchy_scores, model_pairs, profile_centre
from lwroi.outputs.volumes import nifti_writable, scores_volume, volume_affine, write_nifti

log = logging.getLogger("lwroi")


@dataclass
class Reduction:
    """The reduced tables and what kept them from being complete."""

    results: pd.DataFrame
    summary: pd.DataFrame
    missing: list[str]
    failed: list[str]

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table of the run by file name: the two of one model, and the comparison of the models.

        The comparison's statistics need scipy; where it is not installed (a login node's minimal
        install) only the first two are written, with a warning.
        """
        if importlib.util.find_spec("scipy") is None:
            log.warning("scipy is not installed here: comparison.csv, hierarchy.csv and model_pairs.csv were not "
                        "written (results.csv and summary.csv were); pip install scipy and rerun `lwroi summarize`, "
                        "or run it in the image")
            return {"results.csv": self.results, "summary.csv": self.summary}
        comparison = compare_models(self.results) if not self.results.empty else pd.DataFrame()
        tables = {"results.csv": self.results, "summary.csv": self.summary, "comparison.csv": comparison,
                  "hierarchy.csv": hierarchy_scores(comparison) if not comparison.empty else pd.DataFrame()}
        if self.results["model"].nunique() > 1:
            tables["model_pairs.csv"] = model_pairs(self.results)
        return tables

    @property
    def complete(self) -> bool:
        return not self.missing and not self.failed


def reduce_run(store: ResultStore, units: list[Unit]) -> Reduction:
    """Read every fit unit's record into one row per model × subject × ROI, and average per model and ROI.

    Only fit records are read: the tables need nothing else, so a lost or corrupt tuning record
    (which a rerun would recompute to no effect on any fit) does not hold the summary back.
    """
    missing, failed, rows = [], [], []
    fits = [u for u in units if u.phase == "fit"]
    for unit in fits:
        record = store.read(unit.key)
        if record is None:
            missing.append(unit.key)
        elif record.status != "ok":
            failed.append(unit.key)
        else:
            rows.append(_result_row(unit.model, record.payload))
    results = pd.DataFrame(rows)
    if results.empty:
        columns = ["model", "roi", "pcc_mean", "pcc_std", "n_subjects", "noise_ceiling_mean", "pcc_normalized_mean"]
        return Reduction(results, pd.DataFrame(columns=columns), missing, failed)
    for column in ("noise_ceiling", "pcc_normalized", "n_reliable_voxels",
                   *(c for c in results.columns if c.startswith("profile_"))):
        results[column] = pd.to_numeric(results[column])  # None (no reliable voxel, or an older record) -> NaN
    for column in ("model", "roi"):  # plan order, not alphabetical
        categories = list(dict.fromkeys(getattr(u, column) for u in fits))
        results[column] = pd.Categorical(results[column], categories=categories, ordered=True)
    results = results.sort_values(["model", "roi", "subject"]).reset_index(drop=True)
    by_roi = results.groupby(["model", "roi"], observed=True)
    # std over subjects with ddof 1 (pandas' default), as the original's avg_res.csv: NaN for one subject
    summary = by_roi["pcc"].agg(pcc_mean="mean", pcc_std="std", n_subjects="count")
    summary["noise_ceiling_mean"] = by_roi["noise_ceiling"].mean()
    summary["pcc_normalized_mean"] = by_roi["pcc_normalized"].mean()
    for column in (c for c in results.columns if c.startswith("profile_")):
        summary[column] = by_roi[column].mean()  # the ROI's layer profile: subject mean
    summary = summary.reset_index()
    for table in (results, summary):
        table["model"] = table["model"].astype(str)
        table["roi"] = table["roi"].astype(str)
    return Reduction(results, summary, missing, failed)


def _result_row(model: str, payload: dict) -> dict:
    row = {"model": model, **{k: payload[k] for k in ("subject", "roi", "pcc", "n_voxels", "n_valid_voxels")}}
    row["family"] = payload.get("family", "")
    # noise ceilings came later: records of older runs lack them, and their rows show them empty
    row.update({k: payload.get(k) for k in ("noise_ceiling", "pcc_normalized", "n_reliable_voxels")})
    row.update({k: payload[k] for k in ("wc", "lay", "solver", "best_epoch", "n_epochs", "random_weights")})
    profile = payload.get("layer_profile") or [None] * len(payload["layers"])  # later too: empty for older records
    row["profile_centre"] = profile_centre(profile) if payload.get("layer_profile") else None
    for name, share in zip(payload["layers"], profile, strict=True):
        row[f"profile_{name}"] = share
    for name, weight in zip(payload["layers"], payload["layer_weights"], strict=True):
        row[f"weight_{name}"] = weight
    for name, contribution in zip(payload["layers"], payload["contributions"], strict=True):
        row[f"contrib_{name}"] = contribution
    return row


def write_tables(run_dir: str | Path, reduction: Reduction, store: ResultStore,
                 wb_affine: Sequence[float] = ()) -> list[Path]:
    """Write ``results.csv``, ``summary.csv``, ``scores/<model>/<subject>_<roi>.npy`` and WB NIfTI maps atomically.

    A fit with a voxel mask (WB) also gets ``scores/<model>/<subject>_<roi>.nii.gz`` (held-out r) and
    ``scores/<model>/<subject>_<roi>_normalized.nii.gz`` (r / sqrt(reliability)) in the scanner volume; where
    nibabel is not installed (a login node's minimal install) the maps are left out with a warning.
    """
    run_dir = Path(run_dir)
    written = []
    skipped_maps = 0
    for name, table in reduction.tables().items():
        with atomic_path(run_dir / name) as tmp:
            table.to_csv(tmp, index=False, float_format="%.8g")
        written.append(run_dir / name)
    affine = None  # looked up at the first WB map, so a missing data.wb_affine warns once, not per subject
    for _, row in reduction.results.iterrows():
        key = f"fit/{row['model']}/{row['subject']}/{row['roi']}"
        stem = f"{row['model']}/{row['subject']}_{row['roi']}"
        target = run_dir / "scores" / f"{stem}.npy"
        scores = store.load_array(key, "scores")
        atomic_save_npy(target, scores)
        written.append(target)
        record = store.read(key, verify_arrays=False)
        if "voxel_mask" in record.arrays and not nifti_writable():
            skipped_maps += 1
        elif "voxel_mask" in record.arrays:
            mask = store.load_array(key, "voxel_mask")
            affine = volume_affine(wb_affine) if affine is None else affine
            normalised = noise_normalised(scores, store.load_array(key, "reliability"))
            for suffix, values in (("", scores), ("_normalized", normalised)):
                path = run_dir / "scores" / f"{stem}{suffix}.nii.gz"
                written.append(write_nifti(path, scores_volume(values, mask), affine))
    if skipped_maps:
        log.warning("nibabel is not installed here: the NIfTI maps of %d whole-brain fit(s) were not written "
                    "(scores/*.npy were); pip install nibabel and rerun `lwroi summarize %s`, or run it in the "
                    "image", skipped_maps, run_dir)
    return written
