"""Read the Algonauts 2021 layout: sorted stimulus videos and per-subject ROI response pickles.

Layout under the dataset root::

    AlgonautsVideos268_All_30fpsmax/*.mp4            sorted; the first n_train_videos have responses
    participants_data_v2021/mini_track/subXX/V1.pkl  {'train': (n_videos, n_reps, n_voxels)}
    participants_data_v2021/full_track/subXX/WB.pkl  {'train': ..., 'voxel_mask': (78, 93, 71)}

Every problem is reported as a :class:`~lwroi.exceptions.DataLayoutError` naming the file or
folder, what was found and what was expected, so a broken dataset fails before any work starts.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lwroi._io import safe_load_pickle
from lwroi.exceptions import DataLayoutError, DataWarning

ROI_TRACKS: dict[str, str] = {
    "V1": "mini_track",
    "V2": "mini_track",
    "V3": "mini_track",
    "V4": "mini_track",
    "LOC": "mini_track",
    "EBA": "mini_track",
    "FFA": "mini_track",
    "STS": "mini_track",
    "PPA": "mini_track",
    "WB": "full_track",
}
"""Which track folder holds each ROI's pickle (the whole-brain ``WB`` lives in ``full_track``)."""

_MAX_PROBLEM_LINES = 10


def roi_response_path(responses_root: Path, subject: str, roi: str) -> Path:
    """Path of one subject's ROI pickle, e.g. ``responses_root/mini_track/sub01/V1.pkl``.

    Raises
    ------
    ValueError
        ``roi`` is not an Algonauts ROI.
    """
    if roi not in ROI_TRACKS:
        raise ValueError(f"unknown ROI {roi!r}; known ROIs: {', '.join(ROI_TRACKS)}")
    return Path(responses_root) / ROI_TRACKS[roi] / subject / f"{roi}.pkl"


def list_videos(videos_dir: Path) -> list[Path]:
    """Sorted ``.mp4`` files of ``videos_dir``; sort order defines video indices (train first).

    Raises
    ------
    DataLayoutError
        The folder is missing or holds no ``.mp4`` file.
    """
    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise DataLayoutError(f"{videos_dir}: video folder not found")
    videos = sorted(p for p in videos_dir.iterdir() if p.suffix == ".mp4" and p.is_file())
    if not videos:
        raise DataLayoutError(f"{videos_dir}: no .mp4 files in the video folder")
    return videos


@dataclass(frozen=True, eq=False)
class RoiResponses:
    """One subject's responses in one ROI.

    Invalid voxels (a video without any finite repetition, or the same value for every video)
    cannot be fitted or scored; they stay in ``data`` so voxel indices keep matching
    ``voxel_mask``, and ``valid`` tells every consumer to exclude and report them.

    Attributes
    ----------
    data : ndarray of shape (n_videos, n_voxels), float32
        Mean over repetitions, ignoring NaN repetitions.
    repetitions : ndarray of shape (n_videos, n_repetitions, n_voxels), float32
    valid : ndarray of shape (n_voxels,), bool
    voxel_mask : ndarray of shape (78, 93, 71) or None
        Whole-brain volume with a 1 where a voxel is kept (``WB`` only).
    path : Path
        The pickle the responses came from.
    """

    data: np.ndarray
    repetitions: np.ndarray
    valid: np.ndarray
    voxel_mask: np.ndarray | None
    path: Path

    @property
    def n_voxels(self) -> int:
        """Number of voxels, valid or not."""
        return int(self.data.shape[1])


def _available_rois(responses_root: Path, subject: str) -> list[str]:
    return sorted(
        p.stem for track in sorted(set(ROI_TRACKS.values())) for p in (responses_root / track / subject).glob("*.pkl")
    )


def _missing_file_message(responses_root: Path, subject: str, path: Path) -> str:
    have = _available_rois(responses_root, subject)
    if have:
        return f"{path}: file not found; {subject} has: {', '.join(have)}"
    subjects = sorted({p.name for track in set(ROI_TRACKS.values()) for p in (responses_root / track).glob("sub*")})
    listed = ", ".join(subjects) if subjects else "none"
    return f"{path}: file not found; no ROI pickles for {subject} under {responses_root} (subjects found: {listed})"


def _train_array(raw: Any, path: Path) -> np.ndarray:
    if not isinstance(raw, dict):
        raise DataLayoutError(f"{path}: expected a dict with key 'train', got {type(raw).__name__}")
    if "train" not in raw:
        raise DataLayoutError(f"{path}: no 'train' key; keys: {sorted(map(str, raw))}")
    train = raw["train"]
    if not isinstance(train, np.ndarray) or train.dtype.kind not in "fiu":
        kind = f"array of {train.dtype}" if isinstance(train, np.ndarray) else type(train).__name__
        raise DataLayoutError(f"{path}: 'train' must be a numeric array, got {kind}")
    if train.ndim != 3:
        raise DataLayoutError(
            f"{path}: 'train' has shape {train.shape}; expected 3-D (n_videos, n_repetitions, n_voxels)"
        )
    return train


def _wb_voxel_mask(raw: dict, path: Path, n_voxels: int) -> np.ndarray:
    mask = raw.get("voxel_mask")
    if not isinstance(mask, np.ndarray) or mask.ndim != 3:
        found = f"shape {mask.shape}" if isinstance(mask, np.ndarray) else repr(type(mask).__name__)
        raise DataLayoutError(f"{path}: WB responses need a 3-D 'voxel_mask' volume; found {found}")
    n_ones = int(np.count_nonzero(mask == 1))
    if n_ones != n_voxels:
        raise DataLayoutError(f"{path}: 'voxel_mask' has {n_ones} ones but 'train' has {n_voxels} voxels")
    return mask


def load_roi_responses(responses_root: Path, subject: str, roi: str, *, n_train_videos: int) -> RoiResponses:
    """Load and check one subject's responses in one ROI, averaging the repetitions.

    The pickle is read with :func:`lwroi._io.safe_load_pickle`, which admits only numpy
    arrays and plain containers. A video whose repetitions are partly NaN is averaged over
    the finite ones; voxels that are still not finite, or constant over videos, are marked
    invalid (see :class:`RoiResponses`) and counted in a :class:`~lwroi.exceptions.DataWarning`.

    Parameters
    ----------
    responses_root : Path
        The ``participants_data_v2021`` folder.
    subject : str
        ``"sub01"`` .. ``"sub10"``.
    roi : str
        A key of :data:`ROI_TRACKS`.
    n_train_videos : int
        Expected number of videos with responses.

    Raises
    ------
    DataLayoutError
        The pickle is missing, malformed, has the wrong number of videos, a WB mask that does
        not match its voxels, or no valid voxel at all.
    UnsafePickleError
        The pickle asks for anything but numpy arrays and plain containers.
    """
    responses_root = Path(responses_root)
    path = roi_response_path(responses_root, subject, roi)
    if not path.is_file():
        raise DataLayoutError(_missing_file_message(responses_root, subject, path))
    raw = safe_load_pickle(path)
    train = _train_array(raw, path)
    n_videos, _, n_voxels = train.shape
    if n_videos != n_train_videos:
        raise DataLayoutError(f"{path}: 'train' has {n_videos} videos; expected n_train_videos = {n_train_videos}")
    if n_voxels == 0:
        raise DataLayoutError(f"{path}: 'train' has shape {train.shape}: no voxels")
    voxel_mask = _wb_voxel_mask(raw, path, n_voxels) if roi == "WB" else None

    repetitions = train.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice" for all-NaN videos
        data = np.nanmean(repetitions, axis=1)
    valid = np.isfinite(data).all(axis=0) & (data != data[:1]).any(axis=0)
    n_invalid = int(n_voxels - valid.sum())
    if n_invalid == n_voxels:
        raise DataLayoutError(f"{path}: all {n_voxels} voxels are non-finite or constant over videos")
    if n_invalid:
        warnings.warn(
            f"{path}: {n_invalid} of {n_voxels} voxels are non-finite or constant over videos; "
            "they are excluded from fitting and scoring",
            DataWarning,
            stacklevel=2,
        )
    return RoiResponses(data=data, repetitions=repetitions, valid=valid, voxel_mask=voxel_mask, path=path)


def check_dataset(
    root: Path,
    *,
    videos_dir: str,
    responses_dir: str,
    subjects: Sequence[str],
    rois: Sequence[str],
    n_train_videos: int,
) -> None:
    """Check the layout cheaply (folders, files, video count) before any work starts.

    Nothing is loaded, so this costs milliseconds even on the full dataset; shapes are
    checked later by :func:`load_roi_responses`.

    Raises
    ------
    DataLayoutError
        One error listing every problem found (the first lines of them).
    """
    root = Path(root)
    problems: list[str] = []
    if not root.is_dir():
        raise DataLayoutError(f"{root}: dataset root not found")
    video_folder = root / videos_dir
    if not video_folder.is_dir():
        problems.append(f"{video_folder}: video folder not found")
    else:
        n_found = sum(1 for p in video_folder.iterdir() if p.suffix == ".mp4")
        if n_found <= n_train_videos:
            problems.append(
                f"{video_folder}: {n_found} .mp4 files; need at least n_train_videos + 1 = {n_train_videos + 1} "
                "(training videos first, then the challenge test set)"
            )
    responses_root = root / responses_dir
    unknown = [roi for roi in rois if roi not in ROI_TRACKS]
    if unknown:
        problems.append(f"unknown ROI(s) {', '.join(unknown)}; known ROIs: {', '.join(ROI_TRACKS)}")
    if not responses_root.is_dir():
        problems.append(f"{responses_root}: responses folder not found")
    else:
        for subject in subjects:
            for track in sorted({ROI_TRACKS[roi] for roi in rois if roi in ROI_TRACKS}):
                folder = responses_root / track / subject
                wanted = [roi for roi in rois if ROI_TRACKS.get(roi) == track]
                if not folder.is_dir():
                    problems.append(f"{folder}: subject folder not found (needed for {', '.join(wanted)})")
                    continue
                problems.extend(
                    f"{folder / f'{roi}.pkl'}: file not found"
                    for roi in wanted
                    if not (folder / f"{roi}.pkl").is_file()
                )
    if problems:
        shown = problems[:_MAX_PROBLEM_LINES]
        if len(problems) > len(shown):
            shown.append(f"... and {len(problems) - len(shown)} more")
        raise DataLayoutError(f"{root}: the dataset layout has {len(problems)} problem(s):\n  " + "\n  ".join(shown))
