"""A site's Slurm and container settings: the ``slurm/site.env`` file and the batch scripts beside it."""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from lwroi.config import coerce_setting
from lwroi.exceptions import ConfigError

SCRIPTS = {"extract": "lwroi-extract.sbatch", "array": "lwroi-array.sbatch", "reduce": "lwroi-reduce.sbatch"}
"""The batch script of each job of the chain, looked up in the site file's folder."""


def _at_least(least: int) -> Callable[[int], str | None]:
    return lambda v: None if v >= least else f"must be >= {least}"


def _module_names(names: tuple[str, ...]) -> str | None:
    bad = [n for n in names if not re.fullmatch(r"[\w.+@:/-]+", n)]
    return f"not a module name: {', '.join(map(repr, bad))}" if bad else None


MODULES_VARIABLE = "LWROI_MODULES"
"""The environment variable that carries ``modules`` into the jobs, where the batch scripts load them."""


@dataclass(frozen=True)
class SiteSettings:
    """A site's Slurm and container settings: the keys of ``slurm/site.env`` (``LWROI_<FIELD>``).

    Defaults apply to keys the file leaves out; ``slurm/site.env`` documents each key.
    """

    partition: str = ""
    account: str = ""
    sbatch_flags: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    shards: int = 4
    ranks_per_task: int = 2
    nodes: int = 1
    array_max_running: int = 0
    gpus_per_rank: int = 1
    cpus_per_rank: int = 8
    mem_per_cpu: str = ""
    time_extract: str = "02:00:00"
    time_fit: str = "08:00:00"
    time_reduce: str = "00:30:00"
    signal_seconds: int = 300
    max_requeues: int = 3
    image: str = ""
    bind: tuple[str, ...] = ()
    apptainer_flags: tuple[str, ...] = ("--nv",)
    apptainer: str = "apptainer"
    srun_mpi: str = "pmi2"
    srun_flags: tuple[str, ...] = ()
    scripts_dir: Path = Path("slurm")
    """Folder holding the ``lwroi-*.sbatch`` scripts: the folder of the site file."""

    _constraints: ClassVar[dict[str, Callable[[Any], str | None]]] = {
        "shards": _at_least(1), "ranks_per_task": _at_least(1), "array_max_running": _at_least(0),
        "nodes": _at_least(1), "gpus_per_rank": _at_least(0), "cpus_per_rank": _at_least(1),
        "signal_seconds": _at_least(0),
        "max_requeues": _at_least(0), "modules": _module_names,
    }

    def __post_init__(self) -> None:
        # The jobs get the modules as sbatch --export=ALL,LWROI_MODULES=... (see build_chain): a second --export would
        # replace that one, so it is refused here, before anything is rendered.
        if self.modules and any(flag.startswith("--export") for flag in self.sbatch_flags):
            raise ConfigError(f"LWROI_MODULES is passed to the jobs with sbatch --export=ALL,{MODULES_VARIABLE}=..., "
                              f"but LWROI_SBATCH_FLAGS already has an --export option: add {MODULES_VARIABLE}=... "
                              "to that one and leave LWROI_MODULES empty")

    @property
    def module_export(self) -> tuple[str, ...]:
        """The sbatch option that carries ``modules`` into every job (empty without modules)."""
        return (f"--export=ALL,{MODULES_VARIABLE}={' '.join(self.modules)}",) if self.modules else ()

_SITE_FIELDS = {f"LWROI_{f.name.upper()}": f.name for f in fields(SiteSettings) if f.name != "scripts_dir"}


def _as_written(name: str, value: Any) -> str:
    """A setting as a line of the site file would give it (lists: shell words, ``bind``: commas)."""
    if isinstance(value, tuple):
        return shlex.quote(",".join(value) if name == "bind" else shlex.join(value))
    return shlex.quote(str(value))


def _valid_keys() -> str:
    return ", ".join(f"{key}={_as_written(name, getattr(SiteSettings, name))}" for key, name in _SITE_FIELDS.items())


def _expand(value: str, env: Mapping[str, str], where: str) -> str:
    """``~``, ``$VAR`` and ``${VAR}`` from ``env``; an unset variable is an error, not an empty string."""
    if value == "~" or value.startswith("~/"):
        value = "${HOME}" + value[1:]
    try:
        return string.Template(value).substitute(env)
    except KeyError as exc:
        raise ConfigError(f"{where}: ${exc.args[0]} is not set in the environment") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc} (write $$ for a literal $)") from None


def _words(name: str, value: str) -> str | list[str]:
    """The text of a list setting as its items: ``bind`` is comma-separated, other lists are shell words."""
    if isinstance(getattr(SiteSettings, name), tuple):
        if name == "bind":
            return [p.strip() for p in value.split(",") if p.strip()]
        return shlex.split(value)
    return value


def read_site(path: str | Path, env: Mapping[str, str]) -> SiteSettings:
    """Read a ``site.env`` file: ``KEY=VALUE`` lines, shell quoting and ``#`` comments.

    Values are expanded from ``env`` (the submitting shell's environment), then converted and
    checked like a config's (:func:`lwroi.config.coerce_setting`). The batch scripts are taken
    from the file's folder, so a site copies the ``slurm/`` folder and edits its copy.

    Raises
    ------
    ConfigError
        The file or a script is missing, a line is not ``KEY=VALUE``, a key is unknown (the
        message lists every valid key with its default), or a value has the wrong type or range
        (the message names the file, line and key).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: site settings file not found (see slurm/site.env)") from None
    values: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{path}:{number}"
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}: {line.strip()!r}") from None
        if not words:
            continue
        if len(words) != 1 or "=" not in words[0]:
            raise ConfigError(f"{where}: expected KEY=VALUE (quote values with spaces), got {line.strip()!r}")
        key, value = words[0].split("=", 1)
        if key not in _SITE_FIELDS:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys, with their defaults: {_valid_keys()}")
        where = f"{where}: {key}"
        name = _SITE_FIELDS[key]
        values[name] = coerce_setting(SiteSettings, name, _words(name, _expand(value, env, where)), where, text=True)
    scripts_dir = path.absolute().parent
    missing = [name for name in SCRIPTS.values() if not (scripts_dir / name).is_file()]
    if missing:
        raise ConfigError(f"{path}: the batch scripts beside it are missing: {', '.join(missing)} "
                          f"(copy them from lwroi's slurm/ folder into {scripts_dir})")
    return SiteSettings(**values, scripts_dir=scripts_dir)
