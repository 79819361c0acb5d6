"""The Algonauts 2021 challenge submission: every fit's predictions of the challenge videos.

The challenge expects, per track, a pickle ``{ROI: {subXX: array (n_challenge_videos, n_voxels)}}``
(``mini_track``: the nine ROIs; ``full_track``: ``WB``) inside a zip of the same name. The fit
units already predicted the challenge videos; this module gathers those arrays, checks every
subject and ROI is there with the shape its responses have, and writes the files atomically.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np

from lwroi._io import atomic_path, atomic_write_bytes
from lwroi.data import ROI_TRACKS
from lwroi.exceptions import IncompleteRunError, LwroiError
from lwroi.orchestration.plan import Unit
from lwroi.orchestration.results import ResultStore

Submission = dict[str, dict[str, dict[str, np.ndarray]]]
"""track -> ROI -> subject -> predictions (n_challenge_videos, n_voxels), float32."""


def collect_submission(store: ResultStore, units: list[Unit]) -> tuple[Submission, int]:
    """The predictions of every fit unit, by track, ROI and subject; and how many voxel columns were NaN.

    Voxels excluded from fitting (constant or all-NaN responses) have no prediction; they are
    written as 0 (the challenge takes no NaN) and counted.

    Raises
    ------
    IncompleteRunError
        A fit unit has no ``ok`` record.
    LwroiError
        A prediction's shape disagrees with the ROI's voxel count or the other fits' video count.
    """
    fits = [u for u in units if u.phase == "fit"]
    records = {u.key: store.read(u.key) for u in fits}  # each read verifies the record's array checksums
    missing = [key for key, record in records.items() if record is None or record.status != "ok"]
    if missing:
        raise IncompleteRunError(missing)
    submission: Submission = {}
    n_videos: set[int] = set()
    excluded = 0
    for unit in fits:
        payload = records[unit.key].payload
        pred = store.load_array(unit.key, "challenge_pred")
        if pred.ndim != 2 or pred.shape[1] != payload["n_voxels"]:
            raise LwroiError(f"{unit.key}: challenge predictions have shape {pred.shape}, expected (videos, "
                             f"{payload['n_voxels']} voxels)")
        n_videos.add(pred.shape[0])
        nan_columns = np.isnan(pred).all(axis=0)
        excluded += int(nan_columns.sum())
        track = submission.setdefault(ROI_TRACKS[unit.roi], {})
        track.setdefault(unit.roi, {})[unit.subject] = np.nan_to_num(pred, nan=0.0).astype(np.float32)
    if len(n_videos) != 1 or 0 in n_videos:
        raise LwroiError(f"challenge predictions cover {sorted(n_videos)} videos across the fits; expected one "
                         "positive count (the videos after the training ones)")
    return submission, excluded


def write_submission(out_dir: str | Path, submission: Submission) -> list[Path]:
    """Write ``<track>.pkl`` and ``<track>.zip`` (holding that pickle) per track; return the zips."""
    out_dir = Path(out_dir)
    written = []
    for track, rois in sorted(submission.items()):
        pkl = out_dir / f"{track}.pkl"
        atomic_write_bytes(pkl, pickle.dumps(rois, protocol=4))
        target = out_dir / f"{track}.zip"
        with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.write(pkl, arcname=pkl.name)
        written.append(target)
    return written
