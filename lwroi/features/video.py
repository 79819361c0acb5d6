"""Decode video clips into the RGB frames the DNN sees (PyAV).

Two frame samplings: ``stride`` (every k-th frame counted from 1, as the original did: the frame
count then depends on the clip's fps) and ``count`` (a fixed number of evenly spaced frames, so
every clip weighs the same whatever its fps).
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

from lwroi.exceptions import DataLayoutError

SAMPLINGS = ("count", "stride")


def sample_frame_indices(n_frames: int, *, sampling: str, count: int, stride: int) -> np.ndarray:
    """Choose the indices of the frames to feed the DNN.

    Parameters
    ----------
    n_frames : int
        Frames in the clip.
    sampling : {"count", "stride"}
        ``count``: ``count`` evenly spaced frames from first to last (indices repeat when
        the clip is shorter than ``count``); ``stride``: the original's frames, those whose
        1-based index is a multiple of ``stride`` (0-based stride-1, 2*stride-1, ...), so
        ``n_frames // stride`` of them: none when the clip is shorter than ``stride``.
    count : int
        Frames to take with ``sampling="count"``.
    stride : int
        Step with ``sampling="stride"``.

    Returns
    -------
    indices : ndarray of int64, shape (n_sampled,)
    """
    if n_frames < 1:
        raise ValueError(f"n_frames = {n_frames}: a clip needs at least one frame")
    if sampling == "count":
        if count < 1:
            raise ValueError(f"count = {count}: must be >= 1")
        return np.rint(np.linspace(0, n_frames - 1, count)).astype(np.int64)
    if sampling == "stride":
        if stride < 1:
            raise ValueError(f"stride = {stride}: must be >= 1")
        return np.arange(stride - 1, n_frames, stride, dtype=np.int64)
    raise ValueError(f"sampling = {sampling!r}: must be one of {', '.join(SAMPLINGS)}")


def read_video_frames(
    path: str | Path, *, sampling: str, count: int, stride: int, data: bytes | None = None
) -> np.ndarray:
    """Decode a clip and return its sampled frames as RGB.

    All frames are decoded (clips are short) and only the sampled ones are converted to RGB.
    ``data``: the file's bytes, when the caller has read them already (they are decoded, and
    ``path`` only names the clip in errors).

    Returns
    -------
    frames : ndarray of uint8, shape (n_sampled, height, width, 3)

    Raises
    ------
    DataLayoutError
        The file is missing, not a readable video, holds no video frame, or has fewer frames
        than ``stride`` under ``sampling="stride"`` (the original would average zero frames).
    """
    path = Path(path)
    try:
        with av.open(str(path) if data is None else io.BytesIO(data)) as container:
            if not container.streams.video:
                raise DataLayoutError(f"{path}: no video stream in the file")
            decoded = list(container.decode(container.streams.video[0]))
            if not decoded:
                raise DataLayoutError(f"{path}: the video stream holds no decodable frame")
            indices = sample_frame_indices(len(decoded), sampling=sampling, count=count, stride=stride)
            if not indices.size:
                raise DataLayoutError(
                    f"{path}: {len(decoded)} frames, fewer than frame_stride = {stride}: stride sampling keeps "
                    "no frame of it (frames whose 1-based index is a multiple of the stride)"
                )
            return np.stack([decoded[i].to_ndarray(format="rgb24") for i in indices])
    except (av.FFmpegError, OSError) as exc:
        raise DataLayoutError(f"{path}: cannot decode video ({type(exc).__name__}: {exc})") from exc
