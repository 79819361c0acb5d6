"""One result file per work unit: written atomically, checked before it is trusted.

A unit's record is ``units/<key>.json`` (key, config fingerprint, status, payload, and the
sha256 of every array written beside it). Arrays go first, the record last, so a record
on disk means every array it names is complete. A record that does not parse, belongs to
another configuration, or whose arrays do not match their checksums is *invalid*: it is
moved aside and the unit is computed again, never reduced.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lwroi._io import atomic_save_npy, atomic_write_json, sha256_file

RECORD_FIELDS = ("key", "fingerprint", "status", "payload", "arrays")


@dataclass(frozen=True)
class UnitRecord:
    """A unit's validated result record."""

    key: str
    status: str
    """``ok`` or ``error``."""
    payload: dict[str, Any]
    arrays: dict[str, str]
    """Array name -> sha256 of ``<key>.<name>.npy``."""
    meta: dict[str, Any]


class ResultStore:
    """Read and write unit results under ``run_dir/units`` for one config fingerprint."""

    def __init__(self, run_dir: str | Path, fingerprint: str) -> None:
        self.run_dir = Path(run_dir)
        self.fingerprint = fingerprint
        self.units_dir = self.run_dir / "units"

    def record_path(self, key: str) -> Path:
        return self.units_dir / f"{key}.json"

    def array_path(self, key: str, name: str) -> Path:
        return self.units_dir / f"{key}.{name}.npy"

    def write_ok(self, key: str, payload: dict[str, Any], arrays: dict[str, np.ndarray] | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        """Write the unit's arrays, then its record (the completion marker)."""
        sums = {}
        for name, array in (arrays or {}).items():
            path = self.array_path(key, name)
            atomic_save_npy(path, array)
            sums[name] = sha256_file(path)
        self._write(key, "ok", payload, sums, meta)

    def write_error(self, key: str, exc: BaseException, meta: dict[str, Any] | None = None) -> None:
        """Record a failed unit with its traceback; a rerun tries it again."""
        payload = {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        }
        self._write(key, "error", payload, {}, meta)

    def _write(self, key: str, status: str, payload: dict[str, Any], arrays: dict[str, str],
               meta: dict[str, Any] | None) -> None:
        record = {
            "key": key,
            "fingerprint": self.fingerprint,
            "status": status,
            "payload": payload,
            "arrays": arrays,
            "meta": {"host": socket.gethostname(), "pid": os.getpid(), "written": time.time(), **(meta or {})},
        }
        atomic_write_json(self.record_path(key), record)

    def read(self, key: str, verify_arrays: bool = True) -> UnitRecord | None:
        """The unit's record if present and valid; ``None`` if absent; invalid ones are moved aside."""
        path = self.record_path(key)
        if not path.exists():
            return None
        problem = None
        try:
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict) or any(f not in raw for f in RECORD_FIELDS):
                problem = "missing fields"
            elif raw["key"] != key:
                problem = f"record is for unit {raw['key']!r}"
            elif raw["fingerprint"] != self.fingerprint:
                problem = f"config fingerprint {raw['fingerprint']} != {self.fingerprint}"
            elif raw["status"] not in ("ok", "error"):
                problem = f"unknown status {raw['status']!r}"
            elif verify_arrays:
                for name, digest in raw["arrays"].items():
                    array_path = self.array_path(key, name)
                    if not array_path.exists() or sha256_file(array_path) != digest:
                        problem = f"array {array_path.name} is missing or does not match its checksum"
                        break
        except (OSError, ValueError) as exc:
            problem = f"unreadable ({type(exc).__name__}: {exc})"
        if problem:
            self._quarantine(path, problem)
            return None
        return UnitRecord(raw["key"], raw["status"], raw["payload"], raw["arrays"], raw.get("meta", {}))

    def is_done(self, key: str) -> bool:
        """True when the unit has a valid ``ok`` record (its arrays verified)."""
        record = self.read(key)
        return record is not None and record.status == "ok"

    def load_array(self, key: str, name: str) -> np.ndarray:
        return np.load(self.array_path(key, name), allow_pickle=False)

    def _quarantine(self, path: Path, problem: str) -> None:
        """Move an invalid record aside (kept for inspection) so the unit is recomputed."""
        target = path.with_name(f"{path.name}.invalid-{int(time.time() * 1000)}")
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return  # another rank moved it first
        (target.with_name(target.name + ".why")).write_text(problem + "\n")
