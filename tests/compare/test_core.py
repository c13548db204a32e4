"""`ablate compare` end to end on a real SQLite MLflow store (see conftest.py).

Expected numbers are recomputed from the arrays the fixture logged, with numpy and scipy,
independently of ablate.compare's code paths.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ablate import compare
from ablate.compare.stats import holm
from ablate.exceptions import AblateError, ConfigError, DataError


def _row(result, group):
    table = result.table
    return table[table["group"] == group].iloc[0]


def _by_seed(runs, variant, key):
    return np.array(
        [r[key] for r in sorted(runs, key=lambda r: r["seed"]) if r["variant"] == variant]
    )


@pytest.fixture(scope="module")
def main(store):
    """The default comparison of experiment 'ablate' (no files)."""
    return compare.compare_runs(experiment="ablate", tracking_uri=store["uri"], out=None)


def test_default_end_point_is_the_final_models_test_number(store, main):
    runs = store["runs"]["ablate"]
    # only the variant varies (its alpha schedule follows it; device, data_dir are run-local)
    assert main.group_by == ("variant",)
    assert main.following == ("alpha_schedule", "alpha_start", "alpha_end")
    assert main.confounders == ()
    assert main.endpoint_source == "test"
    assert main.metric == "test_acc" and main.checkpoint == "final"
    assert list(main.table["group"]) == ["softmax", "softmax_v", "alpha_remix"]  # ranked
    for variant in ("softmax", "softmax_v", "alpha_remix"):
        final = _by_seed(runs, variant, "test_acc")
        best = _by_seed(runs, variant, "best_test_acc")
        row = _row(main, variant)
        assert row["n"] == 4
        assert row["final_mean"] == pytest.approx(final.mean(), abs=1e-12)
        low, high = stats.t.interval(0.95, 3, loc=final.mean(), scale=stats.sem(final))
        assert (row["final_ci_low"], row["final_ci_high"]) == pytest.approx((low, min(high, 1)))
        assert row["best_mean"] == pytest.approx(best.mean(), abs=1e-12)
        assert row["final_epochs"] == "6"
        assert row["final_alphas"] == ("" if variant == "softmax" else "1")
        epochs = [r["best_epoch"] for r in runs if r["variant"] == variant]
        assert row["best_epochs"] == (
            f"{min(epochs)}" if min(epochs) == max(epochs) else f"{min(epochs)}-{max(epochs)}"
        )
        auc = [r["val_acc"][1:].mean() for r in runs if r["variant"] == variant]
        assert row["auc_mean"] == pytest.approx(np.mean(auc))


def test_paired_tests_holm_and_curve_comparison(store, main):
    runs = store["runs"]["ablate"]
    base = _by_seed(runs, "softmax", "test_acc")
    raw, raw_auc = [], []
    for variant in ("softmax_v", "alpha_remix"):
        values = _by_seed(runs, variant, "test_acc")
        ref = stats.ttest_rel(values, base)
        row = _row(main, variant)
        assert row["test"] == "paired t" and row["n_pairs"] == 4
        assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx(
            tuple(ref.confidence_interval(0.95))
        )
        raw.append(ref.pvalue)
        curve = np.array([r["val_acc"][1:].mean() for r in runs if r["variant"] == variant])
        base_curve = np.array([r["val_acc"][1:].mean() for r in runs if r["variant"] == "softmax"])
        assert row["auc_diff"] == pytest.approx(curve.mean() - base_curve.mean())
        assert row["auc_p_value"] == pytest.approx(stats.ttest_rel(curve, base_curve).pvalue)
        raw_auc.append(stats.ttest_rel(curve, base_curve).pvalue)
    # one Holm family over the end-point and the curve comparisons
    adjusted = holm(raw + raw_auc)
    assert list(main.table["p_holm"].iloc[1:]) == pytest.approx(adjusted[:2])
    assert list(main.table["auc_p_holm"].iloc[1:]) == pytest.approx(adjusted[2:])
    # softmax_v is 0.05 better with a shared seed offset: the paired test sees it clearly
    assert _row(main, "softmax_v")["significant"]
    assert math.isnan(_row(main, "softmax")["p_value"])
    # differences from the baseline per epoch, paired by seed
    diffs = main.diffs[main.diffs["group"] == "softmax_v"].set_index("step")
    # epoch 0 (the same initial model for every variant of a seed) is not differenced
    assert list(diffs.index) == list(range(1, 7)) and set(diffs["test"]) == {"paired t"}
    assert set(diffs["band"]) == {"sup-t over 6 epochs"}
    assert (diffs["band_low"] <= diffs["ci_low"]).all()  # simultaneous is wider
    assert (diffs["band_high"] >= diffs["ci_high"]).all()
    a = np.array(
        [
            r["val_acc"][3]
            for r in sorted(runs, key=lambda r: r["seed"])
            if r["variant"] == "softmax_v"
        ]
    )
    b = np.array(
        [
            r["val_acc"][3]
            for r in sorted(runs, key=lambda r: r["seed"])
            if r["variant"] == "softmax"
        ]
    )
    ref = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (diffs.loc[3, "ci_low"], diffs.loc[3, "ci_high"]) == pytest.approx(tuple(ref))


def test_checkpoint_best_and_explicit_metrics(store):
    runs = store["runs"]["ablate"]
    best = compare.compare_runs(
        experiment="ablate", checkpoint="best", tracking_uri=store["uri"], out=None, bootstrap=0
    )
    base = _by_seed(runs, "softmax", "best_test_acc")
    other = _by_seed(runs, "softmax_v", "best_test_acc")
    assert _row(best, "softmax_v")["diff"] == pytest.approx(other.mean() - base.mean())
    assert _row(best, "softmax_v")["p_value"] == pytest.approx(stats.ttest_rel(other, base).pvalue)
    same = compare.compare_runs(
        experiment="ablate", metric="best_test_acc", tracking_uri=store["uri"], out=None,
        bootstrap=0,
    )  # fmt: skip
    assert same.checkpoint == "best" and same.table["diff"].equals(best.table["diff"])
    val = compare.compare_runs(
        experiment="ablate", metric="loss/val", tracking_uri=store["uri"], out=None, bootstrap=0
    )
    assert val.mode == "min" and val.endpoint_source == "val" and val.spec.bounds is None
    losses = [2.5 * (1 - r["val_acc"][-1]) for r in runs if r["variant"] == "softmax_v"]
    assert _row(val, "softmax_v")["final_mean"] == pytest.approx(np.mean(losses))
    assert list(val.table["group"]) == ["softmax", "softmax_v", "alpha_remix"]


def test_running_failed_and_pruned_runs(store):
    result = compare.compare_runs(
        experiment="mixed", filter="params.dataset = 'digits'", tracking_uri=store["uri"],
        out=None, bootstrap=0,
    )  # fmt: skip
    # the RUNNING run is left out by default and counted: the others keep their test numbers
    assert result.endpoint_source == "test" and result.at_epoch is None
    soft, soft_v = _row(result, "softmax"), _row(result, "softmax_v")
    assert (soft["n"], soft["running"], soft["failed"]) == (2, 1, 0)
    assert (soft_v["n"], soft_v["failed"], soft_v["pruned"]) == (3, 1, 1)
    assert len(result.per_run) == 5
    assert any("1 FAILED" in n and "pruned" in n and "RUNNING" in n for n in result.notes)
    assert "softmax-s2" not in set(result.per_run["run_name"])

    partial = compare.compare_runs(
        experiment="mixed", filter="params.dataset = 'digits'", include_pruned=True,
        include_running=True, tracking_uri=store["uri"], out=None, bootstrap=0,
    )  # fmt: skip
    # a partial look: every end point is val_acc at the last epoch every run reached (the
    # pruned run logged epochs 0-2), never an epoch-2 value averaged with epoch-6 ones
    assert partial.endpoint_source == "val" and partial.at_epoch == 2
    assert partial.metric_label == "acc/val at epoch 2"
    row = _row(partial, "softmax_v")
    # seed 8 has no softmax partner: the 3 shared seeds stay paired
    assert row["n"] == 4 and (row["test"], row["n_pairs"], row["n_units"]) == ("paired t", 3, 4)
    values = [r["val_acc"][2] for r in store["runs"]["mixed"] if r["variant"] == "softmax_v"]
    values.append(store["pruned"]["val_acc"][2])
    assert row["final_mean"] == pytest.approx(np.mean(values))
    assert set(partial.per_run["final_epoch"]) == {2.0}
    assert any("partial look" in n for n in partial.notes)
    soft = partial.curves.query("metric == 'acc/val' and group == 'softmax'")
    assert list(soft["n"]) == [3, 3, 3, 3, 3, 2, 2]
    assert any("'softmax' n=3->2 at epoch 5" in n for n in partial.notes)


def test_pooling_different_configs_is_refused(store):
    with pytest.raises(ConfigError) as info:
        compare.compare_runs(
            experiment="lrs", group_by="variant", tracking_uri=store["uri"], out=None
        )
    message = str(info.value)
    assert "\n" not in message
    for part in ("lr (0.0005, 0.001)", "epochs (6, 8)", "--pool-over epochs,lr", "'softmax'"):
        assert part in message
    # default grouping: by epochs (the first varying key); lr follows it and adds no split
    split = compare.compare_runs(experiment="lrs", baseline="6", tracking_uri=store["uri"],
                                 out=None)  # fmt: skip
    assert split.group_by == ("epochs",) and split.following == ("lr",)
    assert set(split.table["group"]) == {"6", "8"}
    assert "grouped by epochs (lr varies with them)" in compare.format_report(split)
    # epochs and lr differ together: a difference measures both (no star; test_no_false_stars)
    assert split.confounders == ("lr",)
    assert any(n.startswith("no star: the groups also differ in lr") for n in split.notes)
    pooled = compare.compare_runs(
        experiment="lrs", group_by="variant", pool_over="lr,epochs", tracking_uri=store["uri"],
        out=None,
    )  # fmt: skip
    # the same seed at two learning rates is one unit (3 seeds, 6 runs)
    assert list(pooled.table["group"]) == ["softmax"] and _row(pooled, "softmax")["n"] == 3
    assert _row(pooled, "softmax")["n_runs"] == 6
    assert pooled.pool_over == ("lr", "epochs")


def test_study_writes_files_and_logs_them_to_its_parent(store, tmp_path):
    out = tmp_path / "study"
    result = compare.compare_runs(study="sweep", tracking_uri=store["uri"], out=out)
    assert result.parent_run_id == store["parent_id"]
    assert _row(result, "softmax_v")["n"] == 3  # across two experiments, pruned one left out
    assert _row(result, "softmax_v")["test"] == "paired t"
    names = {p.name for p in result.files}
    assert {
        "summary_test_acc.csv", "summary_test_acc.md", "runs_test_acc.csv", "curves.csv",
        "diff_curves.csv", "curve_acc_val.png", "curve_loss_val.png", "curve_loss_train.png",
        "curve_alpha_value.png", "diff_acc_val.png", "final_best_test_acc.png",
    } <= names  # fmt: skip
    logged = {f.path for f in store["client"].list_artifacts(store["parent_id"], "compare")}
    assert {f"compare/{n}" for n in names} <= logged  # other tests log to it too
    assert len(result.logged_artifacts) == len(names)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"experiment": "nope"}, ConfigError, ["unknown experiment 'nope'", "ablate", "studies"]),
        ({"study": "nope"}, ConfigError, ["unknown study 'nope'", "sweep"]),
        ({"metric": "top5_acc/val"}, ConfigError, ["'top5_acc/val'", "acc/val", "loss/train"]),
        ({"metric": "val_acc"}, ConfigError, ["--metric val_acc", "use --metric acc/val"]),
        ({"metric": "train_loss"}, ConfigError, ["now named loss/train"]),
        ({"filter": "params.dataset = 'imagenet'"}, DataError, ["no runs", "imagenet"]),
        ({"filter": "params.dataset == 'digits'"}, ConfigError, ["--filter", "comparator"]),
        ({"metric": "optim/lr"}, ConfigError, ["--mode max or --mode min"]),
        ({"group_by": "varaint"}, ConfigError, ["'varaint'", "variant", "apply_to"]),
        ({"baseline": "nope"}, ConfigError, ["--baseline 'nope'", "softmax, softmax_v"]),
        ({"pool_over": "lrr"}, ConfigError, ["--pool-over", "'lrr'"]),
        ({"group_by": "variant", "pool_over": "variant"}, ConfigError, ["both group by"]),
        ({"pairing": "maybe"}, ConfigError, ["auto, paired, welch"]),
        ({"target": "soon"}, ConfigError, ["--target", "auto or none"]),
        ({"metric": "best_test_acc", "checkpoint": "final"}, ConfigError, ["best-validation"]),
    ],
)
def test_errors_are_one_line(store, kwargs, error, words):
    kwargs = {"experiment": "ablate", **kwargs} if "study" not in kwargs else kwargs
    with pytest.raises(error) as info:
        compare.compare_runs(tracking_uri=store["uri"], out=None, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, AblateError) and "\n" not in message
    for word in words:
        assert word in message


def test_missing_store_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(DataError, match="no MLflow store"):
        compare.compare_runs(out=None)
    assert not (tmp_path / "mlflow.db").exists()
    with pytest.raises(DataError, match="cannot open MLflow store foo://bar"):
        compare.compare_runs(tracking_uri="foo://bar", out=None)
