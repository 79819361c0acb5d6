"""DNN features of the video stimuli: decoding, layer activations, reduction, on-disk store."""

from lwroi.features.extract import LayerFeatureExtractor, build_extractor, extract_video_features, model_problems
from lwroi.features.families import FAMILIES, model_family, model_spec
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

__all__ = [
    "ALEXNET_LAYERS",
    "FAMILIES",
    "FeaturePaths",
    "FeatureStore",
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
