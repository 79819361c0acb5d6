"""Small file helpers every layer shares: atomic writes, a safe unpickler, checksums.

Every result lwroi writes goes through :func:`atomic_path`, so a reader sees either the
old file or the complete new one, never a partial file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from lwroi.exceptions import LwroiError, UnsafePickleError

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(LwroiError, OSError):
    """A write failed for want of space (or quota); the message names the path and the space needed."""

    def __str__(self) -> str:
        return str(self.strerror)


def disk_full_error(path: Path, needed: int | None) -> DiskFullError:
    """The error for a failed write of about ``needed`` bytes to ``path``, with the space left there."""
    free = shutil.disk_usage(_existing_parent(path)).free
    want = f"about {_megabytes(needed)} needed, " if needed else ""
    return DiskFullError(errno.ENOSPC, f"{path}: disk full ({want}{_megabytes(free)} free): free space or move "
                                       "the run directory, then rerun the same command to resume")


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, nbytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and ``os.replace`` it over ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched. A write that
    fails for want of space raises :class:`DiskFullError` naming ``path`` and ``nbytes`` (the
    expected size, when the caller knows it) and the space left, instead of a bare ``OSError``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if exc.errno in _DISK_FULL and not isinstance(exc, DiskFullError):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()  # free what the failed write took before measuring what is left
            raise disk_full_error(path, nbytes) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_save_npy(path: str | Path, array: Any) -> None:
    """Save a numpy array as ``.npy`` atomically."""
    import numpy as np

    array = np.asarray(array)
    with atomic_path(path, array.nbytes) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as fh:
        return _sha256_open(fh, chunk)


def _sha256_open(fh: BinaryIO, chunk: int = 1 << 20) -> str:
    """Hex sha256 of an open file's bytes, from its start."""
    digest = hashlib.sha256()
    fh.seek(0)
    while block := fh.read(chunk):
        digest.update(block)
    return digest.hexdigest()


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def sha256_file_cached(path: str | Path, opened: BinaryIO | None = None) -> str:
    """:func:`sha256_file`, computed once per process for a file left unchanged (same inode, size, mtime).

    Large shared products (a feature store's arrays) are verified by every unit that reads them;
    hashing them once per process keeps that to a fraction of a second per launch. Any write
    replaces the inode or moves the mtime, so a file changed since is hashed again. ``opened``:
    the file as opened by the caller, whose own inode is then the one identified (and hashed on
    a miss), whatever the path names by now.
    """
    path = Path(path)
    info = path.stat() if opened is None else os.fstat(opened.fileno())
    key = (str(path.absolute()), info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path) if opened is None else _sha256_open(opened)
    return _DIGESTS[key]


_SAFE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Admit numpy arrays, numpy dtypes and plain containers; refuse every other global."""

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS or (module.startswith("numpy") and name.endswith("DType")):
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source}: refusing to load pickle: it asks for {module}.{name}; "
            "only numpy arrays and plain containers are admitted"
        )


def safe_load_pickle(path: str | Path) -> Any:
    """Load a pickle that may contain only numpy arrays, numbers, strings and plain containers.

    Raises
    ------
    UnsafePickleError
        The pickle would import or call anything else (it is never executed).
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except UnsafePickleError:
        raise
    except Exception as exc:
        raise UnsafePickleError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
