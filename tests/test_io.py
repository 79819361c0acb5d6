"""Atomic writes and the safe unpickler of lwroi._io."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from lwroi._io import atomic_path, atomic_save_npy, atomic_write_json, safe_load_pickle, sha256_file
from lwroi.exceptions import UnsafePickleError


def test_atomic_path_replaces_the_file_on_success(tmp_path):
    target = tmp_path / "sub" / "result.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # invisible until complete
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["result.txt"]


def test_atomic_path_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]  # no temporary file left behind


def test_atomic_write_json_serialises_numpy_and_paths(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": np.arange(3), "y": np.float32(0.5), "p": Path("/d")})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [0, 1, 2], "y": 0.5, "p": "/d"}


def test_atomic_save_npy_round_trips(tmp_path):
    array = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    atomic_save_npy(tmp_path / "a.npy", array)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), array)


def test_sha256_file_matches_hashlib(tmp_path):
    (tmp_path / "f").write_bytes(b"lwroi" * 1000)
    assert sha256_file(tmp_path / "f", chunk=7) == hashlib.sha256(b"lwroi" * 1000).hexdigest()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_safe_load_pickle_loads_arrays_and_plain_containers(tmp_path, protocol):
    content = {
        "train": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "voxel_mask": np.eye(3),
        "ids": np.array([1, 2], dtype=np.int64),
        "scalar": np.float64(1.5),
        "nested": OrderedDict(a=[1, (2, 3)], b={"c": "text", "d": b"bytes"}),
    }
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps(content, protocol=protocol))
    loaded = safe_load_pickle(tmp_path / "ok.pkl")
    assert sorted(loaded) == sorted(content)
    for key in ("train", "voxel_mask", "ids"):
        np.testing.assert_array_equal(loaded[key], content[key])
        assert loaded[key].dtype == content[key].dtype
    assert loaded["scalar"] == 1.5 and loaded["nested"] == content["nested"]


class _Payload:
    """Pickles as a call of ``func(*args)``: what a malicious pickle does on load."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


class Harmless:
    """An ordinary class from another module (this one)."""


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda marker: _Payload(os.system, f"touch {marker}"), "system"),
        (lambda marker: _Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()"), "builtins.eval"),
        (lambda marker: _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"), "builtins.exec"),
        (lambda marker: Harmless(), "tests.test_io.Harmless"),
        (lambda marker: Path("x"), "pathlib"),
    ],
    ids=["os.system", "eval", "exec", "own-class", "pathlib"],
)
def test_safe_load_pickle_refuses_other_globals_without_running_them(tmp_path, make, named):
    marker = tmp_path / "executed"
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps({"train": make(marker)}, protocol=4))
    with pytest.raises(UnsafePickleError, match=rf"bad\.pkl: refusing to load pickle: it asks for .*{named}"):
        safe_load_pickle(tmp_path / "bad.pkl")
    assert not marker.exists()


def test_plain_unpickling_of_the_payload_would_have_run_it(tmp_path):
    """Guards the test above: the payload really is live when loaded without restrictions."""
    marker = tmp_path / "executed"
    pickle.loads(pickle.dumps(_Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()")))
    assert marker.exists()


def test_safe_load_pickle_reports_a_file_that_is_not_a_pickle(tmp_path):
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(UnsafePickleError, match=r"junk\.pkl: not a readable pickle"):
        safe_load_pickle(tmp_path / "junk.pkl")
