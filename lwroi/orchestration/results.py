"""One result file per work unit: written atomically, checked before it is trusted.

A unit's record is ``units/<key>.json`` (key, config fingerprint, status, payload, the
sha256 of every array written beside it and of every shared file it was computed into, such
as the feature store, and a checksum of all that). Arrays go first, the record last, so a
record on disk means every array it names is complete. A record that does not parse, belongs
to another configuration, was edited (its checksum differs), or whose arrays or files do not
match their checksums is *invalid*: it is moved aside and the unit is computed again, never
reduced.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lwroi._io import _json_default, atomic_save_npy, atomic_write_json, sha256_file, sha256_file_cached

RECORD_FIELDS = ("key", "fingerprint", "status", "payload", "arrays", "files")
"""What a record says; its ``checksum`` covers exactly these (``meta`` is provenance only)."""


def record_checksum(record: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a record's :data:`RECORD_FIELDS`: an edited value changes it."""
    text = json.dumps({f: record[f] for f in RECORD_FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class UnitRecord:
    """A unit's validated result record."""

    key: str
    status: str
    """``ok`` or ``error``."""
    payload: dict[str, Any]
    arrays: dict[str, str]
    """Array name -> sha256 of ``<key>.<name>.npy``."""
    files: dict[str, str]
    """Absolute path -> sha256 of each shared file the unit produced or reused (its feature store)."""
    meta: dict[str, Any]


class ResultStore:
    """Read and write unit results under ``run_dir/units`` for one config's fingerprints.

    A unit's record carries its model's fingerprint (``model_fingerprints``, by the model named
    second in the unit's key), so the records of a zoo's other models stay valid when a model
    is added or changed; a key of no listed model carries ``fingerprint``.
    """

    def __init__(self, run_dir: str | Path, fingerprint: str, model_fingerprints: Mapping[str, str] | None = None
                 ) -> None:
        self.run_dir = Path(run_dir)
        self.fingerprint = fingerprint
        self.model_fingerprints = dict(model_fingerprints or {})
        self.units_dir = self.run_dir / "units"

    def fingerprint_of(self, key: str) -> str:
        """The fingerprint unit ``key``'s record must carry: its model's, else the run's."""
        parts = key.split("/")
        return self.model_fingerprints.get(parts[1], self.fingerprint) if len(parts) > 1 else self.fingerprint

    def record_path(self, key: str) -> Path:
        return self.units_dir / f"{key}.json"

    def array_path(self, key: str, name: str) -> Path:
        return self.units_dir / f"{key}.{name}.npy"

    def write_ok(self, key: str, payload: dict[str, Any], arrays: dict[str, np.ndarray] | None = None,
                 meta: dict[str, Any] | None = None, files: Sequence[Path] = ()) -> None:
        """Write the unit's arrays, then its record (the completion marker).

        ``files`` are products outside the run directory that the unit wrote or reused (a
        feature store): the record holds only while they are unchanged, so a store that is
        garbled or loses its ``meta.json`` gets its unit computed again instead of trusted.
        """
        sums = {}
        for name, array in (arrays or {}).items():
            path = self.array_path(key, name)
            atomic_save_npy(path, array)
            sums[name] = sha256_file(path)
        shared = {str(Path(f).absolute()): sha256_file_cached(f) for f in files}
        self._write(key, "ok", payload, sums, meta, shared)

    def write_error(self, key: str, exc: BaseException, meta: dict[str, Any] | None = None) -> None:
        """Record a failed unit with its traceback; a rerun tries it again."""
        payload = {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        }
        self._write(key, "error", payload, {}, meta, {})

    def _write(self, key: str, status: str, payload: dict[str, Any], arrays: dict[str, str],
               meta: dict[str, Any] | None, files: dict[str, str]) -> None:
        record = {
            "key": key,
            "fingerprint": self.fingerprint_of(key),
            "status": status,
            "payload": payload,
            "arrays": arrays,
            "files": files,
            "meta": {"host": socket.gethostname(), "pid": os.getpid(), "written": time.time(), **(meta or {})},
        }
        record = json.loads(json.dumps(record, default=_json_default))  # the checksum covers what a reader sees
        record["checksum"] = record_checksum(record)
        atomic_write_json(self.record_path(key), record)

    def read(self, key: str, verify_arrays: bool = True, quarantine: bool = True) -> UnitRecord | None:
        """The unit's record if present and valid, else ``None``; invalid ones are moved aside.

        ``verify_arrays=False`` skips hashing the arrays and shared files (a caller that has just
        verified them); ``quarantine=False`` leaves an invalid record in place (``lwroi status``
        only looks).
        """
        path = self.record_path(key)
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
            problem = self._problem(raw, key, verify_arrays)
        except (OSError, ValueError) as exc:
            problem = f"unreadable ({type(exc).__name__}: {exc})"
        if problem:
            if quarantine:
                self._quarantine(path, problem)
            return None
        return UnitRecord(raw["key"], raw["status"], raw["payload"], raw["arrays"], raw["files"], raw.get("meta", {}))

    def _problem(self, raw: Any, key: str, verify_arrays: bool) -> str | None:
        """Why a parsed record cannot be trusted, or None."""
        if not isinstance(raw, dict) or any(f not in raw for f in (*RECORD_FIELDS, "checksum")):
            return "missing fields"
        if raw["checksum"] != record_checksum(raw):
            return "its checksum does not match its content (edited or garbled)"
        if raw["key"] != key:
            return f"record is for unit {raw['key']!r}"
        if raw["fingerprint"] != self.fingerprint_of(key):
            return f"config fingerprint {raw['fingerprint']} != {self.fingerprint_of(key)}"
        if raw["status"] not in ("ok", "error"):
            return f"unknown status {raw['status']!r}"
        if not verify_arrays:
            return None
        for name, digest in raw["arrays"].items():
            array_path = self.array_path(key, name)
            if not array_path.exists() or sha256_file(array_path) != digest:
                return f"array {array_path.name} is missing or does not match its checksum"
        for file, digest in raw["files"].items():
            if not Path(file).is_file() or sha256_file_cached(file) != digest:
                return f"{file}, which it was computed into, is missing or changed"
        return None

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
