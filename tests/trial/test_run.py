"""The trial runner: test metrics name their model, best selection respects the schedule,
and an interrupted run with a damaged last.pt resumes from the previous checkpoint."""

from __future__ import annotations

import pytest
from helpers import run_stopped_after  # tests/helpers.py

from ablate.config import RunConfig
from ablate.trial.run import resolve, run_trial

FAST = dict(dataset="digits", img_size=8, batch_size=128, quiet=True, seed=0)


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture
def client(workdir):
    from mlflow import MlflowClient

    return MlflowClient()


def test_annealed_run_reports_final_and_best_weights_with_their_alpha(workdir, client):
    cfg = RunConfig(**FAST, epochs=4, variant="softmax_v", alpha_schedule="linear")
    result = run_trial(resolve(cfg))
    metrics = client.get_run(result.run_id).data.metrics
    assert metrics["test_epoch"] == 4 and metrics["test_alpha"] == pytest.approx(1.0)
    # only epochs validated at the schedule's end value are candidates: the last one
    assert metrics["best_epoch"] == 4 and metrics["best_test_alpha"] == pytest.approx(1.0)
    alphas = dict(_history(client, result.run_id, "alpha/value"))
    assert alphas[0] == 0.0 and alphas[4] == pytest.approx(1.0) and alphas[3] < 1.0
    assert client.get_run(result.run_id).data.tags["best_selection"].startswith("epochs at")


def test_best_from_any_may_pick_an_earlier_epoch_and_tests_it_at_its_alpha(workdir, client):
    cfg = RunConfig(
        **FAST, epochs=4, variant="softmax_v", alpha_schedule="linear", best_from="any"
    )
    result = run_trial(resolve(cfg))
    metrics = client.get_run(result.run_id).data.metrics
    alphas = dict(_history(client, result.run_id, "alpha/value"))
    best = int(metrics["best_epoch"])
    assert metrics["best_test_alpha"] == pytest.approx(alphas[best])
    assert metrics["best_val_acc"] == max(
        v for s, v in _history(client, result.run_id, "acc/val") if s
    )


def test_resume_after_a_damaged_last_checkpoint_matches_an_uninterrupted_run(workdir, client):
    from ablate.exceptions import AblateError

    cfg = RunConfig(**FAST, epochs=4)
    reference = run_trial(resolve(cfg.replace(experiment="reference")))

    run_id = run_stopped_after(cfg, epoch=3)
    assert client.get_run(run_id).info.status == "KILLED"
    last = workdir / "checkpoints" / run_id / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])  # cut short, as by a crash mid-write
    with pytest.warns(UserWarning, match="unreadable"):
        resumed = run_trial(resolve(cfg), resume_run_id=run_id)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_epoch"] == "2"
    for key in ("acc/val", "loss/val", "loss/train"):
        assert _history(client, run_id, key) == _history(client, reference.run_id, key)
    assert resumed.test == reference.test
    assert isinstance(AblateError, type)
