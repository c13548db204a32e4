"""The study summary: rows per variant, the table, and what is logged to the parent run."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")
from mlflow import MlflowClient  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from ablate.study import state as st  # noqa: E402
from ablate.study.parent import prepare_study  # noqa: E402
from ablate.study.report import format_table, summarize, summary_rows  # noqa: E402
from ablate.study.storage import open_storage  # noqa: E402


def _add(settings, plan, results):
    """Record finished trials of ``plan``'s cells: ``results`` = [(cell index, state, value)]."""
    storage = open_storage(settings.storage_url)
    try:
        study_id = storage.get_study_id_from_name(plan.name)
        for index, state, value in results:
            cell = plan.cells[index]
            template = create_trial(
                state=state,
                value=value,
                system_attrs={"fixed_params": dict(cell.params)},
                user_attrs={st.CELL_ATTR: cell.key, st.RUN_ATTR: f"run{index}"},
            )
            storage.create_new_trial(study_id, template_trial=template)
    finally:
        storage.engine.dispose()
    return optuna.load_study(study_name=plan.name, storage=settings.storage_url).trials


def test_rows_group_seeds_per_variant_with_counts_and_stats(grid_plan, settings):
    prepare_study(grid_plan, settings)
    # cells: softmax/seed 0, softmax_v/seed 0, softmax/seed 1, softmax_v/seed 1
    trials = _add(
        settings,
        grid_plan,
        [(0, TrialState.COMPLETE, 0.5), (2, TrialState.COMPLETE, 0.7), (1, TrialState.FAIL, None)],
    )
    rows = {r["variant"]: r for r in summary_rows(grid_plan, trials)}
    assert rows["softmax"]["complete"] == 2 and rows["softmax"]["best"] == 0.7
    assert rows["softmax"]["mean"] == pytest.approx(0.6)
    assert rows["softmax"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert (rows["softmax_v"]["failed"], rows["softmax_v"]["pending"]) == (1, 2)
    assert rows["softmax_v"]["best"] is None
    table = format_table(list(rows.values()), "acc/val")
    assert table.splitlines()[0].split()[:2] == ["variant", "cells"]
    assert "best acc/val" in table and "0.7000" in table and " - " in table
    markdown = format_table(list(rows.values()), "acc/val", markdown=True)
    assert markdown.splitlines()[1].startswith("|---|")
    assert format_table([], "acc/val") == "(no trials yet)"


def test_an_unfinished_study_leaves_its_parent_killed_and_resumable(grid_plan, settings):
    parent = prepare_study(grid_plan, settings)
    _add(settings, grid_plan, [(0, TrialState.COMPLETE, 0.5)])
    outcome = summarize(grid_plan, settings, parent, trials_run=1, errors=["stopped"])
    assert not outcome.complete and outcome.errors == ["stopped"]
    run = MlflowClient(settings.tracking_uri).get_run(parent)
    assert run.info.status == "KILLED" and run.data.tags["study_state"] == "incomplete"


def test_a_finished_study_logs_its_summary_and_ends_the_parent(grid_plan, settings, workdir):
    parent = prepare_study(grid_plan, settings)
    results = [(0, TrialState.COMPLETE, 0.5), (1, TrialState.COMPLETE, 0.9)]
    results += [(2, TrialState.PRUNED, None), (3, TrialState.FAIL, None)]
    results += [(3, TrialState.FAIL, None)]  # given up: 1 + max_retries failures
    _add(settings, grid_plan, results)
    outcome = summarize(grid_plan, settings, parent, trials_run=5, errors=[])
    assert outcome.complete and outcome.exhausted == [grid_plan.cells[3].key]
    assert "best: #1 acc/val 0.9000" in outcome.table and "MLflow run run1" in outcome.table
    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.tags["study_state"] == "complete_with_failed_cells"
    assert run.data.metrics["best_objective"] == 0.9
    with open(client.download_artifacts(parent, "trials.csv", str(workdir))) as handle:
        csv = handle.read()
    header, *lines = csv.splitlines()
    assert header.startswith("number,state,value,variant,seed,mlflow_run_id")
    assert len(lines) == 5 and lines[1].startswith("1,COMPLETE,0.9,softmax_v,0,run1")
    with open(client.download_artifacts(parent, "summary.md", str(workdir))) as handle:
        assert handle.read().startswith("| variant |")
