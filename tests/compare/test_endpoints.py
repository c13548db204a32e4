"""End points per run: which number, from which model (final / best-val, epoch, alpha)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ablate.compare.endpoints import (
    best_val_epoch,
    infer_mode,
    parse_metric,
    per_run_frame,
    resolve_source,
    run_endpoint,
)
from ablate.compare.select import RunRecord
from ablate.exceptions import ConfigError
from ablate.tracking.conventions import ALPHA, VAL_ACC, VAL_LOSS


def _series(values) -> pd.Series:
    return pd.Series(np.asarray(values, float), index=pd.RangeIndex(len(values), name="step"))


def _run(val_acc, *, status="FINISHED", latest=None, alpha=None, params=None, name="r"):
    histories = {VAL_ACC: _series(val_acc), VAL_LOSS: _series(2.5 * (1 - np.array(val_acc)))}
    if alpha is not None:
        histories[ALPHA] = _series(alpha)
    return RunRecord(
        run_id=name, name=name, experiment_id="1", status=status, pruned=False, tags={},
        params={"seed": "0", **(params or {})}, latest=dict(latest or {}),
        histories=histories, group="g",
    )  # fmt: skip


def test_parse_metric():
    acc = parse_metric("acc")
    assert (acc.base, acc.source, acc.checkpoint, acc.mode) == ("acc", "auto", "final", "max")
    assert acc.curve == "acc/val" and acc.bounds == (0.0, 1.0) and acc.counts
    assert parse_metric("f1/val").source == "val" and parse_metric("test_loss").mode == "min"
    assert parse_metric("test_loss").bounds is None and not parse_metric("test_f1").counts
    best = parse_metric("best_test_acc")
    assert (best.source, best.checkpoint, best.test_key) == ("test", "best", "best_test_acc")
    raw = parse_metric("loss/train")
    assert (raw.base, raw.source, raw.curve, raw.mode) == (None, "raw", "loss/train", "min")
    assert parse_metric("speed/samples_per_s").mode == "max"
    assert parse_metric("acc/train").bounds == (0.0, 1.0) and not parse_metric("acc/train").counts
    with pytest.raises(ConfigError, match="choose one of final, best"):
        parse_metric("acc", checkpoint="last")
    # the names before <quantity>/<split>: one line naming the new one
    with pytest.raises(ConfigError, match="--metric val_f1: the curve is now named f1/val"):
        parse_metric("val_f1")
    assert infer_mode("f1/val") == "max" and infer_mode("test_loss") == "min"
    with pytest.raises(ConfigError, match="--mode max or --mode min"):
        infer_mode("optim/lr")


def test_best_excludes_epoch_zero():
    # fine-tuning: the pretrained model (epoch 0) scores highest, then training recovers
    curve = [0.99, 0.80, 0.90, 0.93, 0.92]
    running = _run(curve, status="RUNNING")
    assert best_val_epoch(running, parse_metric("acc")) == 3
    end = run_endpoint(running, parse_metric("acc"), "val", "best")
    assert (end.value, end.epoch) == (0.93, 3.0)
    # the trainer's own choice wins once the run has finished
    done = _run(curve, latest={"best_epoch": 3.0})
    assert best_val_epoch(done, parse_metric("acc")) == 3
    # a logged best_epoch 0 is the untrained model: never a best checkpoint
    zero = _run(curve, latest={"best_epoch": 0.0, "best_test_acc": 0.99})
    assert math.isnan(run_endpoint(zero, parse_metric("acc"), "test", "best").value)
    # a loss curve alone (no acc/val): best by the metric itself, still never epoch 0
    only_loss = _run(curve)
    del only_loss.histories[VAL_ACC]
    assert best_val_epoch(only_loss, parse_metric("loss/val")) == 3


def test_best_among_epochs_at_the_schedules_end():
    """Running run, best_from=schedule_end: the best checkpoint is chosen among epochs
    validated at alpha_end (as the trainer does), not at alpha 0.5 where acc/val peaked."""
    curve = [0.1, 0.9, 0.95, 0.85, 0.88]
    alpha = [0.0, 0.5, 0.75, 1.0, 1.0]
    params = {"best_from": "schedule_end", "alpha_schedule": "linear", "alpha_end": "1.0"}
    run = _run(curve, status="RUNNING", alpha=alpha, params=params)
    assert best_val_epoch(run, parse_metric("acc")) == 4
    run.params["best_from"] = "any"
    assert best_val_epoch(run, parse_metric("acc")) == 2
    early = _run(curve[:3], status="RUNNING", alpha=alpha[:3], params=params)
    assert best_val_epoch(early, parse_metric("acc")) == 2  # end not reached yet: all epochs


def test_endpoints_name_their_model():
    latest = {
        "test_acc": 0.91, "test_epoch": 4.0, "test_alpha": 1.0,
        "best_test_acc": 0.93, "best_epoch": 2.0, "best_test_alpha": 0.5,
    }  # fmt: skip
    run = _run([0.1, 0.8, 0.95, 0.9, 0.92], latest=latest, alpha=[0, 0.25, 0.5, 0.75, 1.0])
    spec = parse_metric("acc")
    source, kept, notes = resolve_source([run], spec)
    assert (source, notes) == ("test", []) and kept == [run]
    final = run_endpoint(run, spec, "test", "final")
    best = run_endpoint(run, spec, "test", "best")
    assert (final.value, final.epoch, final.alpha) == (0.91, 4.0, 1.0)
    assert (best.value, best.epoch, best.alpha) == (0.93, 2.0, 0.5)
    val = run_endpoint(run, spec, "val", "final")
    assert (val.value, val.epoch, val.alpha) == (0.92, 4.0, 1.0)


def test_missing_test_numbers():
    done = _run([0.1, 0.9], latest={"test_acc": 0.9, "test_epoch": 1.0}, name="done")
    running = _run([0.1, 0.8], status="RUNNING", name="running")
    source, kept, notes = resolve_source([done, running], parse_metric("acc"))
    assert source == "val" and len(kept) == 2
    assert notes == ["1 run(s) have no test_acc: every run is compared on acc/val instead"]
    # an explicit test metric leaves out the runs without it, and says so
    source, kept, notes = resolve_source([done, running], parse_metric("test_acc"))
    assert source == "test" and kept == [done] and "left out: running" in notes[0]
    with pytest.raises(ConfigError, match="no selected run has best_test_acc; use --metric"):
        resolve_source([done], parse_metric("best_test_acc"))


def test_per_run_frame_columns():
    run = _run([0.1, 0.5, 0.8, 0.9], latest={"best_epoch": 3.0})
    frame = per_run_frame([run], parse_metric("acc/val"), "val", target=0.75, auc_epochs=3)
    row = frame.iloc[0]
    assert row["final"] == 0.9 and row["best"] == 0.9 and row["last_epoch"] == 3
    assert row["auc"] == pytest.approx(np.mean([0.5, 0.8, 0.9]))  # epochs 1..E, not 0
    assert row["epochs_to_target"] == 2.0
    assert math.isnan(row["final_alpha"])
    # a window of 0 trained epochs has no AUC
    assert math.isnan(
        per_run_frame([run], parse_metric("acc/val"), "val", auc_epochs=0).iloc[0]["auc"]
    )
    raw = per_run_frame([run], parse_metric("loss/val"), "raw")
    assert raw.iloc[0]["final"] == pytest.approx(2.5 * 0.1)
