"""Small datasets in exactly the Algonauts 2021 layout, with a planted ground truth.

Real mp4 files and real pickles, so every loader runs on it unchanged. Three parts:

- ``_video``: random clips with structure at several spatial scales, written as reproducible mp4s;
- ``_responses``: the planted response model, per-layer shares of each voxel's signal (its
  docstring states the model and why it is built so);
- ``_writer``: :func:`write_synthetic_dataset`, which writes videos, response pickles and
  ``ground_truth.json``.

The DNN features that define the truth come from the caller (``layer_features``), which keeps
this package free of torch.
"""

from lwroi.data.synthetic._responses import (
    N_REPETITIONS,
    PROFILE_SHAPES,
    SIGNAL_RIDGE,
    VOXEL_SPREAD,
    draw_layer_signals,
    draw_roi_responses,
    layer_shares,
    layer_signal_maps,
    noise_ceiling,
    planted_layer_profiles,
)
from lwroi.data.synthetic._video import CLIP_SECONDS, make_video_frames, write_video
from lwroi.data.synthetic._writer import DEFAULT_NOISE_SD, DEFAULT_VOXELS, WB_VOLUME_SHAPE, write_synthetic_dataset

__all__ = [
    "CLIP_SECONDS",
    "DEFAULT_NOISE_SD",
    "DEFAULT_VOXELS",
    "N_REPETITIONS",
    "PROFILE_SHAPES",
    "SIGNAL_RIDGE",
    "VOXEL_SPREAD",
    "WB_VOLUME_SHAPE",
    "draw_layer_signals",
    "draw_roi_responses",
    "layer_shares",
    "layer_signal_maps",
    "make_video_frames",
    "noise_ceiling",
    "planted_layer_profiles",
    "write_synthetic_dataset",
    "write_video",
]
