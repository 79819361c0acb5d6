"""The data layer: the Algonauts 2021 layout, sample splits, and synthetic datasets in that layout.

Imports numpy only (PyAV is imported when a video is written), so ``import lwroi.data`` stays light.
"""

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
from lwroi.data.synthetic import (
    DEFAULT_NOISE_SD,
    DEFAULT_VOXELS,
    make_video_frames,
    noise_ceiling,
    planted_layer_profiles,
    write_synthetic_dataset,
    write_video,
)

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
