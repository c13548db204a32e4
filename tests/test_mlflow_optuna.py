"""Optuna as its users know it: the study names its metric, and Optuna's own plots reach the
study's MLflow parent run (real Optuna SQLite storage and MLflow SQLite store)."""

from __future__ import annotations

import optuna
import pytest

from ablate.study.common import RunSettings
from ablate.study.optuna_figures import log_figures_of, log_study_figures
from ablate.study.parent import prepare_study
from ablate.study.spec import load_study
from ablate.tracking import Tracker


def _artifacts(tracker: Tracker, path: str) -> set[str]:
    return {f.path for f in tracker.client.list_artifacts(tracker.run_id, path)}


def _objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    depth = trial.suggest_int("depth", 1, 4)
    value = 0.0
    for step in range(3):  # a learning curve the pruner would see
        value = 1.0 - (lr - 0.01) ** 2 - 0.01 * depth - 0.1 / (step + 1)
        trial.report(value, step)
    return value


def test_optuna_plots_are_logged_on_the_parent_run(workdir):
    storage = f"sqlite:///{workdir}/optuna.db"
    study = optuna.create_study(study_name="plots", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(_objective, n_trials=6)
    parent = Tracker.start(None, "ablate", run_name="plots")
    log_figures_of(parent, "plots", storage, has_search_space=True)
    assert _artifacts(parent, "figures") == {
        "figures/optuna_history.png",
        "figures/optuna_intermediate.png",
        "figures/optuna_importances.png",
    }


def test_grid_study_without_a_search_space_gets_no_importances(workdir):
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_categorical("seed", [0, 1]) * 0.1, n_trials=2)
    parent = Tracker.start(None, "ablate", run_name="grid")
    logged = log_study_figures(parent, study, has_search_space=False)
    assert logged == ["figures/optuna_history.png", "figures/optuna_intermediate.png"]


def test_a_study_without_finished_trials_logs_nothing(workdir):
    parent = Tracker.start(None, "ablate", run_name="empty")
    assert log_study_figures(parent, optuna.create_study(), has_search_space=True) == []
    assert _artifacts(parent, "figures") == set()


def test_prepared_study_names_its_metric(workdir):
    path = workdir / "named.yaml"
    path.write_text("name: named\nbase: {dataset: digits, epochs: 1}\ngrid: {seed: [0]}\n")
    storage = f"sqlite:///{workdir}/ablate-optuna.db"
    prepare_study(load_study(path), RunSettings(storage_url=storage,
                                                tracking_uri=f"sqlite:///{workdir}/mlflow.db"))
    study = optuna.load_study(study_name="named", storage=storage)
    assert study.metric_names == [study.user_attrs["metric"]]
    assert study.metric_names[0].startswith(("val_", "best_", "test_"))


@pytest.mark.parametrize("bad", ["sqlite:///nowhere/missing/optuna.db"])
def test_figures_of_an_unreachable_study_only_warn(workdir, capsys, bad):
    parent = Tracker.start(None, "ablate", run_name="warn")
    log_figures_of(parent, "missing", bad, has_search_space=False)
    assert "no Optuna figures" in capsys.readouterr().err
