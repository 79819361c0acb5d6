"""The network and its weights, and their provenance.

torchvision architectures with seeded random or local state-dict weights, never downloaded;
the provenance is recorded beside every feature.
"""

from __future__ import annotations

import difflib
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
import torchvision

from lwroi._io import sha256_file
from lwroi.config import FeatureConfig
from lwroi.exceptions import ConfigError, RandomWeightsWarning


def load_model(model_name: str, *, weights: str, seed: int, weights_sha256: str = "") -> tuple[torch.nn.Module, dict]:
    """Build a torchvision classification model with random or local weights.

    Weights are never downloaded: ``weights`` is ``"random"`` (seeded, reproducible, and
    flagged with a :class:`RandomWeightsWarning`) or the path of a local state-dict file.

    Returns
    -------
    model : torch.nn.Module
        In eval mode, on the CPU.
    info : dict
        ``model``, ``weights`` ("random" or the path), ``sha256`` (of the file, "" when
        random), ``random_init``, ``seed``: provenance to store beside the features.

    Raises
    ------
    ConfigError
        Unknown model name, checksum mismatch, or a state dict that does not fit the model.
    FileNotFoundError
        The weights file does not exist.
    """
    valid = torchvision.models.list_models(module=torchvision.models)
    if model_name not in valid:
        close = difflib.get_close_matches(model_name, valid, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"model {model_name!r} is not a torchvision classification model{hint}; "
            "valid names: torchvision.models.list_models(module=torchvision.models)"
        )
    info: dict[str, Any] = {"model": model_name, "weights": "random", "sha256": "", "random_init": True, "seed": seed}
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = torchvision.models.get_model(model_name, weights=None)
        warnings.warn(
            f"{model_name}: randomly initialised weights (seed {seed}); features do not come from a trained "
            "network. Pass a local state-dict file as weights for trained features.",
            RandomWeightsWarning,
            stacklevel=2,
        )
        return model.eval(), info

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found (weights are never downloaded)")
    digest = sha256_file(path)
    if weights_sha256 and digest != weights_sha256.lower():
        raise ConfigError(f"{path}: sha256 is {digest}, expected {weights_sha256}")
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
    model = torchvision.models.get_model(model_name, weights=None)
    _load_state(model, state, path, model_name)
    info.update(weights=str(path), sha256=digest, random_init=False)
    return model.eval(), info


def _load_state(model: torch.nn.Module, state: dict, path: Path, model_name: str) -> None:
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ConfigError(
            f"{path}: state dict does not fit {model_name}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: state dict does not fit {model_name}: {exc}") from None


def weights_problems(f: FeatureConfig) -> list[str]:
    """The weights file's problem, if any."""
    try:
        load_model(f.model, weights=f.weights, seed=f.seed, weights_sha256=f.weights_sha256)
    except (ConfigError, OSError) as exc:
        return [f"features.weights: {exc}"]
    return []
