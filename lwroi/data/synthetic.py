"""Write a small dataset in exactly the Algonauts 2021 layout, with a planted ground truth.

Real mp4 files and real pickles, so every loader runs on it unchanged. Responses follow
the very model lwroi fits (balanced layer scaling) with a known layer profile per ROI and a
known noise level, so a fit can be checked against what was planted::

    Z_l        = column-standardised features of layer l (n_videos, D_l); constant columns -> 0
    X_l        = Z_l / sqrt(D_l)   (the fitted model's balanced block)
    f_lv       = X_l @ b_lv,  b_lv = X_l^T V_l g_lv,  g_lv ~ N(0, I_k),  b_lv scaled to unit norm
    signal_v   = sum_l a_l * f_lv,  then scaled to unit variance
    response_v = signal_v + noise (N(0, noise_sd^2), independent per repetition) + offset_v

``V_l`` holds the top k generalised eigenvectors of ``K_l`` against the other layers' kernels
(:func:`_distinctive_directions`): layers of one network are nearly the same function of the
videos, so iid feature weights ``w`` (the first version) made a signal no fit can attribute to
its layer, spread over the whole feature spectrum and so not learnable from ~100 videos.
``a_l`` is the layer weight of the fitted model itself: every layer's coefficient vector has
the same norm, so the model's penalties treat the layers alike and rank them as planted.
The DNN features that define the truth come from the caller (``layer_features``), which keeps
this module free of torch.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg

from lwroi._io import atomic_path, atomic_write_bytes, atomic_write_json
from lwroi.config import DataConfig
from lwroi.data.algonauts import ROI_TRACKS
from lwroi.data.reliability import pearson_columns

N_REPETITIONS = 3
WB_VOLUME_SHAPE = (78, 93, 71)
CLIP_SECONDS = 3
N_DIRECTIONS = 2
"""Distinctive directions per layer: few, so the signal is learnable from ~100 videos."""
DIRECTION_RIDGE = 1.0
"""Ridge on the other layers' kernel (times its mean eigenvalue) in the generalised eigenproblem:
large enough that the directions keep much of their own layer's variance (learnable; at 0.1 the
directions of conv1 were mostly fine detail a fit on ~100 videos could not learn), while still
favouring what the other layers lack."""

DEFAULT_VOXELS: dict[str, int] = {
    "V1": 50, "V2": 50, "V3": 45, "V4": 30, "LOC": 80,
    "EBA": 40, "FFA": 30, "STS": 40, "PPA": 40, "WB": 120,
}  # fmt: skip
"""Voxels per ROI (LOC largest, as in the real data), small so the dataset builds in seconds."""

DEFAULT_NOISE_SD: dict[str, float] = {
    "V1": 0.6, "V2": 0.72, "V3": 0.84, "V4": 1.08, "LOC": 0.84,
    "EBA": 0.96, "FFA": 1.2, "STS": 1.32, "PPA": 1.08, "WB": 0.96,
}  # fmt: skip
"""Noise sd per repetition (signal sd is 1): noise ceilings from 0.95 (V1) down to 0.80 (STS)."""

_PROFILE_SHAPES: dict[str, tuple[str, float, float]] = {
    # ROI: (shape, peak depth in [0, 1] for "bump", offset added to the ranks in units of n_layers)
    "V1": ("decreasing", 0.0, 0.06),
    "V2": ("decreasing", 0.0, 0.12),
    "V3": ("decreasing", 0.0, 0.19),
    "V4": ("bump", 0.3, 0.12),
    "LOC": ("bump", 0.45, 0.12),
    "EBA": ("bump", 0.6, 0.12),
    "FFA": ("increasing", 1.0, 0.19),
    "STS": ("increasing", 1.0, 0.12),
    "PPA": ("increasing", 1.0, 0.06),
    "WB": ("bump", 0.5, 0.5),  # large offset: broad
}

_CHROMA_AXES = np.array([[1.0, -0.5, -0.5], [0.0, 0.866, -0.866]])
"""Two colour directions orthogonal to grey, so colour and brightness are drawn separately."""
_STREAM_VIDEO, _STREAM_RESPONSES, _STREAM_MASK = 0, 1, 2
_ENCODERS = (
    ("libx264", {"qp": "4", "preset": "veryfast", "threads": "1"}),
    ("mpeg4", {"qmin": "1", "qmax": "2", "threads": "1"}),
)
"""Near-lossless encoders, best first. Constant quantiser and one thread keep the bytes
reproducible: x264's crf mode was seen to vary between runs with the same input."""


def planted_layer_profiles(rois: list[str] | tuple[str, ...], n_layers: int) -> dict[str, np.ndarray]:
    """Planted layer weights per ROI: non-negative, summing to 1, all values distinct.

    Each profile is ``rank + offset`` normalised, so neighbouring values are equally far
    apart (one rank step) and a rank-correlation check of a fit is not decided by near-ties;
    the offset sets how steep the profile is:

    - early visual (V1, V2, V3): strictly decreasing with depth (V1 steepest);
    - V4, LOC, EBA: a strongly asymmetric bump peaking at depth 0.3, 0.45, 0.6 — a steep rise
      from the lowest ranks to the peak, then a slow decline that stays above the rising side,
      so the two tails never hold near-equal values;
    - FFA, STS, PPA: strictly increasing with depth (PPA steepest);
    - WB: the same asymmetric bump at mid depth with a large offset, i.e. broad.

    Raises
    ------
    ValueError
        An ROI has no planted profile, or ``n_layers < 1``.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers = {n_layers}: must be >= 1")
    profiles = {}
    for roi in rois:
        if roi not in _PROFILE_SHAPES:
            raise ValueError(f"no planted layer profile for ROI {roi!r}; known: {', '.join(_PROFILE_SHAPES)}")
        shape, peak_depth, offset = _PROFILE_SHAPES[roi]
        depth = np.arange(n_layers)
        if shape == "decreasing":
            ranks = n_layers - depth
        elif shape == "increasing":
            ranks = depth + 1
        else:
            peak = round(peak_depth * (n_layers - 1))
            ranks = np.where(depth < peak, depth + 1, n_layers + peak - depth)
        values = ranks + offset * n_layers
        profiles[roi] = values / values.sum()
    return profiles


def noise_ceiling(noise_sd: float, n_repetitions: int = N_REPETITIONS) -> float:
    """Return the expected Pearson r between a unit-variance signal and its repetition-averaged response."""
    return math.sqrt(1.0 / (1.0 + noise_sd**2 / n_repetitions))


def _video_encoder() -> tuple[str, dict[str, str]]:
    import av

    for name, options in _ENCODERS:
        try:
            av.Codec(name, "w")
        except ValueError:  # av.codec.codec.UnknownCodecError: this ffmpeg build lacks the encoder
            continue
        return name, options
    raise RuntimeError(f"PyAV's ffmpeg has none of the encoders {[name for name, _ in _ENCODERS]}")


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """Write RGB frames to an mp4 file (H.264 near-lossless, yuv420p like the real videos).

    The same frames always give the same bytes (single-threaded colour conversion and
    encoding at a constant quantiser), and the file is written beside ``path`` and renamed,
    so a crash never leaves a truncated video.

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
    codec, options = _video_encoder()
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


def _distinctive_directions(
    layers: list[np.ndarray], n_directions: int, ridge: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer, up to ``n_directions`` video directions that are distinctive of it, with their cost.

    Layers of one network are nearly the same function of the videos (centred kernel alignment
    0.92-0.996 between neighbouring random-init AlexNet layers), so a signal drawn along random
    feature directions cannot be attributed to its layer. Instead each layer's signal lies along
    the top generalised eigenvectors ``v`` of ``K_l v = lam (sum_{m != l} K_m + ridge I) v``,
    ``K_l = Z_l Z_l^T / D_l``: directions where layer l varies most relative to the others. The
    direction ``F = K_l V = X_l (X_l^T V)``, ``X_l = Z_l / sqrt(D_l)`` (the model's balanced
    block), is a linear function of layer l's own features with coefficients ``X_l^T V``, so
    it is defined for held-out videos too; ``C = V^T K_l V`` gives their squared norm
    (``||X_l^T V g||^2 = g^T C g``). Few directions keep the signal learnable from ~100 videos.
    Returns ``(F, C)`` per layer, F of shape (n_videos, k_l) with unit-variance columns,
    C (k_l, k_l); k_l = 0 for a constant layer.
    """
    n = layers[0].shape[0]
    kernels = []
    for features in layers:
        z = features - features.mean(axis=0)
        std = np.sqrt(np.einsum("ij,ij->j", z, z) / n)
        z *= np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)  # constant columns -> 0
        kernels.append(z @ z.T / z.shape[1])
    total = sum(kernels)
    out = []
    for kernel in kernels:
        others = total - kernel
        scale = np.trace(others) / n if np.trace(others) > 0 else 1.0
        eigval, eigvec = scipy.linalg.eigh(kernel, others + ridge * scale * np.eye(n))
        keep = eigval[::-1] > 1e-9 * max(eigval.max(), 1e-300)
        basis = eigvec[:, ::-1][:, keep][:, :n_directions]
        basis -= basis.mean(axis=0)  # K_l has centred rows, so this leaves F unchanged and keeps C exact
        directions = kernel @ basis
        std = directions.std(axis=0)
        varying = std > 1e-12 * std.max(initial=0.0)
        basis = basis[:, varying] / std[varying]
        out.append((kernel @ basis, basis.T @ kernel @ basis))
    return out


def _wb_mask(rng: np.random.Generator, n_voxels: int) -> np.ndarray:
    """Make a blob of exactly ``n_voxels`` ones: the voxels nearest a random centre (jittered distances)."""
    grid = np.indices(WB_VOLUME_SHAPE).reshape(3, -1).T
    centre = rng.uniform(0.3, 0.7, 3) * WB_VOLUME_SHAPE
    dist = np.linalg.norm(grid - centre, axis=1) + rng.uniform(0, 1.5, len(grid))
    mask = np.zeros(int(np.prod(WB_VOLUME_SHAPE)))
    mask[np.argsort(dist, kind="stable")[:n_voxels]] = 1.0
    return mask.reshape(WB_VOLUME_SHAPE)


def _check_layer_features(features: Mapping[str, np.ndarray], n_videos: int) -> dict[str, np.ndarray]:
    if not features:
        raise ValueError("layer_features returned no layers")
    out = {}
    for name, array in features.items():
        array = np.asarray(array, dtype=np.float64)
        if array.ndim != 2 or array.shape[0] != n_videos or not np.isfinite(array).all():
            raise ValueError(
                f"layer_features: layer {name!r} has shape {array.shape}; expected finite (n_videos={n_videos}, D)"
            )
        out[name] = array
    return out


def _per_roi(
    value: float | Mapping[str, float] | None, default: Mapping[str, float], rois: list[str], what: str
) -> dict[str, float]:
    if value is None:
        value = default
    if isinstance(value, Mapping):
        missing = [roi for roi in rois if roi not in value]
        if missing:
            raise ValueError(f"{what}: no value for ROI(s) {', '.join(missing)}")
        return {roi: float(value[roi]) for roi in rois}
    return {roi: float(value) for roi in rois}


def _planted_signal(
    rng: np.random.Generator, directions: list[tuple[np.ndarray, np.ndarray]], weights: np.ndarray, n_voxels: int
) -> np.ndarray:
    """Unit-variance signal (n_videos, n_voxels): ``sum_l a_l X_l b_l`` with ``||b_l|| = 1`` per voxel.

    Equal coefficient norms put the truth in the fitted model's own terms (layer weight times
    a coefficient vector on the balanced block, the vector's norm penalised alike for every
    layer), so the regularised optimum orders the layers as planted. A layer part of unit
    variance instead would favour the layer that reaches its direction most cheaply.
    """
    signal = np.zeros((directions[0][0].shape[0], n_voxels))
    for a, (basis, cost) in zip(weights, directions, strict=True):
        if basis.shape[1]:
            draws = rng.standard_normal((basis.shape[1], n_voxels))
            norms = np.sqrt(np.einsum("kv,kj,jv->v", draws, cost, draws))
            signal += a * (basis @ draws) / norms
    signal -= signal.mean(axis=0)
    return signal / signal.std(axis=0)


def write_synthetic_dataset(
    out_dir: Path,
    *,
    layer_features: Callable[[list[Path]], Mapping[str, np.ndarray]],
    seed: int = 0,
    n_subjects: int = 3,
    n_videos: int = 120,
    n_challenge: int = 12,
    voxels: Mapping[str, int] | None = None,
    noise_sd: float | Mapping[str, float] | None = None,
    frame_size: int = 64,
    fps_choices: tuple[int, ...] = (10, 15),
    features: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write videos, response pickles and ``ground_truth.json`` under ``out_dir``; return the truth.

    Deterministic for a given ``seed`` (each video, subject and ROI draws from its own
    seeded stream, so changing the ROI set leaves the other ROIs unchanged).

    Parameters
    ----------
    out_dir : Path
        Dataset root; gets ``AlgonautsVideos268_All_30fpsmax/`` and ``participants_data_v2021/``.
    layer_features : callable
        Maps the training videos' paths to ``{layer: array (n_videos, D_l)}`` in layer order;
        these features define the truth (pass the DNN extractor lwroi will fit with).
    seed : int, default=0
    n_subjects : int, default=3
        Subjects ``sub01`` .. ``subNN``.
    n_videos : int, default=120
        Training videos (with responses).
    n_challenge : int, default=12
        Challenge-test videos after them (no responses).
    voxels : dict of str to int, optional
        Voxels per ROI; its keys choose the ROIs. Default :data:`DEFAULT_VOXELS` (all ten).
    noise_sd : float or dict of str to float, optional
        Noise sd per repetition (signal sd is 1). Default :data:`DEFAULT_NOISE_SD`.
    frame_size : int, default=64
        Height and width of the frames (even).
    fps_choices : tuple of int, default=(10, 15)
        Frame rates drawn per video; clips last 3 s.
    features : dict, optional
        Feature settings behind ``layer_features`` (model, weights, image_size, frame
        sampling), recorded in the ground truth so a reader knows what defines it.
    progress : callable, optional
        Called with a short message after each stage.

    Returns
    -------
    dict
        The ground truth, as written to ``out_dir/ground_truth.json``.
    """
    out_dir = Path(out_dir)
    voxels = dict(DEFAULT_VOXELS if voxels is None else voxels)
    rois = list(voxels)
    unknown = [roi for roi in rois if roi not in ROI_TRACKS]
    if unknown:
        raise ValueError(f"voxels: unknown ROI(s) {', '.join(unknown)}; known ROIs: {', '.join(ROI_TRACKS)}")
    if any(n < 1 for n in voxels.values()) or n_subjects < 1 or n_videos < 4 or n_challenge < 1:
        raise ValueError(
            f"need >= 1 voxel per ROI, n_subjects >= 1, n_videos >= 4, n_challenge >= 1; got voxels={voxels}, "
            f"n_subjects={n_subjects}, n_videos={n_videos}, n_challenge={n_challenge}"
        )
    noise = _per_roi(noise_sd, DEFAULT_NOISE_SD, rois, "noise_sd")
    if any(sd < 0 for sd in noise.values()):
        raise ValueError(f"noise_sd = {noise}: must be >= 0")
    report = progress or (lambda message: None)

    video_dir = out_dir / DataConfig.videos_dir
    paths = []
    for index in range(n_videos + n_challenge):
        rng = np.random.default_rng([seed, _STREAM_VIDEO, index])
        fps = int(rng.choice(fps_choices))
        path = video_dir / f"{index + 1:04d}_synth.mp4"
        write_video(path, make_video_frames(rng, CLIP_SECONDS * fps, frame_size), fps)
        paths.append(path)
    report(f"wrote {len(paths)} videos to {video_dir}")

    layers = _check_layer_features(layer_features(paths[:n_videos]), n_videos)
    factors = _distinctive_directions(list(layers.values()), N_DIRECTIONS, DIRECTION_RIDGE)
    if not any(f.shape[1] for f, _ in factors):
        raise ValueError("layer_features: every feature is constant over videos; nothing to plant a signal in")
    profiles = planted_layer_profiles(rois, len(layers))
    report(f"computed features of {n_videos} training videos ({len(layers)} layers)")

    subjects = [f"sub{s:02d}" for s in range(1, n_subjects + 1)]
    empirical: dict[str, list[float]] = {roi: [] for roi in rois}
    responses_root = out_dir / DataConfig.responses_dir
    for s, subject in enumerate(subjects, start=1):
        for roi in rois:
            rng = np.random.default_rng([seed, _STREAM_RESPONSES, s, list(ROI_TRACKS).index(roi)])
            n_vox = voxels[roi]
            signal = _planted_signal(rng, factors, profiles[roi], n_vox)
            noise_draw = noise[roi] * rng.standard_normal((n_videos, N_REPETITIONS, n_vox))
            offset = rng.normal(0.0, 2.0, n_vox)
            train = (signal[:, None, :] + noise_draw + offset).astype(np.float32)
            mean = train.mean(axis=1, dtype=np.float64)
            empirical[roi].extend(pearson_columns(signal, mean).tolist())
            content = {"train": train}
            if roi == "WB":
                content["voxel_mask"] = _wb_mask(np.random.default_rng([seed, _STREAM_MASK, s]), n_vox)
            pkl = responses_root / ROI_TRACKS[roi] / subject / f"{roi}.pkl"
            atomic_write_bytes(pkl, pickle.dumps(content, protocol=4))
        report(f"wrote responses of {subject}")

    truth = {
        "seed": seed,
        "n_videos": n_videos,
        "n_challenge": n_challenge,
        "n_repetitions": N_REPETITIONS,
        "subjects": subjects,
        "layers": list(layers),
        "layer_dims": {name: int(f.shape[1]) for name, f in layers.items()},
        "features": dict(features or {}),
        "directions_per_layer": N_DIRECTIONS,
        "direction_ridge": DIRECTION_RIDGE,
        "videos": {"frame_size": frame_size, "fps_choices": list(fps_choices), "seconds": CLIP_SECONDS},
        "model": (
            "signal_v = sum_l a_l * f_lv, f_lv = X_l @ b_lv, X_l = Z_l / sqrt(D_l) with Z_l column-standardised "
            "layer features (constant columns 0), b_lv = X_l^T V_l g_lv scaled to unit norm, g_lv ~ N(0, I_k), V_l the "
            "top k generalised eigenvectors of K_l = Z_l Z_l^T / D_l against the sum of the other layers' kernels "
            "(+ ridge * mean eigenvalue * I): directions distinctive of layer l, so the profile is identifiable "
            "and the low-rank signal learnable; each voxel's signal scaled to unit variance over videos; "
            "each repetition adds N(0, noise_sd^2) noise and a per-voxel offset"
        ),
        "rois": {
            roi: {
                "track": ROI_TRACKS[roi],
                "layer_weights": profiles[roi].tolist(),
                "noise_sd": noise[roi],
                "n_voxels": voxels[roi],
                "noise_ceiling": noise_ceiling(noise[roi]),
                "noise_ceiling_empirical": float(np.mean(empirical[roi])),
            }
            for roi in rois
        },
    }
    atomic_write_json(out_dir / "ground_truth.json", truth)
    report(f"wrote {out_dir / 'ground_truth.json'}")
    return truth
