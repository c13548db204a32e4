"""Optuna as its users know it: the study names its metric, and Optuna's own plots reach the
study's MLflow parent run, labelled with the metric and each trial's cell (real Optuna SQLite
storage and MLflow SQLite store)."""

from __future__ import annotations

import optuna
import pytest

from ablate.study.common import RunSettings
from ablate.study.parent import prepare_study
from ablate.study.report import figures_of, study_figures
from ablate.study.spec import load_study, parse_study
from ablate.tracking import Tracker
from ablate.tracking.conventions import VAL_ACC


@pytest.fixture(scope="module")
def search():
    return parse_study({
        "name": "plots", "base": {"dataset": "digits"}, "n_trials": 6, "metric": "f1/val",
        "search_space": {"lr": {"type": "log_float", "low": 1e-4, "high": 1e-1},
                         "batch_size": {"type": "int", "low": 16, "high": 64}},
    })  # fmt: skip


@pytest.fixture(scope="module")
def grid():
    return parse_study({"name": "grid", "grid": {"variant": ["softmax", "softmax_v"]}})


def _artifacts(tracker: Tracker, path: str) -> set[str]:
    return {f.path for f in tracker.client.list_artifacts(tracker.run_id, path)}


def _objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    batch = trial.suggest_int("batch_size", 16, 64)
    value = 0.0
    for step in range(3):  # a learning curve the pruner would see
        value = 1.0 - (lr - 0.01) ** 2 - 0.001 * batch - 0.1 / (step + 1)
        trial.report(value, step)
    return value


def test_optuna_plots_are_logged_on_the_parent_run(workdir, search):
    storage = f"sqlite:///{workdir}/optuna.db"
    study = optuna.create_study(study_name="plots", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(_objective, n_trials=6)
    figures = figures_of(search, storage)
    history = figures["figures/optuna_history.png"].axes[0]
    assert history.get_ylabel() == "f1/val"  # the study's metric, not "Objective Value"
    parent = Tracker.start(None, "ablate", run_name="plots")
    parent.publish_summary({}, figures)
    assert _artifacts(parent, "figures") == {
        "figures/optuna_history.png",
        "figures/optuna_intermediate.png",
        "figures/optuna_importances.png",
    }


def test_grid_curves_are_labelled_by_their_cells_and_get_no_importances(workdir, grid):
    def curve(trial: optuna.Trial) -> float:
        trial.suggest_categorical("variant", grid.grid["variant"])
        for epoch in (0, 1):
            trial.report(0.5 + epoch / 10, epoch)
        return 0.6

    study = optuna.create_study(direction="maximize")
    for variant in grid.grid["variant"]:
        study.enqueue_trial({"variant": variant})
    study.optimize(curve, n_trials=2)
    figures = study_figures(study, grid)
    assert list(figures) == ["figures/optuna_history.png", "figures/optuna_intermediate.png"]
    curves = figures["figures/optuna_intermediate.png"].axes[0]
    assert [line.get_label() for line in curves.get_lines()] == [
        "#0 variant=softmax", "#1 variant=softmax_v"
    ]
    assert [t.get_text() for t in curves.get_legend().get_texts()] == [
        "#0 variant=softmax", "#1 variant=softmax_v"
    ]
    assert curves.get_ylabel().startswith(VAL_ACC)


def test_a_study_without_finished_trials_has_no_figures(workdir, search):
    assert study_figures(optuna.create_study(), search) == {}


def test_prepared_study_names_its_metric(workdir):
    path = workdir / "named.yaml"
    path.write_text("name: named\nbase: {dataset: digits, epochs: 1}\ngrid: {seed: [0]}\n")
    storage = f"sqlite:///{workdir}/ablate-optuna.db"
    prepare_study(load_study(path), RunSettings(storage_url=storage,
                                                tracking_uri=f"sqlite:///{workdir}/mlflow.db"))
    study = optuna.load_study(study_name="named", storage=storage)
    assert study.metric_names == [study.user_attrs["metric"]] == [VAL_ACC]


@pytest.mark.parametrize("bad", ["sqlite:///nowhere/missing/optuna.db"])
def test_figures_of_an_unreachable_study_only_warn(workdir, capsys, bad, grid):
    assert figures_of(grid, bad) == {}
    assert "no Optuna figures" in capsys.readouterr().err
