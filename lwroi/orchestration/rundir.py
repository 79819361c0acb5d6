"""The run directory: its identity (config and data fingerprints) and its layout.

A run directory belongs to one configuration and one dataset. Re-running the same config on
the same data resumes it; a different config, or data changed in place, is refused with the
list of what changed, unless a new run is asked for (the old directory is then moved aside,
never deleted).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lwroi._io import atomic_write_json, atomic_write_text
from lwroi.config import Config, config_from_dict, dump_config, result_settings, upgrade_settings
from lwroi.data import VideoFingerprint, data_changes, data_fingerprint
from lwroi.exceptions import ConfigError, ConfigMismatchError
from lwroi.orchestration.journal import pid_alive
from lwroi.orchestration.results import ResultStore

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
STALE_TEMP_SECONDS = 600.0
"""A temporary file untouched this long, of a process not alive on this host, was left by a dead writer."""


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
    """Create or resume ``cfg.run.output_dir``; refuse a directory made by another config or from other data.

    Fingerprints the dataset (every video's bytes, every used response pickle: see
    :func:`lwroi.data.data_fingerprint`), once per launch, on the one process that claims the
    directory, and records it in ``run.json``; every rank reads the videos' fingerprints from
    there (:func:`recorded_videos`). Temporary files that dead writers left behind are removed.

    Raises
    ------
    ConfigMismatchError
        The directory holds results of a config whose result settings differ, results of data
        that changed since, or an unreadable ``run.json`` (each unless ``restart``).
    """
    run_dir = Path(cfg.run.output_dir)
    d = cfg.data
    data = data_fingerprint(Path(d.root), videos_dir=d.videos_dir, responses_dir=d.responses_dir,
                            subjects=d.subjects, rois=d.rois)
    record: dict[str, Any] = {}
    if (run_dir / RUN_FILE).exists():
        try:
            record = read_run_record(run_dir)
            conflict = _conflict(run_dir, record, cfg, data)
        except ConfigError as exc:
            conflict = str(exc)
        if conflict and not restart:
            raise ConfigMismatchError(f"{conflict}\nUse another run.output_dir, or pass --restart to move the old "
                                      "run aside and start anew.")
        if conflict:
            run_dir.rename(run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}"))
            record = {}
    run_dir.mkdir(parents=True, exist_ok=True)
    known = record.get("data", {}).get("responses", {})
    config = cfg.to_dict() if cfg.features.models else record.get("config", cfg.to_dict())  # a zoo may grow
    updated = {"fingerprint": cfg.fingerprint(), "models": {**record.get("models", {}), **cfg.model_fingerprints()},
               "config": config, "created": record.get("created", time.time()),
               "data": {"videos": data["videos"], "responses": {**known, **data["responses"]}}}
    if updated != record:
        atomic_write_json(run_dir / RUN_FILE, updated)
    remove_stale_temporaries([run_dir, Path(cfg.features.store_dir)])
    atomic_write_text(run_dir / CONFIG_FILE, dump_config(cfg))
    return run_dir


def _conflict(run_dir: Path, record: dict[str, Any], cfg: Config, data: dict[str, Any]) -> str | None:
    """Why the run directory's results may not be resumed with ``cfg`` on ``data``, or None."""
    if record.get("fingerprint") != cfg.fingerprint():
        changes = config_changes(result_settings(record.get("config", {})), result_settings(cfg.to_dict()))
        if not changes:
            changes = ["(none: the results were written by an lwroi that fingerprinted settings differently)"]
        return (f"{run_dir} holds results of a different configuration; refusing to mix them.\n"
                "Changed settings:\n  " + "\n  ".join(changes[:20]))
    changed = [name for name, fp in cfg.model_fingerprints().items() if record.get("models", {}).get(name, fp) != fp]
    if changed:
        old = {m.get("name"): m for m in record.get("config", {}).get("features", {}).get("models", [])}
        lines = [f"{name}: {old.get(name, '<unknown>')} -> {_entry(cfg, name)}"
                 for name in changed]
        return (f"{run_dir} holds results of model(s) {', '.join(changed)} with other settings; refusing to mix "
                "them (adding a model is fine; give a changed model a new name).\nChanged models:\n  "
                + "\n  ".join(lines))
    changes = data_changes(record["data"], data) if "data" in record else []  # none recorded: nothing to compare
    if changes:
        more = f"\n  ... and {len(changes) - 20} more" if len(changes) > 20 else ""
        return (f"{run_dir} holds results computed from other data: {cfg.data.root} changed in place since; "
                "refusing to mix them.\nChanged files:\n  " + "\n  ".join(changes[:20]) + more +
                "\nRestore the data if the change was a mistake.")
    return None


def read_run_record(run_dir: str | Path) -> dict[str, Any]:
    """The run directory's ``run.json``: fingerprint, config, creation time and data fingerprint.

    Raises
    ------
    ConfigError
        The file is missing, unreadable or not a run record; the message names it.
    """
    path = Path(run_dir) / RUN_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the run record ({type(exc).__name__}: {exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("fingerprint"), str):
        raise ConfigError(f"{path}: not a run record (expected a JSON object with a 'fingerprint')")
    return record


def recorded_videos(run_dir: str | Path) -> list[VideoFingerprint]:
    """The videos' fingerprints that this launch's :func:`prepare_run_dir` recorded, in order."""
    return [VideoFingerprint(*v) for v in read_run_record(run_dir)["data"]["videos"]]


def remove_stale_temporaries(folders: Sequence[Path]) -> list[Path]:
    """Delete the ``.<name>.tmp-<pid>`` files of writes that died (``kill -9``) under ``folders``.

    A file is removed only when its pid is not alive on this host and it has not been written
    for :data:`STALE_TEMP_SECONDS`: a writer on another node may share a pid number with a dead
    process here, but it keeps its file's mtime fresh. Returns the removed paths.
    """
    removed = []
    now = time.time()
    for folder in folders:
        for path in folder.rglob(".*.tmp-*") if folder.is_dir() else ():
            pid = path.name.rpartition(".tmp-")[2]
            with contextlib.suppress(OSError):
                if pid.isdigit() and not pid_alive(int(pid)) and now - path.stat().st_mtime > STALE_TEMP_SECONDS:
                    path.unlink()
                    removed.append(path)
    return removed


def load_run_config(run_dir: str | Path) -> Config:
    """The resolved config a run directory was made with (for summarize/status/report)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"{run_dir}: not an lwroi run directory (no {CONFIG_FILE})")
    import yaml

    return config_from_dict(upgrade_settings(yaml.safe_load(path.read_text()) or {}), source=str(path))


def _entry(cfg: Config, name: str) -> dict[str, Any]:
    """Model ``name``'s entry of a zoo, as its config file gives it."""
    return next(m.to_dict() for m in cfg.features.models if m.name == name)


def run_store(run_dir: str | Path) -> ResultStore:
    """The result store of a run directory, with the fingerprints its results were written under (``run.json``).

    Read-only verbs (summarize, status, report, export) use it rather than recomputing them from
    the config: a newer lwroi that adds a setting would otherwise compute other fingerprints
    and take the run's own records for foreign ones.
    """
    record = read_run_record(run_dir)
    return ResultStore(run_dir, str(record["fingerprint"]), record.get("models") or {})
