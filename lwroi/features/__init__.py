"""DNN features of the video stimuli: decoding, layer activations, reduction, on-disk store."""

from lwroi.features.extract import (
    ALEXNET_LAYERS,
    LayerFeatureExtractor,
    extract_video_features,
    load_model,
    resolve_layers,
)
from lwroi.features.reduce import LayerReducer, fit_layer_reducer, reduce_features
from lwroi.features.store import (
    FeatureStore,
    feature_store_complete,
    load_raw_shards,
    open_feature_store,
    raw_shard_complete,
    save_raw_shard,
    write_feature_store,
)
from lwroi.features.video import read_video_frames, sample_frame_indices

__all__ = [
    "ALEXNET_LAYERS",
    "FeatureStore",
    "LayerFeatureExtractor",
    "LayerReducer",
    "extract_video_features",
    "feature_store_complete",
    "fit_layer_reducer",
    "load_model",
    "load_raw_shards",
    "open_feature_store",
    "raw_shard_complete",
    "read_video_frames",
    "reduce_features",
    "resolve_layers",
    "sample_frame_indices",
    "save_raw_shard",
    "write_feature_store",
]
