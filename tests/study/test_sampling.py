"""The Optuna side of a trial: sampler and pruner from the study file, suggested parameters,
and the per-epoch report that feeds the pruner (real in-memory Optuna studies)."""

from __future__ import annotations

import math

import pytest

optuna = pytest.importorskip("optuna")

from ablate.exceptions import Pruned  # noqa: E402
from ablate.study.sampling import FollowMetric, make_pruner, make_sampler, suggest  # noqa: E402
from ablate.tracking.conventions import TRAIN_LOSS, VAL_ACC  # noqa: E402


def test_sampler_is_seeded_per_worker(search_plan):
    plan = search_plan()
    first = make_sampler(plan, 0)
    assert isinstance(first, optuna.samplers.TPESampler)

    def draws(sampler):
        study = optuna.create_study(sampler=sampler)
        return [study.ask().suggest_float("x", 0, 1) for _ in range(3)]

    assert draws(make_sampler(plan, 0)) == draws(first)  # same worker, same seed
    assert draws(make_sampler(plan, 1)) != draws(make_sampler(plan, 0))


@pytest.mark.parametrize(
    "pruner, cls",
    [("median", "MedianPruner"), ("hyperband", "HyperbandPruner"), ("none", "NopPruner")],
)
def test_pruner_follows_the_study_file(search_plan, pruner, cls):
    plan = search_plan(pruner)
    assert type(make_pruner(plan)).__name__ == cls


def test_hyperband_runs_to_the_base_epochs(search_plan):
    plan = search_plan("hyperband")
    assert make_pruner(plan)._max_resource == 3


def test_suggest_draws_every_search_key_within_its_range(search_plan):
    plan = search_plan()
    study = optuna.create_study(sampler=make_sampler(plan))
    for _ in range(5):
        params = suggest(study.ask(), plan)
        assert set(params) == {"lr", "warmup_epochs", "batch_size", "variant"}
        assert 1e-4 <= params["lr"] <= 1e-2
        assert params["warmup_epochs"] in [i * 0.5 for i in range(7)]
        assert params["batch_size"] in (32, 64, 96, 128)
        assert params["variant"] in ("softmax", "softmax_v")


def test_suggest_reads_a_grid_cells_fixed_params(grid_plan):
    study = optuna.create_study()
    cell = grid_plan.cells[3]
    study.enqueue_trial(dict(cell.params))
    assert suggest(study.ask(), grid_plan) == dict(cell.params)


def test_follow_metric_reports_each_epoch_and_keeps_the_best_or_final(grid_plan):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    follow = FollowMetric(trial, grid_plan)
    follow(0, {VAL_ACC: 0.99})  # before training: reported, never the trial's value
    follow(1, {VAL_ACC: 0.5})
    follow(2, {VAL_ACC: math.nan})  # not finite: skipped
    follow(3, {VAL_ACC: 0.7, "other": 1.0})
    follow(4, {VAL_ACC: 0.6})
    follow(5, {TRAIN_LOSS: 0.1})  # the metric is missing: nothing to report
    assert study.trials[0].intermediate_values == {0: 0.99, 1: 0.5, 3: 0.7, 4: 0.6}
    assert follow.value() == 0.7
    follow.mode = "final"
    assert follow.value() == 0.6
    assert FollowMetric(study.ask(), grid_plan).value() is None


def test_follow_metric_raises_pruned_when_the_pruner_says_so(grid_plan):
    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )
    good = study.ask()
    for epoch in (1, 2):
        good.report(0.9, epoch)
    study.tell(good, 0.9)
    follow = FollowMetric(study.ask(), grid_plan)
    follow(0, {VAL_ACC: 0.05})  # epoch 0 never prunes
    with pytest.raises(Pruned, match="pruned at epoch 1 \\(acc/val 0.1\\)"):
        follow(1, {VAL_ACC: 0.1})
