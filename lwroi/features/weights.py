"""The network and its weights, and their provenance.

Any family of :mod:`lwroi.features.families`, with seeded random or local state-dict weights,
never downloaded; the provenance is recorded beside every feature.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from lwroi._io import sha256_file
from lwroi.config import FeatureConfig
from lwroi.exceptions import ConfigError, RandomWeightsWarning
from lwroi.features.families import ModelSpec, model_spec


def load_model(model_name: str, *, weights: str, seed: int, weights_sha256: str = "",
               image_size: int = 224) -> tuple[torch.nn.Module, dict]:
    """Build a network of any family with random or local weights.

    Weights are never downloaded: ``weights`` is ``"random"`` (flagged with a
    :class:`RandomWeightsWarning`) or the path of a local state-dict file. The network is built
    from ``seed`` either way (reproducible, and the global torch RNG is left alone).

    Parameters
    ----------
    model_name : str
        A name of :func:`~lwroi.features.families.model_spec`.
    image_size : int, default=224
        Frame size; networks whose embeddings depend on it (ViTs) are built for it.

    Returns
    -------
    model : torch.nn.Module
        In eval mode, on the CPU.
    info : dict
        ``model``, ``family``, ``weights`` ("random" or the path), ``sha256`` (of the file, ""
        when random), ``random_init``, ``seed``, ``build_kwargs`` (constructor arguments, e.g. a
        ViT's ``image_size``): provenance to store beside the features, the same keys for every family.

    Raises
    ------
    ConfigError
        Unknown model name, a network that cannot be built for ``image_size``, checksum
        mismatch, or a state dict that does not fit the model.
    FileNotFoundError
        The weights file does not exist.
    """
    spec = model_spec(model_name, image_size=image_size)
    info: dict[str, Any] = {"model": model_name, "family": spec.family, "weights": "random", "sha256": "",
                            "random_init": True, "seed": seed, "build_kwargs": dict(spec.kwargs)}
    if weights == "random":
        model = _build(spec, seed)
        warnings.warn(
            f"{model_name}: randomly initialised weights (seed {seed}); features do not come from a trained "
            "network. Pass a local state-dict file as weights for trained features.",
            RandomWeightsWarning,
            stacklevel=2,
        )
        return model.eval(), info

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found for {model_name} (weights are never downloaded)")
    digest = sha256_file(path)
    if weights_sha256 and digest != weights_sha256.lower():
        raise ConfigError(f"{path}: sha256 is {digest}, expected {weights_sha256}")
    state = _read_state(path)
    model = _build(spec, seed)
    _load_state(model, state, path, spec)
    info.update(weights=str(path), sha256=digest, random_init=False)
    return model.eval(), info


def _build(spec: ModelSpec, seed: int) -> torch.nn.Module:
    """The network with random weights drawn from ``seed``, the global torch RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return spec.build()
        except ConfigError:
            raise
        except Exception as exc:  # constructors refuse sizes in many ways (ValueError, AssertionError, ...)
            built = f" with {_kwargs_text(spec)}" if spec.kwargs else ""
            raise ConfigError(f"{spec.name} cannot be built{built} ({type(exc).__name__}: {exc})") from None


def _read_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's text advises weights_only=False, which would run the file's code
        raise ConfigError(f"{path}: refused for safety: the file holds objects other than tensors (a pickle that "
                          "could run code when loaded); lwroi loads weights only as a state dict of tensors, e.g. "
                          "saved with torch.save(model.state_dict(), path)") from None
    except Exception as exc:
        raise ConfigError(f"{path}: not a loadable torch state dict ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: holds a {type(state).__name__}, expected a state dict (name -> tensor)")
    return state


def _load_state(model: torch.nn.Module, state: dict, path: Path, spec: ModelSpec) -> None:
    # a size-dependent build (a ViT's image_size) is the usual reason a trained state dict does not fit
    built = f" (built with {_kwargs_text(spec)})" if spec.kwargs else ""
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ConfigError(
            f"{path}: state dict does not fit {spec.name}{built}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: state dict does not fit {spec.name}{built}: {exc}") from None


def _kwargs_text(spec: ModelSpec) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in spec.kwargs.items())


def weights_problems(f: FeatureConfig) -> list[str]:
    """The weights file's problem, if any."""
    try:
        load_model(f.model, weights=f.weights, seed=f.seed, weights_sha256=f.weights_sha256, image_size=f.image_size)
    except (ConfigError, OSError) as exc:
        return [f"features.weights: {exc}"]
    return []
