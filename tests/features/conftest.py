"""Tiny real mp4 clips written with PyAV for the feature tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest


def write_mp4(path: Path, frames: np.ndarray, fps: int = 30) -> Path:
    """Encode uint8 RGB frames of shape (n, height, width, 3) as an mpeg4 mp4 at high quality."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.qmax = 2
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def gray_ramp_video(tmp_path: Path) -> Path:
    """30 flat gray 64x64 frames; frame i has level 8 * i, so decoded frames reveal their index."""
    levels = 8 * np.arange(30, dtype=np.uint8)
    frames = np.broadcast_to(levels[:, None, None, None], (30, 64, 64, 3))
    return write_mp4(tmp_path / "ramp.mp4", frames)


@pytest.fixture
def make_noise_videos(tmp_path: Path, rng: np.random.Generator) -> Callable[..., list[Path]]:
    """Write one smooth random clip per requested frame count, 64x64 unless sizes (height, width) are given."""
    made = itertools.count()

    def make(frame_counts: list[int], sizes: list[tuple[int, int]] | None = None) -> list[Path]:
        paths = []
        for n, (height, width) in zip(frame_counts, sizes or [(64, 64)] * len(frame_counts), strict=True):
            coarse = rng.integers(0, 256, size=(n, height // 8, width // 8, 3), dtype=np.uint8)
            frames = coarse.repeat(8, axis=1).repeat(8, axis=2)
            paths.append(write_mp4(tmp_path / f"clip{next(made):03d}.mp4", frames))
        return paths

    return make


def saved_random_weights(folder: Path, model: str = "resnet18", seed: int = 5) -> tuple[Path, str]:
    """A random-init state dict of ``model`` saved as a local weights file, and its sha256."""
    import hashlib
    import warnings

    import torch

    from lwroi.features import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source, _ = load_model(model, weights="random", seed=seed)
    path = folder / f"{model}.pt"
    torch.save(source.state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()
