"""Checkpoints are written atomically and a damaged last.pt falls back to its predecessor."""

from __future__ import annotations

import os

import pytest
import torch

from ablate.models.checkpoint import atomic_torch_save
from ablate.tracking.checkpoints import PREVIOUS, Checkpointer


def _payload(epoch: int) -> dict:
    return {"model": {"w": torch.full((64, 64), float(epoch))}, "epoch": epoch}


def test_save_last_keeps_the_previous_file_and_loads_the_newest(tmp_path):
    ckpt = Checkpointer(tmp_path / "run")
    assert ckpt.load_last() is None
    ckpt.save_last(_payload(1))
    ckpt.save_last(_payload(2))
    assert (tmp_path / "run" / PREVIOUS).is_file()
    assert ckpt.load_last()["epoch"] == 2
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no temp


def test_truncated_last_falls_back_to_the_previous_checkpoint(tmp_path):
    ckpt = Checkpointer(tmp_path / "run")
    ckpt.save_last(_payload(1))
    ckpt.save_last(_payload(2))
    data = ckpt.last_path.read_bytes()
    ckpt.last_path.write_bytes(data[: len(data) // 2])  # a write cut short
    with pytest.warns(UserWarning, match="unreadable"):
        state = ckpt.load_last()
    assert state["epoch"] == 1


def test_a_write_that_dies_midway_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_torch_save(_payload(1), path)

    def dying_save(obj, handle):  # the process dies after writing part of the file
        handle.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save(_payload(2), path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]
