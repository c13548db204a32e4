"""Selecting runs from a real SQLite MLflow store: exclusions, histories, study parents."""

from __future__ import annotations

import time

import pytest
from mlflow.entities import Metric

from ablate.compare.select import attach_to_parent, resolve_tracking_uri, select_runs
from ablate.exceptions import ConfigError, DataError
from ablate.tracking.conventions import ALPHA, VAL_ACC


def test_experiment_selection_and_exclusions(store):
    sel = select_runs(
        experiment="mixed",
        filter_string="params.dataset = 'digits'",
        metrics=[VAL_ACC, ALPHA],
        tracking_uri=store["uri"],
    )
    assert sel.source == "experiment 'mixed' with filter \"params.dataset = 'digits'\""
    assert sel.excluded == {
        "FAILED": 1, "pruned (add them with --include-pruned)": 1,
        "RUNNING (add their partial curves with --include-running)": 1,
    }  # fmt: skip
    assert len(sel.runs) == 5 and sel.parent_run_id is None
    # left out, but kept aside so the table can count them per group
    assert sorted(r.status for r in sel.lost) == ["FAILED", "KILLED", "RUNNING"]
    sel = select_runs(
        experiment="mixed", filter_string="params.dataset = 'digits'", metrics=[VAL_ACC, ALPHA],
        tracking_uri=store["uri"], include_running=True,
    )  # fmt: skip
    running = next(r for r in sel.runs if r.status == "RUNNING")
    assert list(running.histories[VAL_ACC].index) == [0, 1, 2, 3, 4]
    assert "test_acc" not in running.latest
    done = next(r for r in sel.runs if r.name == "softmax_v-s0")
    assert done.seed == "0" and done.latest["test_epoch"] == 6
    assert set(done.histories) == {VAL_ACC, ALPHA}  # only the histories asked for
    assert ALPHA not in next(r for r in sel.runs if r.name == "softmax-s0").histories
    with_pruned = select_runs(experiment="mixed", tracking_uri=store["uri"], include_pruned=True)
    assert sum(r.pruned for r in with_pruned.runs) == 1


def test_last_value_per_step_wins(store, make_run):
    """A resumed run may log an epoch twice: the later value is the one read."""
    client = store["client"]
    exp = client.create_experiment("resumed")
    logged = make_run(client, exp, variant="softmax", seed=0, val_acc=[0.1, 0.5, 0.6])
    later = int(time.time() * 1000) + 10_000
    client.log_batch(logged["run_id"], metrics=[Metric(VAL_ACC, 0.65, later, 2)])
    (run,) = select_runs(experiment="resumed", metrics=[VAL_ACC], tracking_uri=store["uri"]).runs
    assert list(run.histories[VAL_ACC]) == pytest.approx([0.1, 0.5, 0.65])


def test_study_across_experiments(store):
    sel = select_runs(study="sweep", metrics=[VAL_ACC], tracking_uri=store["uri"])
    assert len(sel.runs) == 6 and sel.parent_run_id == store["parent_id"]
    assert len({r.experiment_id for r in sel.runs}) == 2
    assert sel.excluded == {"pruned (add them with --include-pruned)": 1}


def test_selection_errors(store, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="give --experiment or --study, not both"):
        select_runs(experiment="ablate", study="sweep", tracking_uri=store["uri"])
    with pytest.raises(ConfigError, match="unknown study 'nope'; existing studies: sweep"):
        select_runs(study="nope", tracking_uri=store["uri"])
    with pytest.raises(DataError, match="no runs in experiment 'ablate' match --filter"):
        select_runs(experiment="ablate", filter_string="tags.x = 'y'", tracking_uri=store["uri"])
    with pytest.raises(ConfigError, match="both quote characters"):
        select_runs(study="a'b\"c", tracking_uri=store["uri"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(DataError, match="no MLflow store at"):
        resolve_tracking_uri(None)
    with pytest.raises(DataError, match="cannot attach files to study parent run"):
        attach_to_parent(store["parent_id"], [tmp_path / "nope.csv"], store["uri"])
