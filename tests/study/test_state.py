"""Reading a study's trials: per-cell states, retries, what counts as used and as complete."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")
from optuna.distributions import CategoricalDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from ablate.study import state as st  # noqa: E402


def _trial(number, state, cell=None, kind=None, retry_of=None, value=None, params=None):
    system = {}
    if kind is not None:
        system[st.FAIL_KIND_ATTR] = kind
    if retry_of is not None:
        system["retry_history"] = [retry_of]
    params = params or {}
    trial = create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params=params,
        distributions={k: CategoricalDistribution([v]) for k, v in params.items()},
        user_attrs={st.CELL_ATTR: cell} if cell else {},
        system_attrs=system,
    )
    trial.number = number
    return trial


def test_cells_collect_their_trials_and_ignore_edited_out_ones(grid_plan):
    a, b = grid_plan.cells[0].key, grid_plan.cells[1].key
    trials = [
        _trial(0, TrialState.COMPLETE, a, value=0.9),
        _trial(1, TrialState.FAIL, b, kind="error"),
        _trial(2, TrialState.RUNNING, b),
        _trial(3, TrialState.COMPLETE, "variant=gone seed=0", value=0.1),
    ]
    cells = st.cell_states(grid_plan, trials)
    assert set(cells) == {c.key for c in grid_plan.cells}
    assert cells[a].done and [t.number for t in cells[a].complete] == [0]
    assert not cells[b].done and cells[b].attempts_failed == 1 and cells[b].running
    assert sum(len(c.trials) for c in cells.values()) == 3


def test_setup_errors_and_interruptions_do_not_use_up_retries(grid_plan):
    key = grid_plan.cells[0].key
    assert st.counts_as_attempt(_trial(0, TrialState.FAIL, key))  # dead worker: no kind
    assert st.counts_as_attempt(_trial(0, TrialState.FAIL, key, kind="error"))
    assert not st.counts_as_attempt(_trial(0, TrialState.FAIL, key, kind="setup"))
    assert not st.counts_as_attempt(_trial(0, TrialState.FAIL, key, kind="interrupted"))
    assert not st.counts_as_attempt(_trial(0, TrialState.COMPLETE, key, value=1.0))


def test_a_cell_is_given_up_after_one_plus_max_retries_failures(grid_plan):
    key = grid_plan.cells[0].key  # max_retries: 1
    once = [_trial(0, TrialState.FAIL, key, kind="error")]
    twice = once + [_trial(1, TrialState.FAIL, key, kind="error")]
    assert st.exhausted_cells(grid_plan, once) == []
    assert st.exhausted_cells(grid_plan, twice) == [key]
    waiting = twice + [_trial(2, TrialState.WAITING, key)]
    assert st.exhausted_cells(grid_plan, waiting) == []


def test_a_grid_is_complete_when_every_cell_is_done_or_given_up(grid_plan):
    keys = [c.key for c in grid_plan.cells]
    trials = [_trial(i, TrialState.COMPLETE, k, value=0.5) for i, k in enumerate(keys[:-1])]
    assert not st.is_complete(grid_plan, trials)
    assert st.finished_count(grid_plan, trials) == len(keys) - 1
    last = keys[-1]
    given_up = trials + [_trial(10 + i, TrialState.FAIL, last) for i in range(2)]
    assert st.is_complete(grid_plan, given_up)
    assert st.finished_count(grid_plan, given_up) == len(keys)
    pruned = trials + [_trial(20, TrialState.PRUNED, last)]
    assert st.is_complete(grid_plan, pruned)
    running = pruned + [_trial(21, TrialState.RUNNING, keys[0])]
    assert not st.is_complete(grid_plan, running)


def test_sampled_trials_used_count_retries_once(search_plan):
    plan = search_plan()  # n_trials: 4
    trials = [
        _trial(0, TrialState.COMPLETE, value=0.1),
        _trial(1, TrialState.FAIL),  # died, retried by 3: the retry counts instead
        _trial(2, TrialState.FAIL, kind="setup"),  # never counts
        _trial(3, TrialState.COMPLETE, retry_of=1, value=0.2),
        _trial(4, TrialState.PRUNED),
    ]
    assert st.retried_numbers(trials) == {1}
    assert st.sampled_used(trials) == 3
    assert st.finished_count(plan, trials) == 3
    assert not st.is_complete(plan, trials)
    assert st.is_complete(plan, trials + [_trial(5, TrialState.FAIL, kind="error")])


def test_trial_params_merge_fixed_and_suggested_values(grid_plan):
    trial = _trial(0, TrialState.COMPLETE, value=1.0, params={"lr": 0.01})
    trial.system_attrs["fixed_params"] = {"variant": "softmax", "seed": 1}
    assert st.trial_params(grid_plan, trial) == {"variant": "softmax", "seed": 1, "lr": 0.01}
