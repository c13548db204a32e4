"""Full disks and damaged files (issue #25, items 11 and 15), on real file systems: a tmpfs
filled to its last byte under the checkpoints or under the MLflow SQLite store, and a
checkpoint in the artifact store cut short. Each ends in one line that says where and how to
resume, or in a warning and a run that still finishes; every finished epoch is logged once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_stopped_after  # tests/helpers.py
from mlflow import MlflowClient

from ablate.config import RunConfig
from ablate.tracking.tracker import ResumableError, TrackingUnavailable
from ablate.trial.run import resolve, run_trial
from faults.conftest import FAST, fill

EPOCHS = 2


def _run_until_full(cfg: RunConfig, folder: Path, error: type) -> tuple[str, str, Path]:
    """Train ``cfg`` with ``folder`` filled up after epoch 1 until it fails with ``error``:
    (run id, the one-line message, the file that filled the disk)."""
    filled: list[Path] = []
    runs: list = []

    def fill_after_epoch_1(epoch: int, row: dict) -> None:
        if epoch == 1 and not filled:
            filled.append(fill(folder))

    with pytest.raises(error) as caught:
        run_trial(resolve(cfg), on_epoch=fill_after_epoch_1, on_run_open=runs.append)
    return runs[0].run_id, str(caught.value), filled[0]


def _finished_once(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED", run.data.tags.get("failure_reason")
    steps = [m.step for m in client.get_metric_history(run_id, "acc/val")]
    assert sorted(steps) == list(range(EPOCHS + 1))
    return json.loads(run.data.tags["stops"])


def test_a_full_checkpoint_disk_is_one_line_naming_the_file(workdir, tiny_fs):
    disk = tiny_fs("checkpoints", "32m")
    cfg = RunConfig(**FAST, epochs=EPOCHS, checkpoint_dir=str(disk))
    run_id, message, filler = _run_until_full(cfg, disk, ResumableError)
    assert "\n" not in message and message.startswith(f"cannot write checkpoint {disk / run_id}/")
    assert "No space left on device" in message
    assert message.endswith(f"(resume with: ablate run --resume {run_id})")
    filler.unlink()
    run_trial(resolve(cfg), resume_run_id=run_id)
    (stop,) = _finished_once(MlflowClient(), run_id)
    assert stop == {"reason": "error", "epoch": 1, "resumed": 1}


def test_a_full_mlflow_sqlite_store_is_one_line_and_leaves_the_run_resumable(workdir, tiny_fs):
    store = tiny_fs("store", "3m")  # MLflow's empty tables take about 1 MB
    uri = f"sqlite:///{store}/mlflow.db"
    cfg = RunConfig(**FAST, epochs=EPOCHS, tracking_uri=uri)
    run_id, message, filler = _run_until_full(cfg, store, TrackingUnavailable)
    assert "\n" not in message and "INSERT" not in message
    assert message.startswith(f"MLflow tracking store {uri} is unavailable (database or disk")
    assert f"(resume with: ablate run --resume {run_id} --tracking-uri {uri})" in message
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # nothing more was written
    filler.unlink()
    run_trial(resolve(cfg), resume_run_id=run_id)
    (stop,) = _finished_once(client, run_id)
    # epoch 2 was checkpointed, then its row did not reach the store: it is logged now
    assert stop == {"reason": "unrecorded", "epoch": 2, "resumed": 2}


def test_a_damaged_uploaded_best_checkpoint_does_not_fail_every_resume(workdir):
    cfg = RunConfig(**FAST, epochs=EPOCHS)
    run_id = run_stopped_after(cfg, epoch=1)
    client = MlflowClient()
    shutil.rmtree(workdir / "checkpoints" / run_id)  # resumed on another machine
    uploaded = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    best = uploaded / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:-1000])  # the store's copy cut short
    with pytest.warns(UserWarning, match="best.pt"):
        run_trial(resolve(cfg), resume_run_id=run_id)
    _finished_once(client, run_id)
    assert client.get_run(run_id).data.tags["best_selection"].endswith(
        "from epoch 1 on (best.pt was lost at a resume)")
