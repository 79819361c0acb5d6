"""DNN features of the video stimuli: decoding, layer activations, reduction, on-disk store.

The names below are imported on first use (PEP 562), not with the package: a rank that only
reads a finished store (every fit) then never imports torchvision, PyAV and scikit-learn's
projections, about 2.5 s of CPU per process, paid by every rank of every launch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "LayerFeatureExtractor": "extract", "build_extractor": "extract", "extract_video_features": "extract",
    "model_problems": "extract", "FrameCache": "frame_cache",
    "FAMILIES": "families", "model_family": "families", "model_spec": "families",
    "ALEXNET_LAYERS": "layers", "resolve_layers": "layers",
    "LayerReducer": "reduce", "fit_layer_reducer": "reduce", "reduce_features": "reduce",
    "FeaturePaths": "store", "FeatureStore": "store", "feature_paths": "store", "feature_store_complete": "store",
    "load_raw_shards": "store", "open_feature_store": "store", "raw_shard_complete": "store",
    "save_raw_shard": "store", "write_feature_store": "store",
    "read_video_frames": "video", "sample_frame_indices": "video",
    "load_model": "weights",
}

if TYPE_CHECKING:
    from lwroi.features.extract import LayerFeatureExtractor, build_extractor, extract_video_features, model_problems
    from lwroi.features.families import FAMILIES, model_family, model_spec
    from lwroi.features.frame_cache import FrameCache
    from lwroi.features.layers import ALEXNET_LAYERS, resolve_layers
    from lwroi.features.reduce import LayerReducer, fit_layer_reducer, reduce_features
    from lwroi.features.store import (
        FeaturePaths,
        FeatureStore,
        feature_paths,
        feature_store_complete,
        load_raw_shards,
        open_feature_store,
        raw_shard_complete,
        save_raw_shard,
        write_feature_store,
    )
    from lwroi.features.video import read_video_frames, sample_frame_indices
    from lwroi.features.weights import load_model


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "ALEXNET_LAYERS",
    "FAMILIES",
    "FeaturePaths",
    "FeatureStore",
    "FrameCache",
    "LayerFeatureExtractor",
    "LayerReducer",
    "build_extractor",
    "extract_video_features",
    "feature_paths",
    "feature_store_complete",
    "fit_layer_reducer",
    "load_model",
    "load_raw_shards",
    "model_family",
    "model_problems",
    "model_spec",
    "open_feature_store",
    "raw_shard_complete",
    "read_video_frames",
    "reduce_features",
    "resolve_layers",
    "sample_frame_indices",
    "save_raw_shard",
    "write_feature_store",
]
