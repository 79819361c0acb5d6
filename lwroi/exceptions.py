"""Errors and warnings that lwroi raises on purpose, so callers can catch them by kind."""

from __future__ import annotations


class LwroiError(Exception):
    """Base class of every error lwroi raises deliberately."""


class ConfigError(LwroiError, ValueError):
    """A configuration file or override is invalid (message names file, key and value)."""


class DataLayoutError(LwroiError, ValueError):
    """The dataset on disk does not have the expected Algonauts layout or shapes."""


class UnsafePickleError(LwroiError, ValueError):
    """A pickle asked to import or call something other than numpy arrays and plain containers."""


class DeviceError(LwroiError, ValueError):
    """A device spec is malformed, or names a GPU this process cannot see."""


class IncompleteRunError(LwroiError):
    """Fit units are missing or failed, so no complete submission can be written."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"{len(missing)} fit unit(s) missing or failed: {', '.join(missing)}")
        self.missing = missing


class ConfigMismatchError(LwroiError, RuntimeError):
    """A run directory holds results of a different configuration."""


class Interrupted(LwroiError):
    """A stop was requested (SIGTERM/SIGUSR1/SIGINT, or another rank's); work was checkpointed, resubmit the job."""


class LwroiWarning(UserWarning):
    """Base category of lwroi's warnings."""


class RandomWeightsWarning(LwroiWarning):
    """Features come from a randomly initialised network, not trained weights."""


class DataWarning(LwroiWarning):
    """Something in the data was handled in a documented way (e.g. constant voxels)."""
