"""Write a synthetic dataset in exactly the Algonauts 2021 layout, with its planted ground truth.

Real mp4 files and real pickles, so every loader runs on it unchanged; the responses follow the
model of :mod:`lwroi.data.synthetic._responses`. Each video, subject and ROI draws from its own
seeded stream.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lwroi._io import atomic_write_bytes, atomic_write_json
from lwroi.config import DataConfig
from lwroi.data.algonauts import ROI_TRACKS
from lwroi.data.synthetic._responses import (
    MODEL_DESCRIPTION,
    N_REPETITIONS,
    PROFILE_SHAPES,
    SIGNAL_RIDGE,
    VOXEL_SPREAD,
    draw_roi_responses,
    layer_signal_maps,
    planted_layer_profiles,
)
from lwroi.data.synthetic._video import CLIP_SECONDS, make_video_frames, write_video

WB_VOLUME_SHAPE = (78, 93, 71)

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

_STREAM_VIDEO, _STREAM_RESPONSES, _STREAM_MASK = 0, 1, 2


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
    noise = _check_settings(voxels, noise_sd, n_subjects=n_subjects, n_videos=n_videos, n_challenge=n_challenge)
    report = progress or (lambda message: None)

    video_dir = out_dir / DataConfig.videos_dir
    paths = _write_videos(video_dir, seed, n_videos + n_challenge, fps_choices, frame_size)
    report(f"wrote {len(paths)} videos to {video_dir}")

    layers = _check_layer_features(layer_features(paths[:n_videos]), n_videos)
    maps = layer_signal_maps(layers)
    profiles = planted_layer_profiles(rois, len(layers))
    report(f"computed features of {n_videos} training videos ({len(layers)} layers)")

    subjects = [f"sub{s:02d}" for s in range(1, n_subjects + 1)]
    measured: dict[str, dict[str, list[np.ndarray]]] = {roi: {} for roi in rois}
    correlations = []
    responses_root = out_dir / DataConfig.responses_dir
    for s, subject in enumerate(subjects, start=1):
        for roi in rois:
            rng = np.random.default_rng([seed, _STREAM_RESPONSES, s, list(ROI_TRACKS).index(roi)])
            train, planted = draw_roi_responses(rng, maps, profiles[roi], voxels[roi], noise[roi])
            correlations.append(planted.pop("correlation"))
            for key, values in planted.items():
                measured[roi].setdefault(key, []).append(values)
            content = {"train": train}
            if roi == "WB":
                content["voxel_mask"] = _wb_mask(np.random.default_rng([seed, _STREAM_MASK, s]), voxels[roi])
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
        "model": MODEL_DESCRIPTION,
        "rois": {roi: _roi_truth(roi, profiles[roi], measured[roi], voxels[roi], noise[roi]) for roi in rois},
    }
    atomic_write_json(out_dir / "ground_truth.json", truth)
    report(f"wrote {out_dir / 'ground_truth.json'}")
    return truth


def _check_settings(voxels: dict[str, int], noise_sd: float | Mapping[str, float] | None, *, n_subjects: int,
                    n_videos: int, n_challenge: int) -> dict[str, float]:
    """The noise sd of each ROI, after refusing settings that could write no dataset."""
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
    return noise


def _write_videos(video_dir: Path, seed: int, n_videos: int, fps_choices: tuple[int, ...],
                  frame_size: int) -> list[Path]:
    """Write ``n_videos`` clips of :data:`CLIP_SECONDS`, each from its own stream; return their paths in order."""
    paths = []
    for index in range(n_videos):
        rng = np.random.default_rng([seed, _STREAM_VIDEO, index])
        fps = int(rng.choice(fps_choices))
        path = video_dir / f"{index + 1:04d}_synth.mp4"
        write_video(path, make_video_frames(rng, CLIP_SECONDS * fps, frame_size), fps)
        paths.append(path)
    return paths


def _roi_truth(roi: str, shares: np.ndarray, measured: dict[str, list[np.ndarray]], n_voxels: int,
               noise_sd: float) -> dict[str, Any]:
    """An ROI's entry in the ground truth: what was planted and what was measured, pooled over subjects."""
    return {
        "track": ROI_TRACKS[roi],
        "shape": PROFILE_SHAPES[roi][0],
        "layer_shares": shares.tolist(),
        "layer_shares_empirical": np.concatenate(measured["shares"], axis=1).mean(axis=1).tolist(),
        "n_voxels": n_voxels,
        "noise_sd": noise_sd,
        "noise_ceiling": float(np.concatenate(measured["ceiling"]).mean()),
        "noise_ceiling_empirical": float(np.concatenate(measured["empirical"]).mean()),
        "voxel_gain": _summary(measured["gain"]),
        "voxel_noise_sd": _summary(measured["noise_sd"]),
    }


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
