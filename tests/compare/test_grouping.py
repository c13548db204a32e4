"""Which runs `ablate compare` pools: run-local keys ignored, differing configs refused."""

from __future__ import annotations

import pytest

from ablate.compare.grouping import (
    ALL_RUNS,
    RUN_LOCAL_KEYS,
    assign_groups,
    check_pooling,
    config_view,
    confounders,
    default_group_by,
    following_keys,
    lost_counts,
    parse_keys,
    varying_keys,
)
from ablate.compare.select import RunRecord
from ablate.config import config_fields
from ablate.exceptions import ConfigError


def _run(i: int, **params: str) -> RunRecord:
    base = {"variant": "softmax", "seed": str(i), "lr": "0.0005", "epochs": "20"}
    # Optuna's and MLflow's tags vary per run and are never config
    tags = {"optuna.trial_number": str(i), "mlflow.source.git.commit": f"c{i}", "role": "trial"}
    return RunRecord(
        run_id=f"r{i}", name=f"run{i}", experiment_id="1", status="FINISHED", pruned=False,
        tags=tags, params={**base, **params}, latest={},
    )  # fmt: skip


def test_run_local_and_derived_keys_do_not_split_groups():
    runs = [
        _run(0, device="cuda", data_dir="/a", run_name="x", n_params="10", **{"data.source": "p"}),
        _run(1, device="cpu", data_dir="/b", run_name="y", n_params="11", **{"data.source": "q"}),
    ]
    assert varying_keys([config_view(r) for r in runs]) == {}
    assert assign_groups(runs, None) == ()
    assert {r.group for r in runs} == {ALL_RUNS}
    # every run-local key is a real config field (no typo silently ignoring nothing)
    assert RUN_LOCAL_KEYS <= {f.name for f in config_fields()}
    assert "seed" not in config_view(runs[0])
    assert not any(k.startswith(("optuna.", "mlflow.")) for k in config_view(runs[0]))


def test_default_group_by_keeps_only_keys_that_split():
    runs = [
        _run(0, variant="softmax", alpha_schedule="none"),
        _run(1, variant="softmax_v", alpha_schedule="linear"),
        _run(2, variant="alpha_remix", alpha_schedule="linear"),
        _run(3, variant="softmax_v", alpha_schedule="cosine"),
    ]
    # alpha_schedule splits softmax_v: kept; ordered like the config fields
    assert default_group_by(runs) == ("variant", "alpha_schedule")
    assert default_group_by(runs[:3]) == ("variant",)
    assert following_keys(runs[:3], ("variant",)) == ("alpha_schedule",)
    # the variant's own keys follow a variant grouping without confounding it; lr would
    assert confounders(("alpha_schedule", "variant.beta"), ("variant",)) == ()
    assert confounders(("alpha_schedule", "lr"), ("variant",)) == ("lr",)
    assert confounders(("alpha_schedule",), ("lr",)) == ("alpha_schedule",)
    assigned = assign_groups(runs, None)
    assert assigned == ("variant", "alpha_schedule")
    assert [r.group for r in runs] == [
        "softmax/none", "softmax_v/linear", "alpha_remix/linear", "softmax_v/cosine",
    ]  # fmt: skip


def test_refusal_names_keys_values_and_ways_out():
    runs = [_run(0), _run(1, lr="0.001"), _run(2, lr="0.001", epochs="30")]
    with pytest.raises(ConfigError) as info:
        check_pooling(runs, ("variant",))
    message = str(info.value)
    assert message == (
        "runs in one group differ in epochs (20, 30); lr (0.0005, 0.001) (e.g. group "
        "'softmax'); group by them (--group-by variant,epochs,lr) or pool over them "
        "(--pool-over epochs,lr)"
    )
    check_pooling(runs, ("variant",), ("lr", "epochs"))  # explicitly pooled: accepted
    check_pooling(runs, ("variant", "lr", "epochs"))  # or grouped
    check_pooling(runs, ("variant", "params.lr"), ("epochs",))  # params.x names the same key


def test_key_differences_between_groups_are_fine():
    runs = [_run(0, variant="softmax", lr="0.001"), _run(1, variant="softmax_v", lr="0.002")]
    check_pooling(runs, ("variant",))  # lr differs only across groups: nothing pooled


def test_missing_key_counts_as_a_value():
    runs = [_run(0), _run(1)]
    runs[1].params["best_from"] = "any"  # a config key newer runs log and older ones lack
    assert varying_keys([config_view(r) for r in runs]) == {"best_from": ["(none)", "any"]}
    with pytest.raises(ConfigError, match=r"best_from \(\(none\), any\)"):
        check_pooling(runs, ("variant",))


def test_bad_keys():
    runs = [_run(0), _run(1)]
    with pytest.raises(ConfigError, match="--group-by: no selected run has a param or tag 'vari'"):
        assign_groups(runs, ("vari",))
    with pytest.raises(ConfigError, match="--pool-over: no selected run"):
        assign_groups(runs, ("variant",), ("learning_rate",))
    with pytest.raises(ConfigError, match="cannot both group by and pool over"):
        assign_groups(runs, ("variant", "lr"), ("lr",))
    assert parse_keys(" variant, apply_to ,variant", "--group-by") == ("variant", "apply_to")
    assert parse_keys(None, "--pool-over") == ()
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_keys(" , ", "--group-by")


def test_long_value_lists_are_shortened():
    runs = [_run(i, lr=f"0.00{i + 1}") for i in range(7)]
    with pytest.raises(ConfigError) as info:
        check_pooling(runs, ("variant",))
    assert "lr (0.001, 0.002, 0.003, 0.004, ... (7 values))" in str(info.value)


def test_lost_runs_join_their_groups():
    """Issue 25 item 8: a variant whose runs all failed still splits the groups, and a run
    that failed before logging its config does not block pooling."""
    kept = [_run(0), _run(1)]
    lost = [_run(2, variant="softmax_v"), _run(3, variant="softmax_v")]
    for run in lost:
        run.status = "FAILED"
    crashed = _run(4)
    crashed.params, crashed.status = {}, "FAILED"
    runs = [*kept, *lost, crashed]
    assert assign_groups(runs, None) == ("variant",)
    assert [r.group for r in runs] == ["softmax", "softmax", "softmax_v", "softmax_v", "(none)"]
    counts = lost_counts([*lost, crashed])
    assert counts == {"softmax_v": {"failed": 2, "pruned": 0, "running": 0},
                      "(none)": {"failed": 1, "pruned": 0, "running": 0}}  # fmt: skip
