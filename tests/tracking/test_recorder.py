"""The recorder on a real SQLite store: how a run ends, which epoch is best, and where its
checkpoints go (local every epoch, uploaded every K epochs and on a stop, with their digests),
and which one a resume falls back to when the newest is damaged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ablate.config import RunConfig
from ablate.exceptions import ConfigError, Pruned
from ablate.tracking import conventions as cv
from ablate.tracking.conventions import ARTIFACT_DIR, PREVIOUS
from ablate.tracking.recorder import (
    DIGEST_TAG,
    RESUMABLE,
    Best,
    Checkpoints,
    Recorder,
    file_digest,
)
from ablate.tracking.tracker import Tracker


@pytest.fixture
def cfg(workdir):
    return RunConfig(system_metrics=False, quiet=True, checkpoint_dir=str(workdir / "ckpt"))


@pytest.fixture
def client(workdir):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{workdir}/mlflow.db")


@pytest.mark.parametrize(
    "error, status, reason, trial_state",
    [
        (None, cv.FINISHED, None, None),
        (Pruned("pruned at epoch 2"), cv.KILLED, None, "PRUNED"),
        (KeyboardInterrupt(), cv.KILLED, "interrupted (resume with: ablate run --resume {id})",
         None),
        (ConfigError("epochs: must be >= 1"), cv.FAILED, "epochs: must be >= 1", None),
        (RuntimeError("CUDA out of memory"), cv.FAILED, "RuntimeError: CUDA out of memory", None),
    ],
)
def test_the_run_ends_with_the_status_the_block_earned(
    cfg, client, error, status, reason, trial_state
):
    recorder = Recorder.open(cfg, name="r", tags={})
    if error is None:
        with recorder:
            pass
    else:
        with pytest.raises(type(error)), recorder:
            raise error
    run = client.get_run(recorder.tracker.run_id)
    assert run.info.status == status
    expected = reason.format(id=recorder.tracker.run_id) if reason else None
    assert run.data.tags.get(cv.FAILURE_REASON) == expected
    assert run.data.tags.get(cv.TRIAL_STATE) == trial_state


def test_a_study_trial_is_not_told_to_resume_by_hand(cfg, client):
    parent = Tracker.start(cfg.tracking_uri, "exp", run_name="study")
    recorder = Recorder.open(cfg, name="t", tags={}, parent_run_id=parent.run_id)
    with pytest.raises(KeyboardInterrupt), recorder:
        raise KeyboardInterrupt
    assert client.get_run(recorder.tracker.run_id).data.tags[cv.FAILURE_REASON] == "interrupted"


def test_with_a_schedule_only_epochs_at_its_end_value_compete():
    best = Best()
    assert best.offer(1, 0.9, at_end=False) and best.epoch == 1
    assert best.offer(3, 0.5, at_end=True)  # the first epoch at the end value wins outright
    assert not best.offer(4, 0.95, at_end=False) and not best.offer(5, 0.4, at_end=True)
    assert (best.epoch, best.val_acc, best.restricted) == (3, 0.5, True)


def _payload(epoch: int) -> dict:
    state = {key: 0 for key in RESUMABLE}  # what a resume needs, the weights told apart
    return {**state, "model": {"w": torch.full((64, 64), float(epoch))}, "epoch": epoch}


def test_last_keeps_its_predecessor_and_a_damaged_one_falls_back(tmp_path):
    ckpt = Checkpoints(tmp_path / "run")
    assert ckpt.load_last() is None
    for epoch in (1, 2):
        ckpt.save_last(_payload(epoch), epoch)
    assert (tmp_path / "run" / PREVIOUS).is_file()
    assert ckpt.load_last()["epoch"] == 2
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no temp
    data = ckpt.last_path.read_bytes()
    ckpt.last_path.write_bytes(data[: len(data) // 2])  # a write cut short
    with pytest.warns(UserWarning, match="unreadable"):
        assert ckpt.load_last()["epoch"] == 1
    torch.save({"model": {}, "epoch": 2}, ckpt.last_path)  # no optimizer state: not resumable
    with pytest.warns(UserWarning, match=r"last.pt lacks optimizer, scheduler, best") as caught:
        assert ckpt.load_last()["epoch"] == 1
    assert len(caught) == 1


def test_uploads_every_k_epochs_and_a_resume_elsewhere_downloads_them(cfg, workdir):
    tracker = Tracker.start(cfg.tracking_uri, "exp")
    ckpt = Checkpoints(workdir / "a", tracker, upload_every=2)
    ckpt.save_last(_payload(1), 1)
    assert tracker.list_artifacts(ARTIFACT_DIR) == []  # not due yet
    ckpt.save_best(_payload(1))
    ckpt.save_last(_payload(2), 2)
    assert sorted(tracker.list_artifacts(ARTIFACT_DIR)) == [
        "checkpoints/best.pt", "checkpoints/last.prev.pt", "checkpoints/last.pt"]
    ckpt.save_last(_payload(3), 3)  # not uploaded: a resume elsewhere starts after epoch 2
    elsewhere = Checkpoints(workdir / "b", tracker)
    assert elsewhere.load_last()["epoch"] == 2
    assert elsewhere.load_best()["epoch"] == 1  # fetched with it, for the final test
    ckpt.remove()
    assert not (workdir / "a").exists()


def test_a_damaged_upload_is_caught_by_its_digest_and_its_predecessor_used(cfg, workdir):
    tracker = Tracker.start(cfg.tracking_uri, "exp")
    ckpt = Checkpoints(workdir / "a", tracker)
    for epoch in (1, 2):
        ckpt.save_last(_payload(epoch), epoch)
    ckpt.upload()
    assert tracker.tags()[DIGEST_TAG + "last.pt"] == file_digest(ckpt.last_path)
    # the store's copy cut short, as a full disk on the artifact server leaves it
    stored = Path(tracker.client.get_run(tracker.run_id).info.artifact_uri.removeprefix(
        "file://")) / ARTIFACT_DIR / "last.pt"
    stored.write_bytes(stored.read_bytes()[:-100])
    with pytest.warns(UserWarning, match="does not have the size and SHA-256") as caught:
        assert Checkpoints(workdir / "b", tracker).load_last()["epoch"] == 1
    assert len(caught) == 1
