"""Unit results: atomic, verified, and never trusted when partial, corrupt or foreign."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from lwroi.orchestration.results import ResultStore


def test_round_trip_with_arrays(tmp_path):
    store = ResultStore(tmp_path, "abc")
    store.write_ok("fit/sub01/V1", {"pcc": 0.5}, {"scores": np.arange(4.0)})
    record = store.read("fit/sub01/V1")
    assert record.status == "ok" and record.payload == {"pcc": 0.5}
    np.testing.assert_array_equal(store.load_array("fit/sub01/V1", "scores"), np.arange(4.0))


def test_truncated_record_is_recomputed_not_reduced(tmp_path):
    store = ResultStore(tmp_path, "abc")
    store.write_ok("select/V1", {"wc": 1})
    path = store.record_path("select/V1")
    path.write_text(path.read_text()[:20])
    assert store.read("select/V1") is None
    assert not path.exists()
    assert list(path.parent.glob("V1.json.invalid-*.why"))


def test_corrupt_array_invalidates_record(tmp_path):
    store = ResultStore(tmp_path, "abc")
    store.write_ok("fit/sub01/V1", {"pcc": 0.5}, {"scores": np.arange(4.0)})
    store.array_path("fit/sub01/V1", "scores").write_bytes(b"garbage")
    assert not store.is_done("fit/sub01/V1")


def test_record_of_another_config_is_not_trusted(tmp_path):
    ResultStore(tmp_path, "old").write_ok("select/V1", {"wc": 1})
    assert ResultStore(tmp_path, "new").read("select/V1") is None


def test_error_record_keeps_traceback_and_is_not_done(tmp_path):
    store = ResultStore(tmp_path, "abc")
    try:
        raise ValueError("boom")
    except ValueError as exc:
        store.write_error("tune/sub01/V1", exc)
    record = store.read("tune/sub01/V1")
    assert record.status == "error" and "ValueError: boom" in record.payload["traceback"]
    assert not store.is_done("tune/sub01/V1")


def test_no_temporary_files_are_left(tmp_path):
    store = ResultStore(tmp_path, "abc")
    store.write_ok("fit/sub01/V1", {"pcc": 0.5}, {"scores": np.zeros(3)})
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_an_edited_number_in_a_valid_record_is_quarantined(tmp_path):
    store = ResultStore(tmp_path, "abc")
    store.write_ok("fit/sub01/V1", {"pcc": 0.5})
    path = store.record_path("fit/sub01/V1")
    record = json.loads(path.read_text())
    record["payload"]["pcc"] = 0.9
    path.write_text(json.dumps(record))  # still valid JSON, every field present
    assert store.read("fit/sub01/V1") is None
    (why,) = path.parent.glob("V1.json.invalid-*.why")
    assert "checksum does not match its content" in why.read_text()


def test_a_record_without_checksum_is_not_trusted(tmp_path):
    store = ResultStore(tmp_path, "abc")
    store.write_ok("select/V1", {"wc": 1})
    path = store.record_path("select/V1")
    record = json.loads(path.read_text())
    del record["checksum"]
    path.write_text(json.dumps(record))
    assert not store.is_done("select/V1")


def test_checksum_covers_numpy_values_as_written(tmp_path):
    store = ResultStore(tmp_path, "abc")
    store.write_ok("fit/sub01/V1", {"pcc": np.float32(0.25), "n": np.int64(3), "nan": float("nan")})
    assert store.read("fit/sub01/V1").payload["n"] == 3


def test_a_record_holds_only_while_the_files_it_vouches_for_are_unchanged(tmp_path):
    shared = tmp_path / "store" / "meta.json"
    shared.parent.mkdir()
    shared.write_text("{}")
    store = ResultStore(tmp_path / "run", "abc")
    store.write_ok("features", {"store": str(shared.parent)}, files=[shared])
    assert store.read("features").files == {str(shared.absolute()): hashlib.sha256(b"{}").hexdigest()}
    assert store.is_done("features")
    time.sleep(0.02)  # past the filesystem's timestamp tick
    shared.write_text("{ }")
    assert not store.is_done("features")
    store.write_ok("features", {"store": str(shared.parent)}, files=[shared])
    shared.unlink()
    assert not store.is_done("features")


def test_read_without_quarantine_leaves_an_invalid_record_in_place(tmp_path):
    store = ResultStore(tmp_path, "abc")
    store.write_ok("fit/sub01/V1", {"pcc": 0.5}, {"scores": np.arange(4.0)})
    store.array_path("fit/sub01/V1", "scores").write_bytes(b"garbage")
    assert store.read("fit/sub01/V1", quarantine=False) is None
    assert store.record_path("fit/sub01/V1").exists()
    assert store.read("fit/sub01/V1") is None
    assert not store.record_path("fit/sub01/V1").exists()
