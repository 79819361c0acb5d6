"""Model families: how each kind of network is named, built, normalised, fed and traced.

``features.model`` names one of:

- a torchvision image classification model (``resnet50``, ``vit_b_16``, ``maxvit_t``): families
  ``cnn``, ``transformer`` (``vit_*``, ``swin_*``), ``hybrid`` (``maxvit_*``); fed frame by frame;
- a torchvision video model (``r3d_18``, ``s3d``, ``mvit_v2_s``, ``swin3d_t``): family ``video``;
  fed one clip of ``frame_count`` frames per video, laid out (N, C, T, H, W);
- ``timm:<name>`` (the optional ``lwroi[timm]``): family ``clip`` when the name says ``clip``
  (CLIP image towers), else ``timm``; fed frame by frame;
- ``package.module:factory``, a user's own network (``factory()`` returns the module): family
  ``custom``; fed frame by frame with ImageNet normalisation.

Every network is built with random initial weights here (pretrained weights are never
downloaded); :mod:`lwroi.features.weights` seeds the build and loads a local state dict.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torchvision

from lwroi.exceptions import ConfigError

FAMILIES = ("cnn", "transformer", "hybrid", "video", "clip", "timm", "custom")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM_PREFIX = "timm:"

_TORCHVISION_QUIRKS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True, "transform_input": True},
    "inception_v3": {"aux_logits": False, "init_weights": True, "transform_input": True},
}
"""Constructor arguments torchvision sets itself when it loads its own weights: no auxiliary heads
(their keys are absent from a saved state dict of the ImageNet model), the input re-normalisation
those ported weights expect, and the initialisation that ``weights=None`` would warn about."""


@dataclass(frozen=True)
class Feed:
    """How frames reach a network and how its graph is traced.

    Attributes
    ----------
    mean, std : tuple of 3 floats
        Per-channel normalisation of [0, 1] RGB, the one the network was trained with.
    clip_frames : int
        0: an image model, every frame its own input (N, C, H, W); T > 0: a video model, one clip
        of T frames per input (N, C, T, H, W).
    tracer_kwargs : dict or None
        Passed to torchvision's FX feature extraction (timm's untraceable modules as leaves).
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    clip_frames: int = 0
    tracer_kwargs: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One network of the zoo: its family, its construction and how it is fed.

    Attributes
    ----------
    name, family : str
    build : callable () -> torch.nn.Module
        Builds the network with random weights from the current torch RNG.
    kwargs : dict
        Constructor arguments beyond the name (size-dependent ones such as a ViT's
        ``image_size``, torchvision's quirks); recorded in the weights' provenance.
    feed : Feed
    fixed_size : (frames, pixels) or None
        The only clip size the network accepts (torchvision's MViT: 16 frames of 224 px).
    min_size : (frames, pixels)
        The smallest clip the network accepts (torchvision's published minimum for video models).
    square : bool
        The network takes only ``image_size`` squared frames (positional embeddings or window
        grids sized when it is built), so ``resize: shorter`` cannot feed it.
    """

    name: str
    family: str
    build: Callable[[], torch.nn.Module] = field(repr=False)
    kwargs: dict[str, Any]
    feed: Feed
    fixed_size: tuple[int, int] | None = None
    min_size: tuple[int, int] = (1, 1)
    square: bool = False


@functools.cache
def _torchvision_names(video: bool) -> tuple[str, ...]:
    module = torchvision.models.video if video else torchvision.models
    return tuple(torchvision.models.list_models(module=module))


def model_family(model: str) -> str:
    """The family of a model name (one of :data:`FAMILIES`), read from the name alone (not checked).

    ``timm:<name>`` is ``clip`` when the name says ``clip``, else ``timm``; ``package.module:factory``
    is ``custom``. Of torchvision's names, the video models are ``video``, ``vit_*`` and ``swin_*``
    (v1 and v2) ``transformer``, ``maxvit_*`` ``hybrid``, and every other name ``cnn``.
    """
    if model.startswith(TIMM_PREFIX):
        return "clip" if "clip" in model[len(TIMM_PREFIX):].lower() else "timm"
    if ":" in model:
        return "custom"
    if model in _torchvision_names(video=True):
        return "video"
    if model.startswith(("vit_", "swin_")):
        return "transformer"
    if model.startswith("maxvit_"):
        return "hybrid"
    return "cnn"


def model_spec(model: str, *, image_size: int = 224, frame_count: int = 16) -> ModelSpec:
    """How ``model`` is built and fed for ``image_size`` frames (clips of ``frame_count`` frames).

    Raises
    ------
    ConfigError
        Unknown name (with close matches), timm missing, or a factory that cannot be imported.
    """
    family = model_family(model)
    if family in ("timm", "clip"):
        return _timm_spec(model, family, image_size)
    if family == "custom":
        return _custom_spec(model)
    return _torchvision_spec(model, family, image_size, frame_count)


def tracer_kwargs(model: str) -> dict[str, Any] | None:
    """FX tracer arguments for ``model``'s graph: timm's own leaf modules and wrapped functions."""
    if model_family(model) not in ("timm", "clip"):
        return None
    timm = _import_timm(model)
    return {"leaf_modules": list(timm.models.get_notrace_modules()),
            "autowrap_functions": list(timm.models.get_notrace_functions())}


def input_problems(spec: ModelSpec, *, image_size: int, frame_count: int, sampling: str, resize: str) -> list[str]:
    """What the feature settings ask of ``spec`` that it cannot take, one ``features.<key>:`` line each."""
    problems = []
    frames, pixels = spec.fixed_size or spec.min_size
    if spec.feed.clip_frames and sampling != "count":
        problems.append(f"features.frame_sampling = {sampling!r}: {spec.name} is a video model, fed one clip of "
                        "frame_count evenly spaced frames per video; it needs frame_sampling: count")
    if spec.fixed_size and (frame_count, image_size) != spec.fixed_size:
        problems.append(f"features.frame_count = {frame_count}, features.image_size = {image_size}: {spec.name} "
                        f"takes only clips of {frames} frames of {pixels}x{pixels} pixels; set frame_count: "
                        f"{frames} and image_size: {pixels}")
    elif spec.feed.clip_frames and (frame_count < frames or image_size < pixels):
        problems.append(f"features.frame_count = {frame_count}, features.image_size = {image_size}: {spec.name} "
                        f"needs clips of at least {frames} frames of {pixels}x{pixels} pixels")
    if spec.square and resize != "square":
        problems.append(f"features.resize = {resize!r}: {spec.name} takes only {image_size}x{image_size} frames "
                        "(its positional embeddings or windows are sized when it is built); use resize: square")
    return problems


def _torchvision_spec(model: str, family: str, image_size: int, frame_count: int) -> ModelSpec:
    video = family == "video"
    if model not in _torchvision_names(video):
        known = _torchvision_names(False) + _torchvision_names(True)
        close = difflib.get_close_matches(model, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"model {model!r} is not a torchvision classification model{hint}, nor a torchvision video model, "
            f"'{TIMM_PREFIX}<name>' or 'package.module:factory'; valid names: "
            "torchvision.models.list_models(module=torchvision.models) and (module=torchvision.models.video)"
        )
    kwargs = dict(_TORCHVISION_QUIRKS.get(model, {}))
    if family == "transformer" and model.startswith("vit_"):
        kwargs["image_size"] = image_size  # the position embedding is sized for it
    if family == "hybrid":
        kwargs["input_size"] = (image_size, image_size)  # the attention grids are sized for it
    build = functools.partial(torchvision.models.get_model, model, weights=None, **kwargs)
    square = "image_size" in kwargs or "input_size" in kwargs
    if not video:
        return ModelSpec(model, family, build, kwargs, Feed(), square=square)
    weights = torchvision.models.get_model_weights(model).DEFAULT  # metadata only: nothing is downloaded
    preset = weights.transforms()
    smallest = (weights.meta.get("min_temporal_size") or 1, weights.meta["min_size"][0])
    fixed = smallest if model.startswith("mvit_") else None  # MViT's embeddings are sized for 16 x 224 x 224
    return ModelSpec(model, family, build, kwargs, Feed(tuple(preset.mean), tuple(preset.std), frame_count),
                     fixed_size=fixed, min_size=smallest, square=fixed is not None)


def _import_timm(model: str) -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model {model!r} needs the timm package, which is not installed: "
                          "pip install 'lwroi[timm]'") from None
    return timm


def _timm_spec(model: str, family: str, image_size: int) -> ModelSpec:
    timm = _import_timm(model)
    name = model[len(TIMM_PREFIX):]
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(TIMM_PREFIX + c for c in close)}?)" if close else ""
        raise ConfigError(f"model {model!r}: {name!r} is not a timm model{hint}; valid names: timm.list_models()")
    try:
        cfg = timm.get_pretrained_cfg(name)
    except RuntimeError as exc:  # an architecture with a tag it does not have
        arch = name.split(".")[0]
        raise ConfigError(f"model {model!r}: {exc} (valid: timm.list_pretrained('{arch}.*'))") from None
    fixed = cfg is not None and bool(cfg.fixed_input_size)
    kwargs = {"img_size": image_size} if fixed else {}
    mean = tuple(cfg.mean) if cfg is not None and cfg.mean else IMAGENET_MEAN
    std = tuple(cfg.std) if cfg is not None and cfg.std else IMAGENET_STD
    build = functools.partial(timm.create_model, name, pretrained=False, **kwargs)
    return ModelSpec(model, family, build, kwargs, Feed(mean, std, 0, tracer_kwargs(model)), square=fixed)


def _custom_spec(model: str) -> ModelSpec:
    module_name, _, attr = model.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ConfigError(f"model {model!r}: a network of your own is named 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model {model!r}: cannot import {module_name} ({exc}); is it on PYTHONPATH?") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"model {model!r}: {module_name} has no callable {attr!r}")

    def build() -> torch.nn.Module:
        net = factory()
        if not isinstance(net, torch.nn.Module):
            raise ConfigError(f"model {model!r}: {attr}() returned a {type(net).__name__}, not a torch.nn.Module")
        return net

    return ModelSpec(model, "custom", build, {}, Feed())
