"""Decoded, sampled frames of the clips, kept on disk so every model of a study decodes each clip once.

A study of many networks feeds them all the same frames: without a cache each model's
extraction decodes every clip again (about 50 ms of CPU a 3 s clip, more than a GPU forward
of its frames). With it the first model to reach a clip decodes it and the others read its
frames back (a few ms).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import zipfile
from pathlib import Path

import av
import numpy as np

from lwroi._io import atomic_path
from lwroi.exceptions import DataLayoutError
from lwroi.features.video import read_video_frames

log = logging.getLogger("lwroi")


def decoder_tag() -> str:
    """PyAV's version and those of the FFmpeg libraries that make the RGB frames (decoder and colour conversion)."""
    version = {lib: ".".join(map(str, av.library_versions[lib])) for lib in ("libavcodec", "libswscale")}
    return f"av{av.__version__}-lavc{version['libavcodec']}-sws{version['libswscale']}"


class FrameCache:
    """Sampled RGB frames of clips under ``root``, one file a clip and sampling.

    An entry is named by the sha256 of the clip file's bytes, in a folder named by the sampling
    and :func:`decoder_tag`: a clip replaced or re-encoded, another sampling or another FFmpeg
    never reads stale frames, and a copied or renamed dataset still hits. The frames decoded are
    the ones hashed (the bytes are read once). Entries are uncompressed npz files written
    atomically, so complete or absent; zip's CRC-32 is checked on every read, and an entry that
    fails it is decoded again and rewritten, with a warning. Ranks may write one entry at once:
    each writes its own temporary file, and the renames put the same frames in place; within a
    process the writes take turns (a repeated stimulus stored twice is one entry).

    Attributes
    ----------
    hits, decoded : int
        Clips read from the cache and clips decoded, by this object (for logs and tests).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._tag = decoder_tag()  # once, not per clip
        self.hits = 0
        self.decoded = 0
        self._lock = threading.Lock()  # read() runs in extraction's decode threads

    def folder(self, *, sampling: str, count: int, stride: int) -> Path:
        """The folder of one sampling's entries."""
        step = f"count{count}" if sampling == "count" else f"stride{stride}"
        return self.root / f"{step}-{self._tag}"

    def read(self, path: str | Path, *, sampling: str, count: int, stride: int) -> np.ndarray:
        """The sampled frames of the clip at ``path``, as :func:`~lwroi.features.video.read_video_frames` returns them.

        Raises
        ------
        DataLayoutError
            The clip is missing or cannot be decoded (see ``read_video_frames``).
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataLayoutError(f"{path}: cannot read video ({type(exc).__name__}: {exc})") from exc
        entry = self.folder(sampling=sampling, count=count, stride=stride) / f"{hashlib.sha256(data).hexdigest()}.npz"
        frames = _load(entry, path)
        hit = frames is not None
        if frames is None:
            frames = read_video_frames(path, sampling=sampling, count=count, stride=stride, data=data)
            with self._lock, atomic_path(entry, frames.nbytes) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, frames=frames)  # one writer a process: clips of equal bytes share the temporary name
        with self._lock:
            self.hits += hit
            self.decoded += not hit
        return frames


def _load(entry: Path, clip: Path) -> np.ndarray | None:
    """The frames of a cache entry, or None if it is absent or fails its check (then it is decoded again)."""
    try:
        with np.load(entry) as npz:
            return npz["frames"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("%s: cached frames of %s are unreadable (%s: %s); decoding the clip again",
                    entry, clip.name, type(exc).__name__, exc)
        return None
