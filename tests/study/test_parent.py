"""Creating a study and its MLflow parent run once, and re-opening them on the next command."""

from __future__ import annotations

import dataclasses

import pytest

optuna = pytest.importorskip("optuna")
from mlflow import MlflowClient  # noqa: E402

from ablate.exceptions import AblateError, ConfigError  # noqa: E402
from ablate.study.common import PARENT_ATTR  # noqa: E402
from ablate.study.parent import prepare_study  # noqa: E402
from ablate.study.storage import open_storage  # noqa: E402
from ablate.tracking import Tracker  # noqa: E402


def _study(settings, name):
    storage = open_storage(settings.storage_url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    finally:
        storage.engine.dispose()


def test_the_parent_run_is_created_once_and_resumed(grid_plan, settings):
    run_id = prepare_study(grid_plan, settings)
    study = _study(settings, "grid")
    assert study.user_attrs[PARENT_ATTR] == run_id
    assert study.user_attrs["metric"] == "acc/val"
    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.info.run_name == "grid"
    assert run.data.tags["role"] == "study" and run.data.tags["optuna.sampler"] == "grid"
    assert run.data.params["grid.variant"] == "softmax, softmax_v"
    assert run.data.params["total_trials"] == "4"
    Tracker(settings.tracking_uri, run_id).end("KILLED")  # an earlier command stopped early
    assert prepare_study(grid_plan, settings) == run_id
    assert client.get_run(run_id).info.status == "RUNNING"


def test_a_changed_base_is_refused(grid_plan, make_plan, settings):
    prepare_study(grid_plan, settings)
    text = grid_plan.text.replace("epochs: 1", "epochs: 2")
    with pytest.raises(ConfigError, match=r"base: study 'grid' .* \(epochs 1 -> 2\)"):
        prepare_study(make_plan(text, "grid"), settings)


def test_a_parent_run_missing_from_the_store_is_a_clear_error(grid_plan, settings, workdir):
    prepare_study(grid_plan, settings)
    other = dataclasses.replace(settings, tracking_uri=f"sqlite:///{workdir}/other.db")
    with pytest.raises(AblateError, match="which .*other.db does not have"):
        prepare_study(grid_plan, other)
