"""Study plans from small YAML texts and a study prepared in a real SQLite storage + store.
The PostgreSQL server a test can stop and start is ``postgres`` (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.study.common import RunSettings
from ablate.study.spec import StudyPlan, load_study

GRID = """\
name: {name}
base: {{dataset: digits, epochs: 1, img_size: 8, checkpoint_dir: checkpoints}}
grid:
  variant: [softmax, softmax_v]
  seed: [0, 1]
max_retries: 1
"""

SEARCH = """\
name: {name}
base: {{dataset: digits, epochs: 3}}
search_space:
  lr: {{type: log_float, low: 1.0e-4, high: 1.0e-2}}
  warmup_epochs: {{type: float, low: 0, high: 3, step: 0.5}}
  batch_size: {{type: int, low: 32, high: 128, step: 32}}
  variant: {{type: categorical, choices: [softmax, softmax_v]}}
n_trials: 4
seed: 7
pruner: {pruner}
"""


@pytest.fixture
def make_plan(tmp_path: Path):
    """``make_plan(text)``: the StudyPlan of a study file with that text."""

    def make(text: str, name: str = "s") -> StudyPlan:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        return load_study(path)

    return make


@pytest.fixture
def search_plan(make_plan):
    """``search_plan(pruner)``: a 4-trial TPE search over lr, warmup, batch size, variant."""
    return lambda pruner="none": make_plan(SEARCH.format(name="search", pruner=pruner), "search")


@pytest.fixture
def grid_plan(make_plan) -> StudyPlan:
    return make_plan(GRID.format(name="grid"), "grid")


@pytest.fixture
def settings(workdir: Path) -> RunSettings:
    return RunSettings(
        storage_url=f"sqlite:///{workdir}/ablate-optuna.db",
        tracking_uri=f"sqlite:///{workdir}/mlflow.db",
        poll_interval=0.05,
    )
