"""The run directory: its identity (config fingerprint) and its layout.

A run directory belongs to one configuration. Re-running the same config resumes it; a
different config is refused with the list of changed keys, unless a new run is asked for
(the old directory is then moved aside, never deleted).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lwroi._io import atomic_write_json, atomic_write_text
from lwroi.config import Config, config_from_dict, dump_config
from lwroi.exceptions import ConfigError, ConfigMismatchError

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable ``key: old -> new`` lines for every setting that differs."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def prepare_run_dir(cfg: Config, *, restart: bool = False) -> Path:
    """Create or resume ``cfg.run.output_dir``; refuse a directory made by another config.

    Raises
    ------
    ConfigMismatchError
        The directory holds results of a config whose fingerprinted sections differ.
    """
    run_dir = Path(cfg.run.output_dir)
    run_file = run_dir / RUN_FILE
    if run_file.exists():
        old = json.loads(run_file.read_text())
        if old.get("fingerprint") != cfg.fingerprint():
            if not restart:
                changes = config_changes({k: old["config"][k] for k in ("data", "features", "encoding")},
                                         {k: cfg.to_dict()[k] for k in ("data", "features", "encoding")})
                shown = "\n  ".join(changes[:20])
                raise ConfigMismatchError(
                    f"{run_dir} holds results of a different configuration; refusing to mix them.\n"
                    f"Changed settings:\n  {shown}\n"
                    "Use another run.output_dir, or pass --restart to move the old run aside and start anew."
                )
            aside = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            run_dir.rename(aside)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not run_file.exists():
        atomic_write_json(run_file, {"fingerprint": cfg.fingerprint(), "config": cfg.to_dict(),
                                     "created": time.time()})
    atomic_write_text(run_dir / CONFIG_FILE, dump_config(cfg))
    return run_dir


def load_run_config(run_dir: str | Path) -> Config:
    """The resolved config a run directory was made with (for summarize/status/report)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"{run_dir}: not an lwroi run directory (no {CONFIG_FILE})")
    import yaml

    return config_from_dict(yaml.safe_load(path.read_text()), source=str(path))


def run_fingerprint(run_dir: str | Path) -> str:
    """The fingerprint the run directory's results were written under (from ``run.json``).

    Read-only verbs (summarize, status, report, export) use it rather than recomputing it from
    the config: a newer lwroi that adds a setting would otherwise compute another fingerprint
    and take the run's own records for foreign ones.
    """
    path = Path(run_dir) / RUN_FILE
    try:
        return str(json.loads(path.read_text())["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{run_dir}: cannot read the run's fingerprint from {path} ({exc})") from None
