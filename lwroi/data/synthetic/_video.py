"""Synthetic clips: random frames with structure at several spatial scales, and a reproducible mp4 writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lwroi._io import atomic_path

CLIP_SECONDS = 3
"""Length of every synthetic clip; its frame rate is drawn per clip."""

_CHROMA_AXES = np.array([[1.0, -0.5, -0.5], [0.0, 0.866, -0.866]])
"""Two colour directions orthogonal to grey, so colour and brightness are drawn separately."""
_ENCODERS = (
    ("libx264", {"qp": "4", "preset": "veryfast", "threads": "1"}),
    ("mpeg4", {"qmin": "1", "qmax": "2", "threads": "1"}),
)
"""Near-lossless encoders, best first. Constant quantiser and one thread keep the bytes
reproducible: x264's crf mode was seen to vary between runs with the same input."""


def _video_encoder() -> tuple[str, dict[str, str]]:
    import av

    for name, options in _ENCODERS:
        try:
            av.Codec(name, "w")
        except ValueError:  # av.codec.codec.UnknownCodecError: this ffmpeg build lacks the encoder
            continue
        return name, options
    raise RuntimeError(f"PyAV's ffmpeg has none of the encoders {[name for name, _ in _ENCODERS]}")


def write_video(path: Path, frames: np.ndarray, fps: int, *, crf: int | None = None) -> None:
    """Write RGB frames to an mp4 file (H.264 near-lossless, yuv420p like the real videos).

    The same frames always give the same bytes (single-threaded colour conversion and
    encoding at a constant quantiser), and the file is written beside ``path`` and renamed,
    so a crash never leaves a truncated video. ``crf``: x264's constant rate factor instead
    (web-typical files like the Algonauts clips, ten times smaller; their bytes may vary
    between runs).

    Parameters
    ----------
    path : Path
    frames : ndarray of shape (n_frames, height, width, 3), uint8
        Height and width must be even (yuv420p halves the colour resolution).
    fps : int
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8 of shape (n_frames, height, width, 3), got {frames.dtype} {frames.shape}"
        )
    n_frames, height, width, _ = frames.shape
    if n_frames == 0 or height % 2 or width % 2:
        raise ValueError(f"frames of shape {frames.shape}: need at least one frame and even height and width")
    codec, options = ("libx264", {"crf": str(crf)}) if crf is not None else _video_encoder()
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = dict(options)
        for frame in frames:
            rgb = av.VideoFrame.from_ndarray(frame, format="rgb24")
            container.mux(stream.encode(rgb.reformat(format="yuv420p", threads=1)))
        container.mux(stream.encode())


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Periodic Gaussian-filtered white noise with correlation length ``scale`` pixels, unit sd."""
    freq = np.fft.fftfreq(size)
    gain = np.exp(-0.5 * (2 * np.pi * scale) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * gain).real
    return field / field.std()


def make_video_frames(rng: np.random.Generator, n_frames: int, size: int = 64) -> np.ndarray:
    """Random clip with structure at several spatial scales, so DNN layers carry different information.

    Drifting oriented gratings (random frequency, orientation, speed, contrast) give fine
    oriented energy for early layers; moving discs and squares of random colour give shapes
    and motion for middle layers; a drifting noise texture of random grain and a smooth
    colour background vary the low-level statistics between videos. As in natural video,
    colour changes more smoothly in space than brightness (shape edges are sharp in
    brightness, 4 px wide in colour), so yuv420p's half-resolution colour loses little.

    Returns
    -------
    ndarray of shape (n_frames, size, size, 3), uint8
    """
    t = np.arange(n_frames, dtype=np.float64)[:, None, None]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    brightness = np.broadcast_to(
        rng.uniform(0.35, 0.65) + rng.uniform(-0.15, 0.15) * yy + rng.uniform(-0.15, 0.15) * xx, (n_frames, size, size)
    ).copy()
    colour = np.broadcast_to(
        rng.uniform(-0.12, 0.12, 2)
        + yy[..., None] * rng.uniform(-0.06, 0.06, 2)
        + xx[..., None] * rng.uniform(-0.06, 0.06, 2),
        (n_frames, size, size, 2),
    ).copy()

    for _ in range(rng.integers(1, 3)):
        cycles = np.exp(rng.uniform(np.log(1.5), np.log(size / 5)))
        theta, phase0 = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        along = np.cos(theta) * xx + np.sin(theta) * yy
        brightness += rng.uniform(0.08, 0.25) * np.sin(2 * np.pi * cycles * along + phase0 + rng.uniform(-0.6, 0.6) * t)

    texture = _smooth_noise(rng, size, scale=rng.uniform(0.7, 4.0))
    velocity, amplitude = rng.uniform(-1.5, 1.5, 2), rng.uniform(0.02, 0.1)
    for k in range(n_frames):
        brightness[k] += amplitude * np.roll(texture, tuple(np.round(velocity * k).astype(int)), axis=(0, 1))

    for _ in range(rng.integers(1, 5)):
        radius = rng.uniform(0.05, 0.25)
        start, velocity = rng.uniform(radius, 1 - radius, 2), rng.uniform(-0.03, 0.03, 2)
        level, hue, square = rng.uniform(0.05, 0.95), rng.uniform(-0.18, 0.18, 2), rng.random() < 0.5
        # bounce off the borders: fold the straight path into [radius, 1 - radius]
        span = 1 - 2 * radius
        centre = radius + span - np.abs(np.mod(start + velocity * t[:, :, 0] - radius, 2 * span) - span)
        dy, dx = yy - centre[:, 0, None, None], xx - centre[:, 1, None, None]
        inside = (radius - (np.maximum(np.abs(dy), np.abs(dx)) if square else np.hypot(dy, dx))) * size
        sharp, soft = np.clip(inside + 0.5, 0, 1), np.clip(inside / 4 + 0.5, 0, 1)[..., None]
        brightness = brightness * (1 - sharp) + level * sharp
        colour = colour * (1 - soft) + hue * soft

    # squash brightness into [0.2, 0.8] so adding colour rarely clips a channel (clipping would
    # put sharp edges into the colour planes)
    rgb = (0.5 + 0.3 * np.tanh((brightness - 0.5) / 0.3))[..., None] + colour @ _CHROMA_AXES
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
