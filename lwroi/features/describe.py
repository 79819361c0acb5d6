"""What a network offers as ``features.layers``: its family, its input and its layers (``lwroi layers``)."""

from __future__ import annotations

import warnings

from lwroi.exceptions import ConfigError, RandomWeightsWarning
from lwroi.features.extract import LayerFeatureExtractor
from lwroi.features.families import input_problems, model_spec
from lwroi.features.layers import graph_nodes, resolve_layers
from lwroi.features.weights import load_model


def describe_model(model: str, *, image_size: int = 224, frame_count: int = 16, all_nodes: bool = False) -> list[str]:
    """Lines that tell how ``model`` is fed and which layers it offers, for choosing ``layers:`` entries.

    The network is built with random weights (nothing is downloaded) and run once on an
    ``image_size`` frame (a video model: a clip of ``frame_count`` frames) to size its default
    layers.

    Raises
    ------
    ConfigError
        Unknown model (with close matches), or a size the model cannot take.
    """
    spec = model_spec(model, image_size=image_size, frame_count=frame_count)
    problems = input_problems(spec, image_size=image_size, frame_count=frame_count, sampling="count",
                              resize="square")
    if problems:
        raise ConfigError("; ".join(problems))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # random weights are all a layer list needs
        net, _ = load_model(model, weights="random", seed=0, image_size=image_size)
    layers = resolve_layers(model, net, ())
    extractor = LayerFeatureExtractor(net, layers, image_size=image_size, device="cpu", feed=spec.feed)
    size = f"{image_size}x{image_size}"
    if spec.feed.clip_frames:
        fixed = " (fixed by the model)" if spec.fixed_size else ""
        fed = f"clip: {frame_count} evenly spaced frames of {size} per video, one (N, C, T, H, W) input{fixed}"
    else:
        fed = f"image: each sampled frame of {size}; a video's features are the mean over its frames"
    width = max(len(name) for name in layers)
    lines = [
        f"model:  {model}",
        f"family: {spec.family}",
        f"input:  {fed}",
        f"normalisation: mean {_floats(spec.feed.mean)}, std {_floats(spec.feed.std)}",
        *([f"built with: {', '.join(f'{k}={v!r}' for k, v in spec.kwargs.items())}"] if spec.kwargs else []),
        "",
        f"default layers ({len(layers)}), display name = node, features at {size}"
        "; spatial ones (maps, tokens, time) are reduced:",
        *(f"  {name:<{width}}  {extractor.dims[name]:>9}{'  spatial' if extractor.spatial[name] else ''}"
          for name in layers),
    ]
    if all_nodes:
        nodes = graph_nodes(model, net)
        lines += ["", f"graph nodes ({len(nodes)}), any of them a layers: entry (node or alias=node):",
                  *(f"  {node}" for node in nodes)]
    return lines


def _floats(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
