"""The training loop on its own (no MLflow): fit's epochs and hook, the alpha schedule object
applied every step, evaluate's metrics, and save/restore continuing the same curve."""

from __future__ import annotations

import math

import pytest
import torch

from ablate.config import RunConfig
from ablate.trial.loop import Loop, evaluate, fit, seed_everything
from ablate.trial.run import build_model, load_data_for, resolve
from variants import AlphaSchedule

FAST = dict(dataset="digits", img_size=8, batch_size=128, quiet=True, seed=0, device="cpu")


def _loop(**overrides) -> Loop:
    run = resolve(RunConfig(**{**FAST, **overrides}))
    seed_everything(run.cfg.seed)
    bundle = load_data_for(run)
    seed_everything(run.cfg.seed)
    model = build_model(run, bundle)
    return Loop.create(run.cfg, model, bundle, run.device, run.amp, schedule=run.alpha_schedule)


def _fit(loop: Loop, start: int = 0) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    fit(loop, start, lambda epoch, row: rows.__setitem__(epoch, row))
    return rows


def test_fit_validates_epoch_zero_then_trains_every_epoch(workdir):
    loop = _loop(epochs=2)
    rows = _fit(loop)
    assert sorted(rows) == [0, 1, 2]
    assert "loss/train" not in rows[0] and 0.0 <= rows[0]["acc/val"] <= 1.0  # untrained
    for epoch in (1, 2):
        assert math.isfinite(rows[epoch]["loss/train"]) and rows[epoch]["optim/lr"] > 0
        assert {"loss/val", "acc/val", "f1/val", "speed/samples_per_s"} <= set(rows[epoch])
    assert loop.global_step == 2 * loop.steps_per_epoch
    assert rows[2]["loss/train"] < rows[1]["loss/train"]  # it learns
    assert "alpha/value" not in rows[2] and loop.schedule is None  # softmax: nothing to anneal


def test_the_resolved_schedule_object_is_sized_to_the_data_and_set_every_step(workdir):
    run = resolve(RunConfig(**FAST, epochs=3, variant="softmax_v", alpha_schedule="linear"))
    assert isinstance(run.alpha_schedule, AlphaSchedule) and run.alpha_schedule.steps is None
    loop = _loop(epochs=3, variant="softmax_v", alpha_schedule="linear")
    assert loop.schedule.steps == 3 * loop.steps_per_epoch  # the whole run
    rows = _fit(loop)
    assert rows[0]["alpha/value"] == 0.0 and rows[3]["alpha/value"] == 1.0
    assert 0.0 < rows[1]["alpha/value"] < rows[2]["alpha/value"] < 1.0
    assert loop.model.variant_params()["alpha"] == pytest.approx(1.0)  # set in the model


def test_a_window_in_epochs_ends_on_the_last_step_of_that_epoch(workdir):
    loop = _loop(epochs=3, variant="softmax_v", alpha_schedule="linear", alpha_epochs=1)
    assert loop.schedule.steps == loop.steps_per_epoch
    rows = _fit(loop)
    assert rows[1]["alpha/value"] == 1.0 and rows[3]["alpha/value"] == 1.0  # held after the window


def test_without_a_schedule_the_variants_own_alpha_is_reported(workdir):
    loop = _loop(epochs=1, variant="softmax_v:alpha=0.25")
    rows = _fit(loop)
    assert rows[1]["alpha/value"] == pytest.approx(0.25)


def test_evaluate_reports_metrics_that_match_its_predictions(workdir):
    loop = _loop(epochs=1)
    _fit(loop)
    bundle = loop.bundle
    metrics, pred = evaluate(loop.model, bundle.val, bundle, 64, loop.device, amp=False)
    assert pred.shape == (len(bundle.val),)
    assert metrics["acc"] == pytest.approx(float((pred == bundle.val.y.numpy()).mean()))
    assert metrics["loss"] > 0 and 0.0 <= metrics["f1"] <= 1.0


def test_restore_continues_the_same_curve(workdir):
    """What resuming relies on: state() + model/optimizer/scheduler continue identically."""
    straight = _loop(epochs=3, variant="softmax_v", alpha_schedule="cosine")
    first = _fit(straight)

    part = _loop(epochs=3, variant="softmax_v", alpha_schedule="cosine")
    part.set_alpha(0)
    part.validate()
    part.train_epoch(1)  # stopped after epoch 1, as a killed run's last.pt would be
    state = {
        **part.state(),
        "model": part.model.state_dict(),
        "optimizer": part.opt.state_dict(),
        "scheduler": part.sched.state_dict(),
    }
    resumed = _loop(epochs=3, variant="softmax_v", alpha_schedule="cosine")
    resumed.restore(state)
    assert resumed.global_step == straight.steps_per_epoch
    rows = _fit(resumed, start=2)
    for epoch in (2, 3):
        assert rows[epoch]["loss/train"] == first[epoch]["loss/train"]
        assert rows[epoch]["acc/val"] == first[epoch]["acc/val"]
        assert rows[epoch]["alpha/value"] == first[epoch]["alpha/value"]
    assert torch.equal(next(resumed.model.parameters()), next(straight.model.parameters()))
