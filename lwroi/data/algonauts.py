"""Read the Algonauts 2021 layout: sorted stimulus videos and per-subject ROI response pickles.

Layout under the dataset root::

    AlgonautsVideos268_All_30fpsmax/NNNN_*.mp4       numbered 0001..N; the first n_train_videos have responses
    participants_data_v2021/mini_track/subXX/V1.pkl  {'train': (n_videos, n_reps, n_voxels)}
    participants_data_v2021/full_track/subXX/WB.pkl  {'train': ..., 'voxel_mask': (78, 93, 71)}

Every problem is reported as a :class:`~lwroi.exceptions.DataLayoutError` naming the file or
folder, what was found and what was expected, so a broken dataset fails before any work starts.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lwroi._io import safe_load_pickle, sha256_file, sha256_file_cached
from lwroi.exceptions import DataLayoutError, DataWarning, UnsafePickleError

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


_VIDEO_INDEX = re.compile(r"(\d+)(?=[_.])")
"""The 1-based index every Algonauts clip name starts with (``0001_0-0-4-6-7-2-8-0-17500167.mp4``)."""


def list_videos(videos_dir: Path) -> list[Path]:
    """Sorted ``.mp4`` files of ``videos_dir``; sort order defines video indices (train first).

    Video i pairs with row i of every response pickle, so a missing, extra or renamed file would
    shift every later row silently. The sorted names must therefore carry the indices 1..N in
    order (see :func:`video_sequence_problems`).

    Raises
    ------
    DataLayoutError
        The folder is missing, holds no ``.mp4`` file, or its names are not numbered 1..N.
    """
    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise DataLayoutError(f"{videos_dir}: video folder not found")
    videos = sorted(p for p in videos_dir.iterdir() if p.suffix == ".mp4" and p.is_file())
    if not videos:
        raise DataLayoutError(f"{videos_dir}: no .mp4 files in the video folder")
    problems = video_sequence_problems([p.name for p in videos])
    if problems:
        raise DataLayoutError(_problem_list(f"{videos_dir}: the video names are not numbered 1..N in order", problems))
    return videos


def video_sequence_problems(names: Sequence[str]) -> list[str]:
    """Why sorted file ``names`` are not exactly ``0001_*``, ``0002_*``, ... in order; one line each.

    Names the files without an index prefix or with a repeated or zero index (extra files), the
    missing indices, and a file that sorts before a smaller index (indices of unequal width).
    A file missing at the end leaves no gap: ``data.n_videos`` catches that one.
    """
    problems: list[str] = []
    seen: dict[int, str] = {}
    for name in names:
        match = _VIDEO_INDEX.match(name)
        index = int(match.group(1)) if match else None
        if index is None:
            problems.append(f"{name}: extra file: its name does not start with a video index (0001_...)")
        elif index == 0:
            problems.append(f"{name}: extra file: index 0 is out of sequence (indices start at 1)")
        elif index in seen:
            problems.append(f"{name}: extra file: index {index} is also {seen[index]}")
        else:
            seen[index] = name
    by_index = sorted(seen)
    for before, after in pairwise(by_index):
        if after > before + 1:
            gap = f"{before + 1:04d}" if after == before + 2 else f"{before + 1:04d}..{after - 1:04d}"
            problems.append(f"missing video index {gap} (between {seen[before]} and {seen[after]})")
    kept = set(seen.values())
    in_name_order = [name for name in names if name in kept]
    for name, expected in zip(in_name_order, (seen[i] for i in by_index), strict=True):
        if name != expected:
            problems.append(f"{name} sorts before {expected}: give every index the same number of digits")
            break
    return problems


def _problem_list(headline: str, problems: Sequence[str]) -> str:
    """``headline`` and the first problems, one per indented line."""
    shown = list(problems[:_MAX_PROBLEM_LINES])
    if len(problems) > len(shown):
        shown.append(f"... and {len(problems) - len(shown)} more")
    return f"{headline}:\n  " + "\n  ".join(shown)


class VideoFingerprint(NamedTuple):
    """What identifies a video's content: name, size and the sha256 of its bytes."""

    name: str
    size: int
    sha256: str


def video_fingerprints(videos: Sequence[Path]) -> list[VideoFingerprint]:
    """Name, size and full sha256 of each video, so a clip replaced in place is never taken for the old one.

    Hashing every byte is affordable (measured: sha256 at 1.25 GB/s on one core), so the 1102
    Algonauts clips (1-2 GB) take a second or two plus reading them once, on one rank per launch;
    a cheaper size + mtime + partial hash would miss a clip rewritten with its old mtime. A
    process hashes an unchanged file once (the launch checks and then records the videos).
    """
    return [VideoFingerprint(p.name, p.stat().st_size, sha256_file_cached(p)) for p in videos]


def data_fingerprint(root: Path, *, videos_dir: str, responses_dir: str, subjects: Sequence[str],
                     rois: Sequence[str]) -> dict[str, Any]:
    """What a run's results depend on in the dataset, to tell later whether it changed in place.

    Returns
    -------
    dict
        ``videos``: [name, size, sha256] of every video, in order; ``responses``: sha256 of each
        existing pickle of ``subjects`` x ``rois``, by its path under the responses folder.
    """
    root = Path(root)
    responses_root = root / responses_dir
    pickles = [roi_response_path(responses_root, s, r) for s in subjects for r in rois if r in ROI_TRACKS]
    return {
        "videos": [list(v) for v in video_fingerprints(list_videos(root / videos_dir))],
        "responses": {p.relative_to(responses_root).as_posix(): sha256_file(p) for p in pickles if p.is_file()},
    }


def data_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per video or response file that differs between two :func:`data_fingerprint` results.

    Response files present in only one of them are not changes: a run may add ROIs or subjects later.
    """
    before = {name: (size, digest) for name, size, digest in old.get("videos", [])}
    after = {name: (size, digest) for name, size, digest in new.get("videos", [])}
    lines = [f"video {name}: removed" for name in before if name not in after]
    lines += [f"video {name}: added" for name in after if name not in before]
    lines += [f"video {name}: content changed (size {before[name][0]} -> {after[name][0]}, sha256 "
              f"{before[name][1][:12]} -> {after[name][1][:12]})"
              for name in before if name in after and before[name] != after[name]]
    old_responses, new_responses = old.get("responses", {}), new.get("responses", {})
    lines += [f"responses {path}: content changed (sha256 {old_responses[path][:12]} -> {digest[:12]})"
              for path, digest in sorted(new_responses.items())
              if path in old_responses and old_responses[path] != digest]
    return lines


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


def _checked_train(raw: Any, path: Path, roi: str, n_train_videos: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The ``train`` array and (WB only) the ``voxel_mask`` of a loaded pickle, after every shape check."""
    train = _train_array(raw, path)
    n_videos, _, n_voxels = train.shape
    if n_videos != n_train_videos:
        raise DataLayoutError(f"{path}: 'train' has {n_videos} videos; expected n_train_videos = {n_train_videos}")
    if n_voxels == 0:
        raise DataLayoutError(f"{path}: 'train' has shape {train.shape}: no voxels")
    return train, (_wb_voxel_mask(raw, path, n_voxels) if roi == "WB" else None)


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
    train, voxel_mask = _checked_train(safe_load_pickle(path), path, roi, n_train_videos)
    n_voxels = train.shape[2]

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
    n_videos: int = 0,
    responses: bool = True,
) -> None:
    """Check the layout cheaply (folders, files, video names and count) before any work starts.

    Nothing is loaded, so this costs milliseconds even on the full dataset; shapes are
    checked later by :func:`load_roi_responses`. ``responses=False`` checks the videos only:
    feature extraction reads nothing else, so it can start before the response files arrive.
    ``n_videos`` is the expected number of videos (``data.n_videos``; 0: not checked), which
    also catches a video missing at the end of the numbering.

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
        names = sorted(p.name for p in video_folder.iterdir() if p.suffix == ".mp4")
        problems.extend(f"{video_folder}: {line}" for line in video_sequence_problems(names))
        if n_videos and len(names) != n_videos:
            problems.append(f"{video_folder}: {len(names)} .mp4 files; data.n_videos = {n_videos}")
        if len(names) <= n_train_videos:
            problems.append(
                f"{video_folder}: {len(names)} .mp4 files; need at least n_train_videos + 1 = {n_train_videos + 1} "
                "(training videos first, then the challenge test set)"
            )
    if responses:
        problems.extend(_response_problems(root / responses_dir, subjects, rois))
    if problems:
        raise DataLayoutError(_problem_list(f"{root}: the dataset layout has {len(problems)} problem(s)", problems))


def _response_problems(responses_root: Path, subjects: Sequence[str], rois: Sequence[str]) -> list[str]:
    """Missing folders and pickles of the responses (and unknown ROI names), one line each."""
    problems: list[str] = []
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
    return problems


def response_problems(responses_root: Path, subjects: Sequence[str], rois: Sequence[str], *,
                      n_train_videos: int) -> list[str]:
    """Every problem of the response pickles a run would meet only when a unit loads them, one line each.

    Each existing pickle of ``subjects`` x ``rois`` is read with the safe unpickler and put
    through the loader's own checks (dict with a numeric 3-D ``train`` of ``n_train_videos``
    videos, voxels, a WB ``voxel_mask`` with one 1 per voxel); since every pickle must hold
    ``n_train_videos`` videos, the subjects also agree on the count. WB masks of all subjects
    must share one volume shape (the score maps use one affine). Missing files and unknown
    ROIs are left to :func:`check_dataset`. Pickles are read one at a time (peak memory: the
    largest file twice, ~1 GB for a float64 WB). Measured at ~700 MB/s from the page cache:
    the full Algonauts set (191k voxels x 1000 videos x 3 repetitions, 2.3 GB as float32,
    4.6 GB as float64) takes ~3-7 s, or the time to read it once from a slower disk.
    """
    problems: list[str] = []
    mask_shapes: dict[tuple[int, ...], list[str]] = {}
    for subject in subjects:
        for roi in (r for r in rois if r in ROI_TRACKS):
            path = roi_response_path(responses_root, subject, roi)
            if not path.is_file():
                continue
            try:
                _, mask = _checked_train(safe_load_pickle(path), path, roi, n_train_videos)
            except (DataLayoutError, UnsafePickleError) as exc:
                problems.append(str(exc))
                continue
            if mask is not None:
                mask_shapes.setdefault(mask.shape, []).append(subject)
    if len(mask_shapes) > 1:
        shapes = "; ".join(f"{shape} in {', '.join(subs)}" for shape, subs in mask_shapes.items())
        problems.append(f"{responses_root}: the WB voxel_mask volumes of the subjects differ in shape: {shapes}")
    return problems
