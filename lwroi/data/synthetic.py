"""Write a small dataset in exactly the Algonauts 2021 layout, with a planted ground truth.

Real mp4 files and real pickles, so every loader runs on it unchanged. The truth is planted as
per-layer shares of each voxel's signal, not in the fitted model's terms (no layer weights, no
coefficient norms, no layer scaling), so a fit is checked against something it was not built
from. For each ROI, with planted shares ``s_l`` (non-negative, summing to 1)::

    response_vr = gain_v * sum_l sqrt(s_l) * z_lv + offset_v + noise_vr,   noise_vr ~ N(0, sd_v^2)

for voxel v and repetition r (noise independent per repetition), where ``z_lv`` is a per-layer
signal over the videos with mean 0 and variance 1, so each layer's term has the share ``s_l`` of
the summed variance of the terms (the signal is then scaled to variance 1). Voxel gains and noise
sds vary about the ROI's level (log-normal), offsets are N(0, 1).

Each ``z_lv`` is a random linear function of layer l's own standardised DNN features ``Z_l``
(columns centred and scaled to unit variance, constant columns 0; ``K_l = Z_l Z_l^T / D_l``)::

    z_lv ~ K_l (Kbar_l + rho I)^(-1/2) u_lv,   u_lv ~ N(0, I),   Kbar_l = mean of the other layers' K_m

(i.e. ``z_lv = Z_l b_lv`` with ``b_lv = Z_l^T (Kbar_l + rho I)^(-1/2) u_lv / D_l``). Its covariance over
videos, ``K_l (Kbar_l + rho I)^-1 K_l``, keeps ``K_l^2``'s weight on the layer's leading principal
components, which ~100 videos can learn (an isotropic b spreads over the whole spectrum, much of
it unlearnable), and divides out the directions the other layers carry too: neighbouring layers
of one network are nearly the same function of the videos (centred kernel alignment 0.89-0.94
between neighbours of the 4 layers of tests/science.yaml), so without that a layer's signal could
be told from its neighbours' by no fit. ``rho`` (:data:`SIGNAL_RIDGE`, in units of Kbar_l's mean
eigenvalue) sets the balance; measured on those 4 layers with the kernel solver over 4 draws:
at rho = 2 it ranked every non-flat profile right (Spearman >= 0.8) and kept the flat one flat in
3 draws of 4, at a held-out r of 0.82-0.88 of the noise ceiling; rho = 1 ranked as well but
learnt less (0.77-0.86); rho = 4 learnt more but gave the flat profile's fc8 up to 3.4 times
conv1's share, and the plain ``K_l u`` (no whitening) confused the mid profiles.

De-correlation: the layers' ``u_lv`` are independent draws, so two layers' signals of a voxel are
uncorrelated in expectation, and the whitening keeps them in different directions where the
layers differ. What correlation a single draw has (``layer_signal_correlation`` in the ground
truth; on tests/science.yaml mean 0.001, mean absolute 0.26) averages out over an ROI's voxels:
the shares measured on the written signal (``layer_shares_empirical``, each term's covariance with
the signal over its variance) are within 0.04 of the planted ones. Orthogonalising each voxel's
signals exactly, layer by layer, was tried and dropped: it made the last layer the most
distinctive one, and the kernel solver then gave it a flat profile's largest share.

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

from lwroi._io import atomic_path, atomic_write_bytes, atomic_write_json
from lwroi.config import DataConfig
from lwroi.data.algonauts import ROI_TRACKS
from lwroi.data.reliability import pearson_columns

N_REPETITIONS = 3
WB_VOLUME_SHAPE = (78, 93, 71)
CLIP_SECONDS = 3
SIGNAL_RIDGE = 2.0
"""rho of the per-layer signals' whitening against the other layers (see the module docstring)."""
VOXEL_SPREAD = 0.25
"""sd of log gain and of log noise sd across an ROI's voxels: gains and noise vary about +-25 %."""

DEFAULT_VOXELS: dict[str, int] = {
    "V1": 50, "V2": 50, "V3": 45, "V4": 30, "LOC": 80,
    "EBA": 40, "FFA": 30, "STS": 40, "PPA": 40, "WB": 120,
}  # fmt: skip
"""Voxels per ROI (LOC largest, as in the real data), small so the dataset builds in seconds."""

DEFAULT_NOISE_SD: dict[str, float] = {
    "V1": 0.6, "V2": 0.72, "V3": 0.84, "V4": 1.08, "LOC": 0.84,
    "EBA": 0.96, "FFA": 1.2, "STS": 1.32, "PPA": 1.08, "WB": 0.96,
}  # fmt: skip
"""Typical noise sd per repetition (a unit-gain signal has sd 1): noise ceilings from about 0.95
(V1) down to 0.8 (STS)."""

PROFILE_SHAPES: dict[str, tuple[str, float]] = {
    # ROI: (shape, parameter): contrast first/last layer for early and late, peak depth for mid
    "V1": ("early", 8.0),
    "V2": ("early", 8.0),
    "V3": ("early", 8.0),
    "V4": ("mid", 1 / 3),
    "LOC": ("mid", 0.5),
    "EBA": ("mid", 2 / 3),
    "FFA": ("late", 8.0),
    "STS": ("two-layer", 0.0),
    "PPA": ("late", 8.0),
    "WB": ("flat", 0.0),
}
"""The planted profile of each ROI; see :func:`layer_shares`."""

_MID_WIDTH = 0.2
"""Width (sd, in units of depth 0..1) of the mid profile's Gaussian bump."""
_SHARE_DECIMALS = 12
"""Shares are rounded before normalising, so mirror-image depths tie exactly (a rank check of a fit
must see a tie as a tie, not as an order decided by rounding)."""

_CHROMA_AXES = np.array([[1.0, -0.5, -0.5], [0.0, 0.866, -0.866]])
"""Two colour directions orthogonal to grey, so colour and brightness are drawn separately."""
_STREAM_VIDEO, _STREAM_RESPONSES, _STREAM_MASK = 0, 1, 2
_ENCODERS = (
    ("libx264", {"qp": "4", "preset": "veryfast", "threads": "1"}),
    ("mpeg4", {"qmin": "1", "qmax": "2", "threads": "1"}),
)
"""Near-lossless encoders, best first. Constant quantiser and one thread keep the bytes
reproducible: x264's crf mode was seen to vary between runs with the same input."""


def layer_shares(shape: str, n_layers: int, parameter: float = 0.0) -> np.ndarray:
    """Planted signal shares of the layers (depth 0 .. 1 from first to last), non-negative, summing to 1.

    - ``"early"``: decreasing geometrically with depth, the first layer ``parameter`` times the last;
    - ``"late"``: the mirror image, increasing;
    - ``"mid"``: a Gaussian bump peaking at depth ``parameter`` (sd 0.2): low at both ends;
    - ``"flat"``: equal shares;
    - ``"two-layer"``: the first and the last layer carry half each, the others nothing.

    Raises
    ------
    ValueError
        Unknown shape, ``n_layers < 1``, or a contrast below 1.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers = {n_layers}: must be >= 1")
    depth = np.linspace(0.0, 1.0, n_layers) if n_layers > 1 else np.zeros(1)
    if shape in ("early", "late"):
        if parameter < 1:
            raise ValueError(f"{shape} profile: contrast {parameter} must be >= 1")
        values = parameter ** ((1 - depth) if shape == "early" else depth)
    elif shape == "mid":
        values = np.exp(-0.5 * ((depth - parameter) / _MID_WIDTH) ** 2)
    elif shape == "flat":
        values = np.ones(n_layers)
    elif shape == "two-layer":
        values = np.zeros(n_layers)
        values[[0, -1]] = 1.0
    else:
        raise ValueError(f"unknown profile shape {shape!r}; known: early, mid, late, flat, two-layer")
    values = np.round(values, _SHARE_DECIMALS)
    return values / values.sum()


def planted_layer_profiles(rois: list[str] | tuple[str, ...], n_layers: int) -> dict[str, np.ndarray]:
    """Planted signal shares per ROI (:data:`PROFILE_SHAPES`): early visual ROIs draw on early layers.

    V1-V3 decrease with depth (first layer 8 times the last), V4, LOC and EBA are bumps peaking at
    depth 1/3, 1/2 and 2/3, FFA and PPA increase, STS draws on the first and the last layer only,
    and WB on every layer alike. Steep shapes on purpose: the layers of one network share most of
    their variance, so a shallow profile's order is not identifiable from ~100 videos (measured on
    tests/science.yaml: a contrast of 4 was ranked wrongly by the kernel solver in one ROI of three).

    Raises
    ------
    ValueError
        An ROI has no planted profile, or ``n_layers < 1``.
    """
    unknown = [roi for roi in rois if roi not in PROFILE_SHAPES]
    if unknown:
        raise ValueError(f"no planted layer profile for ROI {unknown[0]!r}; known: {', '.join(PROFILE_SHAPES)}")
    return {roi: layer_shares(PROFILE_SHAPES[roi][0], n_layers, PROFILE_SHAPES[roi][1]) for roi in rois}


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


def _standardised_kernel(features: np.ndarray) -> np.ndarray:
    """``Z Z^T / D`` of the column-standardised features (constant columns 0), mean eigenvalue 1 without them."""
    z = features - features.mean(axis=0)
    std = np.sqrt(np.einsum("ij,ij->j", z, z) / len(z))
    z *= np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
    return z @ z.T / z.shape[1]


def layer_signal_maps(layers: Mapping[str, np.ndarray], ridge: float = SIGNAL_RIDGE) -> list[np.ndarray]:
    """Per layer the map ``A_l = K_l (Kbar_l + ridge * mean_eig(Kbar_l) I)^(-1/2)``, (n_videos, n_videos).

    ``A_l u`` with ``u ~ N(0, I)`` is a random linear function of layer l's standardised features,
    weighted towards what it carries and the other layers do not (module docstring). With a single
    layer ``Kbar`` is 0 and the map is ``K_l``.

    Raises
    ------
    ValueError
        A layer is constant over the videos (it could carry no signal).
    """
    kernels = {name: _standardised_kernel(features) for name, features in layers.items()}
    constant = [name for name, kernel in kernels.items() if not np.trace(kernel) > 0]
    if constant:
        raise ValueError(f"layer_features: layer(s) {', '.join(constant)} constant over the videos: no signal to plant")
    n = len(next(iter(kernels.values())))
    maps = []
    for name, kernel in kernels.items():
        others = [k for other, k in kernels.items() if other != name]
        mean_other = sum(others) / len(others) if others else np.zeros_like(kernel)
        eigval, eigvec = np.linalg.eigh(mean_other)
        scale = max(np.trace(mean_other) / n, 0.0) or 1.0
        inv_sqrt = (eigvec / np.sqrt(np.clip(eigval, 0.0, None) + ridge * scale)) @ eigvec.T
        maps.append(kernel @ inv_sqrt)
    return maps


def draw_layer_signals(rng: np.random.Generator, maps: list[np.ndarray], n_voxels: int) -> np.ndarray:
    """Per voxel one unit-variance signal per layer, ``A_l u`` with independent ``u ~ N(0, I)``.

    The layers' draws are independent, so two layers' signals of a voxel are uncorrelated in
    expectation, and what correlation a draw has averages out over voxels.

    Returns
    -------
    array of shape (n_layers, n_videos, n_voxels)
    """
    n = maps[0].shape[0]
    signals = np.stack([mapping @ rng.standard_normal((n, n_voxels)) for mapping in maps])
    signals -= signals.mean(axis=1, keepdims=True)
    return signals / signals.std(axis=1, keepdims=True)


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


def _correlation_summary(correlations: list[np.ndarray]) -> dict[str, float]:
    """How far apart the layers' signals of a voxel are: Pearson r of every layer pair of every voxel."""
    pooled = np.concatenate(correlations) if correlations else np.zeros(1)
    return {"mean": float(pooled.mean()), "mean_abs": float(np.abs(pooled).mean()),
            "max_abs": float(np.abs(pooled).max())}  # fmt: skip


def _summary(values: list[np.ndarray]) -> dict[str, float]:
    """min, median and max of per-voxel values pooled over subjects."""
    pooled = np.concatenate(values)
    return {"min": float(pooled.min()), "median": float(np.median(pooled)), "max": float(pooled.max())}


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
        The ROI's typical noise sd per repetition (a unit-gain signal has sd 1); each voxel's
        varies about it. Default :data:`DEFAULT_NOISE_SD`.
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
        The ground truth, as written to ``out_dir/ground_truth.json``: per ROI the profile
        ``shape``, the planted ``layer_shares`` and the shares measured on the written signal
        (``layer_shares_empirical``: per voxel each layer's covariance with the signal over its
        variance, mean over voxels), the noise ceiling (planted, and measured against the
        repetition means), and the spread of the voxels' gains and noise sds.
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
    maps = layer_signal_maps(layers)
    profiles = planted_layer_profiles(rois, len(layers))
    report(f"computed features of {n_videos} training videos ({len(layers)} layers)")

    subjects = [f"sub{s:02d}" for s in range(1, n_subjects + 1)]
    measured: dict[str, dict[str, list[np.ndarray]]] = {
        roi: {"gain": [], "noise_sd": [], "ceiling": [], "empirical": [], "shares": []} for roi in rois
    }
    correlations = []
    responses_root = out_dir / DataConfig.responses_dir
    for s, subject in enumerate(subjects, start=1):
        for roi in rois:
            rng = np.random.default_rng([seed, _STREAM_RESPONSES, s, list(ROI_TRACKS).index(roi)])
            n_vox = voxels[roi]
            z = draw_layer_signals(rng, maps, n_vox)
            terms = np.sqrt(profiles[roi])[:, None, None] * z
            scale = terms.sum(axis=0).std(axis=0)  # 1 up to the chance correlations of the voxel's z
            terms /= scale
            signal = terms.sum(axis=0)
            gain = np.exp(rng.normal(0.0, VOXEL_SPREAD, n_vox))
            voxel_sd = noise[roi] * np.exp(rng.normal(0.0, VOXEL_SPREAD, n_vox))
            offset = rng.normal(0.0, 1.0, n_vox)
            noise_draw = voxel_sd * rng.standard_normal((n_videos, N_REPETITIONS, n_vox))
            train = ((gain * signal)[:, None, :] + noise_draw + offset).astype(np.float32)
            m = measured[roi]
            m["gain"].append(gain)
            m["noise_sd"].append(voxel_sd)
            m["ceiling"].append(np.sqrt(1.0 / (1.0 + (voxel_sd / gain) ** 2 / N_REPETITIONS)))
            m["empirical"].append(pearson_columns(signal, train.mean(axis=1, dtype=np.float64)))
            m["shares"].append(np.einsum("lnv,nv->lv", terms, signal) / np.einsum("nv,nv->v", signal, signal))
            pairs = np.triu_indices(len(z), k=1)
            correlations.append(np.einsum("lnv,mnv->lmv", z, z)[pairs].ravel() / n_videos)
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
        "videos": {"frame_size": frame_size, "fps_choices": list(fps_choices), "seconds": CLIP_SECONDS},
        "signal_ridge": SIGNAL_RIDGE,
        "voxel_spread": VOXEL_SPREAD,
        "layer_signal_correlation": _correlation_summary(correlations),
        "model": (
            "response_vr = gain_v * sum_l sqrt(layer_shares_l) * z_lv + offset_v + noise_vr; z_lv = unit-variance "
            "K_l (Kbar_l + signal_ridge * mean_eig(Kbar_l) I)^(-1/2) u_lv, u_lv ~ N(0, I), K_l = Z_l Z_l^T / D_l of "
            "the column-standardised features of layer l over the training videos, Kbar_l the mean of the other "
            "layers' K_m; u_lv independent; the terms scaled together so that the signal has variance 1; "
            "log gain_v and log noise sd_v ~ N(log level, voxel_spread^2) (level 1 and the ROI's noise_sd), "
            "offset_v ~ N(0, 1), noise_vr ~ N(0, sd_v^2) independent per repetition"
        ),
        "rois": {
            roi: {
                "track": ROI_TRACKS[roi],
                "shape": PROFILE_SHAPES[roi][0],
                "layer_shares": profiles[roi].tolist(),
                "layer_shares_empirical": np.concatenate(measured[roi]["shares"], axis=1).mean(axis=1).tolist(),
                "n_voxels": voxels[roi],
                "noise_sd": noise[roi],
                "noise_ceiling": float(np.concatenate(measured[roi]["ceiling"]).mean()),
                "noise_ceiling_empirical": float(np.concatenate(measured[roi]["empirical"]).mean()),
                "voxel_gain": _summary(measured[roi]["gain"]),
                "voxel_noise_sd": _summary(measured[roi]["noise_sd"]),
            }
            for roi in rois
        },
    }
    atomic_write_json(out_dir / "ground_truth.json", truth)
    report(f"wrote {out_dir / 'ground_truth.json'}")
    return truth
