"""The data layer: the Algonauts 2021 layout, sample splits, and synthetic datasets in that layout.

Imports numpy only (PyAV is imported when a video is written), so ``import lwroi.data`` stays light.
The synthetic datasets (only ``lwroi synth`` writes them) are imported on first use of one of their
names, so the login node's minimal install (numpy, pyyaml, pandas) never loads that package.
"""

import importlib

from lwroi.data.algonauts import (
    ROI_TRACKS,
    RoiResponses,
    VideoFingerprint,
    check_dataset,
    data_changes,
    data_fingerprint,
    list_videos,
    load_roi_responses,
    roi_response_path,
    video_fingerprints,
    video_sequence_problems,
)
from lwroi.data.reliability import noise_normalised, split_half_reliability
from lwroi.data.splits import heldout_split, inner_validation_split, kfold_splits

__all__ = [
    "DEFAULT_NOISE_SD",
    "DEFAULT_VOXELS",
    "ROI_TRACKS",
    "RoiResponses",
    "VideoFingerprint",
    "check_dataset",
    "data_changes",
    "data_fingerprint",
    "heldout_split",
    "inner_validation_split",
    "kfold_splits",
    "list_videos",
    "load_roi_responses",
    "make_video_frames",
    "noise_ceiling",
    "noise_normalised",
    "planted_layer_profiles",
    "roi_response_path",
    "split_half_reliability",
    "video_fingerprints",
    "video_sequence_problems",
    "write_synthetic_dataset",
    "write_video",
]

_SYNTHETIC = {"DEFAULT_NOISE_SD", "DEFAULT_VOXELS", "make_video_frames", "noise_ceiling", "planted_layer_profiles",
              "write_synthetic_dataset", "write_video"}
"""Names of :mod:`lwroi.data.synthetic` re-exported here, imported when first asked for."""


def __getattr__(name: str):
    if name in _SYNTHETIC:
        return getattr(importlib.import_module("lwroi.data.synthetic"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
