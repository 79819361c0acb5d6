"""Checkpoints: a state is read back only by the configuration and the lwroi format that wrote it."""

from __future__ import annotations

import logging

import torch

from lwroi.encoding.checkpoint import FORMAT, load_checkpoint, save_checkpoint

STATE = {"epoch": 3, "tensors": {"W": torch.arange(6.0).view(2, 3)}}


def test_a_saved_state_comes_back_for_its_own_fingerprint(tmp_path):
    save_checkpoint(tmp_path / "unit.pt", STATE, fingerprint="abc")
    loaded = load_checkpoint(tmp_path / "unit.pt", fingerprint="abc")
    assert loaded["epoch"] == 3 and torch.equal(loaded["tensors"]["W"], STATE["tensors"]["W"])
    assert not list(tmp_path.glob("*.tmp*"))  # written through a temporary file, renamed


def test_a_state_of_another_config_is_ignored(tmp_path, caplog):
    save_checkpoint(tmp_path / "unit.pt", STATE, fingerprint="abc")
    with caplog.at_level(logging.WARNING, logger="lwroi"):
        assert load_checkpoint(tmp_path / "unit.pt", fingerprint="xyz") is None
    assert "ignoring checkpoint of another configuration" in caplog.text


def test_a_state_an_older_lwroi_wrote_is_ignored_and_the_fit_starts_over(tmp_path, caplog):
    # format 1 (before the sgd solver kept Adam's moments itself): no "format" key
    torch.save({"fingerprint": "abc", "state": {"optimizer": {"state": {}, "param_groups": []}}}, tmp_path / "unit.pt")
    with caplog.at_level(logging.WARNING, logger="lwroi"):
        assert load_checkpoint(tmp_path / "unit.pt", fingerprint="abc") is None
    assert f"another lwroi version (format 1, this one reads {FORMAT})" in caplog.text


def test_a_torn_file_is_ignored(tmp_path, caplog):
    (tmp_path / "unit.pt").write_bytes(b"PK\x03\x04 torn")
    with caplog.at_level(logging.WARNING, logger="lwroi"):
        assert load_checkpoint(tmp_path / "unit.pt", fingerprint="abc") is None
    assert "ignoring unreadable checkpoint" in caplog.text
