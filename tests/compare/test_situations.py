"""The 13 situations of issue 16, each on a real SQLite MLflow store written through the client.

Each test builds the messy study a new user would meet (pruned or short curves, failed and
diverged runs, a study still running, a re-run cell, ties on a small test set, ...) and
asserts that the table refuses, separates or labels it instead of starring an artefact.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats as sps

from ablate import compare
from ablate.compare.curves import median_censored
from ablate.compare.render import format_report, format_table
from ablate.compare.stats import holm
from ablate.exceptions import ConfigError
from ablate.tracking.conventions import VAL_ACC

from .conftest import DIGITS_SPLIT, curve, empty_store, log_run

DATA = DIGITS_SPLIT


@pytest.fixture
def store(tmp_path):
    return empty_store(tmp_path)


def _run(client, eid, variant, seed, val_acc, **kwargs):
    params = {**DATA, **kwargs.pop("params", {})}
    tags = {"split": "ours", **kwargs.pop("tags", {})}
    return log_run(client, eid, variant=variant, seed=seed, val_acc=np.asarray(val_acc),
                   params=params, tags=tags, **kwargs)  # fmt: skip


def _compare(uri, **kwargs):
    return compare.compare_runs(experiment="ablate", tracking_uri=uri, out=None,
                                bootstrap=0, **kwargs)  # fmt: skip


def _row(result, group):
    return result.table.set_index("group").loc[group]


def test_01_curves_of_different_lengths_are_compared_on_common_epochs(store):
    """Before: four softmax_v runs stopped at epoch 3 of 8 with the same end points got
    'Δ AUC -0.114 [-0.192, -0.035] *'. Now the AUC is over epochs 1-3 for every run."""
    uri, client, eid = store
    rng = np.random.default_rng(1)
    for seed in range(4):
        full = _run(client, eid, "softmax", seed, curve("softmax", seed, epochs=8))
        # the same curve, stopped at epoch 3, with the same end point (early stopping)
        short = _run(client, eid, "softmax_v", seed, full["val_acc"][:4] + rng.normal(0, 2e-3, 4))
        time.sleep(0.002)
        client.log_metric(short["run_id"], "test_acc", full["test_final"], step=3)
    result = _compare(uri)
    assert result.auc_epochs == 3
    # the artefact: each run's own mean over 1..E puts the short runs far below
    own = result.per_run.groupby("group")["run_id"].apply(list)
    histories = {r.run_id: r.histories[VAL_ACC] for r in result.runs}
    naive = {g: np.mean([histories[i][1:].mean() for i in ids]) for g, ids in own.items()}
    assert naive["softmax_v"] - naive["softmax"] < -0.05
    row = _row(result, "softmax_v")
    assert abs(row["auc_diff"]) < 0.005 and not row["auc_significant"]
    text = format_table(result)
    assert (
        "AUC = mean acc/val over epochs 1-3, the epochs every compared run has (set by run" in text
    )
    assert "stopped at epoch 3; others reach up to 8, later epochs not compared)" in text
    assert not result.table["significant"].any()  # identical end points: no star anywhere


def test_02_failed_and_diverged_runs_are_counted_per_group(store):
    """Before: 'left out: 2 FAILED' without their group, a NaN end point dropped as 'no
    test_acc yet', epochs-to-target averaged over the runs that reached it only."""
    uri, client, eid = store
    for seed in range(5):
        _run(client, eid, "softmax", seed, curve("softmax", seed))
    for seed in range(3):
        _run(client, eid, "softmax_v", seed, curve("softmax_v", seed))
    _run(client, eid, "softmax_v", 3, curve("softmax_v", 3, epochs=2), status="FAILED")
    diverged = _run(client, eid, "softmax_v", 4, curve("softmax_v", 4))
    client.log_metric(diverged["run_id"], "test_acc", math.nan, step=6)  # NaN end point
    result = _compare(uri, target=0.84)
    row = _row(result, "softmax_v")
    assert (row["n"], row["failed"], row["pruned"]) == (3, 2, 0)
    assert "3 (2/0)" in format_table(result) and "5 (0/0)" in format_table(result)
    assert any("runs lost to failure or divergence" in n and "'softmax_v': 2 of 5" in n
               for n in result.notes)  # fmt: skip
    # epochs to target: a run that never reached it counts as never (censored median)
    base = result.units.query("group == 'softmax'")["epochs_to_target"]
    assert _row(result, "softmax")["epochs_to_target"] == median_censored(base)
    assert _row(result, "softmax")["n_reached"] == int(np.isfinite(base).sum())


def test_03_running_runs_are_left_out_by_default_and_labelled_when_included(store):
    """Before: one RUNNING run switched every group to val_acc and its epoch-2 value was
    averaged with epoch-8 values ('final ep 2-8')."""
    uri, client, eid = store
    for seed in range(3):
        _run(client, eid, "softmax", seed, curve("softmax", seed))
        _run(client, eid, "softmax_v", seed, curve("softmax_v", seed))
    _run(client, eid, "softmax", 3, curve("softmax", 3, epochs=2), status="RUNNING")
    result = _compare(uri)
    assert result.endpoint_source == "test" and result.metric == "test_acc"
    assert _row(result, "softmax")["running"] == 1 and "3 (0/0) +1 running" in format_table(result)
    assert set(result.per_run["final_epoch"]) == {6.0}
    partial = _compare(uri, include_running=True)
    assert partial.at_epoch == 2 and set(partial.per_run["final_epoch"]) == {2.0}
    text = format_report(partial)
    assert "end point: acc/val at epoch 2 (partial look" in text and "incl. 1 running" in text
    with pytest.raises(ConfigError, match="--checkpoint best needs finished runs"):
        _compare(uri, include_running=True, checkpoint="best")


def test_04_a_repeated_seed_is_one_unit(store):
    """Before: seed 1 run twice made n=5 for 3 seeds and switched to Welch."""
    uri, client, eid = store
    for seed in range(3):
        _run(client, eid, "softmax", seed, curve("softmax", seed))
        _run(client, eid, "softmax_v", seed, curve("softmax_v", seed))
    again = _run(client, eid, "softmax_v", 1, curve("softmax_v", 1, salt=9))
    result = _compare(uri)
    row = _row(result, "softmax_v")
    assert (row["n"], row["n_runs"], row["test"]) == (3, 4, "paired t")
    first = result.per_run.query("group == 'softmax_v' and seed == '1'")["final"]
    unit = result.units.query("group == 'softmax_v' and seed == '1'")["final"].item()
    assert unit == pytest.approx(first.mean())
    assert "3 (0/0), 4 runs (mean)" in format_table(result)
    latest = _compare(uri, repeats="latest")
    unit = latest.units.query("group == 'softmax_v' and seed == '1'")["final"].item()
    assert unit == pytest.approx(again["test_final"]) and "4 runs (latest)" in format_table(latest)


def test_05_no_spread_is_never_a_zero_width_interval(store):
    """Before: '0.9000 ± 0.0000 [0.9000, 0.9000]' and a constant per-seed difference
    '[+0.0028, +0.0028]' with p = nan."""
    uri, client, eid = store
    for seed in range(3):
        base = curve("softmax", seed)
        _run(client, eid, "softmax", seed, base)
        shifted = base.copy()
        shifted[-1] += 0.0028  # every seed moves by the same amount
        _run(client, eid, "softmax_v", seed, shifted)
        flat = base.copy()
        flat[-1] = 0.91  # every seed scores 0.90 on the test set
        _run(client, eid, "alpha_remix", seed, flat)
    result = _compare(uri)
    flat = _row(result, "alpha_remix")
    # the pooled answers of the 3 seeds: 972 of 1080 correct
    low, high = sps.binomtest(972, 1080).proportion_ci(0.95, method="exact")
    assert flat["final_ci_method"] == "binomial (N=360)"
    assert (flat["final_ci_low"], flat["final_ci_high"]) == pytest.approx((low, high))
    shifted = _row(result, "softmax_v")
    assert shifted["test"] == "sign (no spread)" and shifted["p_value"] == pytest.approx(0.25)
    assert math.isnan(shifted["diff_ci_low"]) and not shifted["significant"]
    text = format_table(result)
    assert "binomial (N=360)" in text and "no spread: undefined" in text
    assert "[+0.0028, +0.0028]" not in text and "[0.9000, 0.9000]" not in text


def test_06_per_epoch_band_is_simultaneous_and_pointwise_is_named(store, tmp_path):
    """Before: a pointwise band titled '95% CI' (36-60% of null studies show an epoch that
    excludes 0)."""
    uri, client, eid = store
    rng = np.random.default_rng(6)
    for seed in range(5):
        base = curve("softmax", seed, epochs=20)
        _run(client, eid, "softmax", seed, base)
        _run(client, eid, "softmax_v", seed, np.clip(base + rng.normal(0, 0.01, 21), 0, 1))
    result = compare.compare_runs(experiment="ablate", tracking_uri=uri, out=tmp_path / "o",
                                  bootstrap=0)  # fmt: skip
    diffs = result.diffs
    assert set(diffs["band"]) == {"sup-t over 20 epochs"}
    assert (diffs["band_high"] - diffs["band_low"] > diffs["ci_high"] - diffs["ci_low"]).all()
    assert any("ci_* is pointwise" in n and "simultaneous" in n for n in result.notes)
    assert (tmp_path / "o" / "diff_acc_val.png").is_file()


def test_07_one_significance_family_across_both_tables(store):
    """Before: two Holm families at 0.05 each (end point and AUC)."""
    uri, client, eid = store
    for seed in range(4):
        for variant in ("softmax", "softmax_v", "alpha_remix"):
            _run(client, eid, variant, seed, curve(variant, seed))
    result = _compare(uri)
    others = result.table.iloc[1:]
    raw = [*others["p_value"], *others["auc_p_value"]]
    adjusted = holm(raw)
    assert [*others["p_holm"], *others["auc_p_holm"]] == pytest.approx(adjusted)
    assert any("one family of 4 comparison(s) across the end-point and learning-curve" in n
               for n in result.notes)  # fmt: skip


def test_08_bootstrap_only_where_it_covers(store):
    """Before: BCa at 10 runs covered 92.3-92.7%, the P(better) bootstrap 88-92% at n=5."""
    uri, client, eid = store
    for seed in range(5):
        _run(client, eid, "softmax", seed, curve("softmax", seed))
        _run(client, eid, "softmax_v", seed, curve("softmax_v", seed, salt=3))
    result = compare.compare_runs(experiment="ablate", tracking_uri=uri, out=None,
                                  bootstrap=2000)  # fmt: skip
    row = _row(result, "softmax_v")
    assert math.isnan(row["boot_ci_low"]) and "BCa" not in format_table(result)
    wins = int(round(row["p_improve"] * 5))
    ci = sps.binomtest(wins, 5).proportion_ci(0.95, method="exact")
    assert (row["p_improve_low"], row["p_improve_high"]) == pytest.approx((ci.low, ci.high))


def test_09_epochs_to_target_never_counts_epoch_zero(store):
    """Before: a pretrained start that already met the target reported '0.0'."""
    uri, client, eid = store
    for seed in range(3):
        values = np.full(5, 0.95) + 0.001 * np.arange(5)
        _run(client, eid, "softmax", seed, values, params={"init_from": "pretrained"})
        _run(client, eid, "softmax_v", seed, values + 0.001)
    result = _compare(uri, target=0.9)
    assert set(result.per_run["epochs_to_target"]) == {1.0}
    assert "1 (3/3)" in format_table(result)


def test_10_curve_table_names_the_alpha_its_epochs_cover(store):
    """Before: AUC and epochs-to-target of annealed runs never said which alpha."""
    uri, client, eid = store
    for seed in range(3):
        _run(client, eid, "softmax", seed, curve("softmax", seed, epochs=4))
        _run(client, eid, "softmax_v", seed, curve("softmax_v", seed, epochs=4))
    result = _compare(uri)
    assert _row(result, "softmax_v")["auc_alpha_low"] == pytest.approx(0.25)
    text = format_table(result)
    assert "α over these epochs" in text and "0.25-1" in text


def test_11_p_better_is_paired_when_seeds_pair(store):
    """Before: every seed improved (paired p < 0.0001 *) yet P(better) = 0.60 [0.20, 0.92]."""
    uri, client, eid = store
    for seed in range(5):
        base = curve("softmax", seed)
        _run(client, eid, "softmax", seed, base)
        better = base.copy()
        better[-1] += 0.004 + 0.0005 * seed
        _run(client, eid, "softmax_v", seed, better)
    row = _row(_compare(uri), "softmax_v")
    assert row["p_improve"] == 1.0 and row["test"] == "paired t"
    assert row["p_improve_low"] == pytest.approx(0.025 ** (1 / 5))  # exact: 5 of 5
    assert "1.00 [0.48, 1.00] paired" in format_table(_compare(uri))


def test_12_notes_agree_with_the_numbers(store):
    """Before: 'level 0.05/1' where MDE was at 0.05/2, 'corrects over the 0 comparison(s)',
    '-0.0000' for a floating-point zero, an n=1 group listed as 'Welch t'."""
    uri, client, eid = store
    for seed in range(3):
        base = curve("softmax", seed)
        _run(client, eid, "softmax", seed, base)
        same = base.copy()
        same[-1] = base[-1] + (0.001, -0.001, 0.0)[seed]  # Δ is a floating-point zero
        _run(client, eid, "softmax_v", seed, same)
    _run(client, eid, "alpha_remix", 0, curve("alpha_remix", 0))
    result = _compare(uri)
    notes = " ".join(result.notes)
    # 2 tests have a p-value (softmax_v: end point and AUC): the family and the MDE agree
    assert result.family == 2 and "one family of 2 comparison(s)" in notes
    assert "level 0.05/2" in notes
    lone = _row(result, "alpha_remix")
    assert lone["test"] == "none (n=1)" and "a group has n=1: no test" in notes
    row = _row(result, "softmax_v")
    assert row["diff"] == 0.0 and "-0.0000" not in format_table(result)
    single = _compare(uri, filter="params.variant = 'softmax'")
    assert not any("comparison" in n for n in single.notes)


def test_13_header_names_dataset_split_test_size_and_checkpoint(store):
    """Before: dataset, split and test-set size were never printed unless they varied."""
    uri, client, eid = store
    for seed in range(3):
        _run(client, eid, "softmax", seed, curve("softmax", seed))
        _run(client, eid, "softmax_v", seed, curve("softmax_v", seed))
    text = format_report(_compare(uri)).splitlines()[1]
    assert text.startswith("measured on: dataset digits, split ours")
    assert "test 360" in text and "end point on the test set, final weights" in text
    best = format_report(_compare(uri, checkpoint="best")).splitlines()[1]
    assert best.endswith("best-val checkpoint")


def test_groups_of_one_variant_are_named_by_its_parameters(store):
    """Before: a learned-alpha softmax_v beside the fixed one was labelled ``softmax_v/0.01``
    (the alpha_lr only it has), which says nothing about what it is."""
    uri, client, eid = store
    learned = {"variant.alpha": "learned", "variant.alpha_shape": "head", "alpha_lr": "0.01"}
    for seed in range(3):
        _run(client, eid, "softmax", seed, curve("softmax", seed))
        _run(client, eid, "softmax_v", seed, curve("softmax_v", seed))
        _run(client, eid, "softmax_v", seed, curve("softmax_v", seed, salt=1), params=learned)
    result = _compare(uri)
    assert sorted(result.table["group"]) == [
        "softmax", "softmax_v", "softmax_v:alpha=learned,alpha_shape=head"]  # fmt: skip
    # a parameter the dose-response runs along stays its own key
    only_v = "params.variant = 'softmax_v'"
    by_alpha = _compare(uri, filter=only_v, group_by="variant.alpha,variant")
    assert sorted(by_alpha.table["group"]) == [
        "(none)/softmax_v", "learned/softmax_v:alpha_shape=head"]  # fmt: skip
