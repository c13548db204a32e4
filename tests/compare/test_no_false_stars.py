"""Issue 24 (no star from rounding, from a run the tables leave out, or from seeds that
disagree) and issue 25 item 8 (a variant whose runs all diverge), one test per item, each on
a real SQLite MLflow store written through the client. Every docstring quotes what the
table said before.
"""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest

from ablate import compare
from ablate.compare.render import format_report
from ablate.exceptions import ConfigError

from .conftest import DIGITS_SPLIT, curve, empty_store, log_run

DATA = DIGITS_SPLIT


@pytest.fixture
def store(tmp_path):
    return empty_store(tmp_path)


def _run(client, eid, variant, seed, val_acc, *, test_acc=None, **kwargs):
    """A run; ``test_acc`` overrides the logged test accuracy (logged later: it wins)."""
    params = {**DATA, **kwargs.pop("params", {})}
    logged = log_run(client, eid, variant=variant, seed=seed, val_acc=np.asarray(val_acc),
                     params=params, **kwargs)  # fmt: skip
    if test_acc is not None:
        later = int(time.time() * 1000) + 60_000
        client.log_metric(logged["run_id"], "test_acc", test_acc, timestamp=later,
                          step=len(val_acc) - 1)  # fmt: skip
    return logged


def _compare(uri, **kwargs):
    kwargs = {"experiment": "ablate", "out": None, "bootstrap": 0, **kwargs}
    return compare.compare_runs(tracking_uri=uri, **kwargs)


def _row(result, group):
    return result.table.set_index("group").loc[group]


def test_1_identical_accuracies_get_no_star(store):
    """Before: every run at 359/360 (10 baseline seeds, 9 variant seeds and a failed run)
    gave 'softmax_v +0.0000 [+0.0000, +0.0000] Welch t 0.0150 0.0288 *'; three runs all
    at 349/360 gave '0.9694 ± 0.0000 [0.9694, 0.9694]' and a Welch star."""
    uri, client, eid = store
    k = 359 / 360
    as_float32 = [k, float(np.float32(k)), float(np.float32(359) / np.float32(360))]
    for seed in range(10):
        _run(client, eid, "softmax", seed, curve("softmax", seed), test_acc=as_float32[seed % 3])
    for seed in range(9):
        _run(client, eid, "softmax_v", seed, curve("softmax_v", seed),
             test_acc=as_float32[(seed + 1) % 3])  # fmt: skip
    _run(client, eid, "softmax_v", 9, curve("softmax_v", 9, epochs=2), status="FAILED")
    for seed in (20, 21, 22):  # other seeds: unpaired
        _run(client, eid, "alpha_remix", seed, curve("alpha_remix", seed),
             test_acc=as_float32[seed % 3])  # fmt: skip
        _run(client, eid, "laser", seed, curve("laser", seed),
             test_acc=(349 / 360, float(np.float32(349 / 360)), 349 / 360)[seed - 20])  # fmt: skip
    result = _compare(uri)
    paired, unpaired = _row(result, "softmax_v"), _row(result, "alpha_remix")
    assert (paired["test"], paired["n_pairs"], paired["n_units"]) == ("sign (no spread)", 9, 10)
    assert paired["diff"] == 0.0 and paired["p_value"] == 1.0 and not paired["significant"]
    assert (unpaired["test"], unpaired["p_value"]) == ("permutation", 1.0)
    flat = _row(result, "laser")  # a real difference without spread: exact, never Welch
    assert flat["test"] == "permutation" and flat["p_value"] == pytest.approx(1 / 286)
    assert flat["final_ci_method"] == "binomial (N=360)"
    text = format_report(result).split("learning curve")[0]
    assert "[0.9694, 0.9694]" not in text and "-0.0000" not in text
    starred = {line.split()[0] for line in text.splitlines() if line.endswith("*")}
    assert starred <= {"laser"} and "softmax_v" not in starred
    assert "0.0000  no spread: undefined  sign (no spread) (9 of 10 pairs)  1.0000" in text
    assert "[0.9574, 0.9789] binomial (N=360)" in text  # 1047 of the 3 x 360 answers


def test_2_dose_trend_is_tested_over_seeds(store):
    """Before: per-seed slopes 0.002 / 0.010 / 0.018: alpha 1 vs 0 '+0.0097 [-0.0103,
    +0.0297] p 0.49', yet the trend '+0.0098 [+0.0044, +0.0152] 0.0121 *' (the runs
    treated as independent once seed intercepts were removed)."""
    uri, client, eid = store
    rng = np.random.default_rng(2)
    for seed, slope in enumerate((0.002, 0.010, 0.018)):
        for alpha in (0.0, 0.25, 0.5, 1.0):
            acc = 0.9 + 0.01 * seed + slope * alpha + rng.normal(0, 0.0005)
            _run(client, eid, "alpha_remix", seed, curve("softmax", seed), test_acc=acc,
                 alpha=False, params={"variant.alpha": alpha})  # fmt: skip
    result = _compare(uri, x="alpha")
    (fit,) = result.dose.trends
    assert fit["test"] == "mean of per-seed slopes (3 seeds)"
    assert fit["slope"] == pytest.approx(0.010, abs=0.002)
    assert fit["ci_low"] < 0 < fit["ci_high"] and not fit["significant"]
    assert " *" not in format_report(result)


def test_3_a_diverged_run_sets_no_window(store):
    """Before: one run diverging at epoch 2 (NaN, left out of the tables) made 'AUC = mean
    val_acc over epochs 1-1' and '+0.0243 ... Welch t 0.0002 *' while every compared run
    reached epoch 20; its pre-divergence curve entered the per-epoch differences."""
    uri, client, eid = store
    for seed in range(5):
        _run(client, eid, "softmax", seed, curve("softmax", seed, epochs=20))
        _run(client, eid, "softmax_v", seed, curve("softmax", seed, epochs=20, salt=1))
    diverged = curve("softmax_v", 5, epochs=20)
    diverged[2:] = math.nan
    gone = _run(client, eid, "softmax_v", 5, diverged)
    result = _compare(uri)
    assert result.auc_epochs == 20 and result.auc_set_by is None
    assert gone["run_id"] not in {r.run_id for r in result.runs}
    assert _row(result, "softmax_v")["failed"] == 1 and "5 (1/0)" in format_report(result)
    assert set(result.diffs["n"]) == {5} and set(result.curves["n"]) == {5}
    assert "AUC = mean acc/val over epochs 1-20:" in format_report(result)
    # a FINISHED run stopped at epoch 1 does set the window: it is named
    _run(client, eid, "softmax", 7, curve("softmax", 7, epochs=1))
    short = _compare(uri)
    assert short.auc_epochs == 1 and short.auc_set_by.name == "softmax-s7"
    assert "(set by run softmax-s7, stopped at epoch 1; others reach up to 20" in format_report(
        short)  # fmt: skip


def test_4_a_partial_look_without_a_trained_epoch_is_refused(store):
    """Before: '--include-running' with a run that had just started gave 'AUC over epochs
    1-0' and '-0.0000 [-0.0000, +0.0000] Welch t 0.0756', a p-value from rounding."""
    uri, client, eid = store
    for seed in range(3):
        _run(client, eid, "softmax", seed, curve("softmax", seed))
        _run(client, eid, "softmax_v", seed, curve("softmax_v", seed))
    _run(client, eid, "softmax_v", 3, curve("softmax_v", 3, epochs=0), status="RUNNING")
    with pytest.raises(ConfigError) as info:
        _compare(uri, include_running=True)
    message = str(info.value)
    assert "\n" not in message and message.startswith(
        "partial look: the runs share no trained epoch (run softmax_v-s3 has acc/val at epoch "
        "0 only); wait")  # fmt: skip
    assert _compare(uri).table["running"].sum() == 1  # without the flag: counted, left out


def test_5_a_failed_seed_keeps_the_other_pairs(store):
    """Before: one failed seed switched the variant to Welch over all seeds: 2-40% power for
    a 1-point effect where pairing the 4 shared seeds keeps 49%."""
    uri, client, eid = store
    rng = np.random.default_rng(5)
    for seed in range(5):
        base = curve("softmax", seed)
        base[-1] = 0.9 + rng.normal(0, 0.02)  # seeds differ by 2 points
        _run(client, eid, "softmax", seed, base)
        if seed == 4:
            _run(client, eid, "softmax_v", seed, base[:3], status="FAILED")
            continue
        better = base.copy()
        better[-1] += 0.01 + rng.normal(0, 0.001)
        _run(client, eid, "softmax_v", seed, better)
    row = _row(_compare(uri), "softmax_v")
    assert (row["test"], row["n_pairs"], row["n_units"]) == ("paired t", 4, 5)
    assert row["significant"] and row["failed"] == 1
    assert "paired t (4 of 5 pairs)" in format_report(_compare(uri))
    welch = _row(_compare(uri, pairing="welch"), "softmax_v")
    assert welch["test"] == "Welch t" and not welch["significant"]


def test_6_binomial_interval_only_for_accuracies_and_labelled(store):
    """Before: the binomial interval's quantity was unstated (the floor covered the mean over
    seeds on this test set, the no-spread interval was read as the population's), it was
    applied to F1 ('[0.8860, 0.9128] binomial (N=2000)') and unlabelled in the dose table."""
    uri, client, eid = store
    for seed in range(3):
        flat = curve("softmax", seed)
        flat[-1] = 0.91  # every seed: 0.90 test accuracy, 0.88 test F1
        _run(client, eid, "softmax", seed, flat, alpha=False, params={"variant.alpha": 0})
        _run(client, eid, "softmax", seed, curve("softmax", seed, salt=seed), alpha=False,
             params={"variant.alpha": 1})  # fmt: skip
    f1 = _compare(uri, metric="test_f1", group_by="variant.alpha")
    assert _row(f1, "0")["final_ci_method"] == "no spread" and "binomial" not in format_report(f1)
    acc = _compare(uri, group_by="variant.alpha")
    assert _row(acc, "0")["final_ci_method"] == "binomial (N=360)"
    assert any(n.startswith("binomial (N=...): an interval for the mean over seeds of the "
                            "accuracy on these N test images") for n in acc.notes)  # fmt: skip
    dose = format_report(_compare(uri, x="alpha"))
    assert "binomial (N=360)" in dose.splitlines()[dose.splitlines().index(next(
        line for line in dose.splitlines() if line.startswith("alpha"))) + 2]  # fmt: skip


def test_7_smaller_items(store, tmp_path):
    """Before: 'Delta vs alpha = 0' for a series whose lowest level is 0.25; --checkpoint
    best trusted a logged best_epoch=0; groups differing in epochs and lr kept their star;
    '1 1 seed(s)'; n = 1 figures titled 'mean and 95% CI' with nothing drawn; the dose
    plot's legend listed CIs that were not drawn."""
    uri, client, eid = store
    for alpha in ("0.25", "0.5", "1"):
        _run(client, eid, "alpha_remix", 0, curve("softmax", 0), alpha=False,
             params={"variant.alpha": alpha})  # fmt: skip
    dose = _compare(uri, x="alpha", out=str(tmp_path / "dose"), format="svg")
    assert "; Δ vs alpha = 0.25:" in format_report(dose)
    legend = (tmp_path / "dose" / "dose_test_acc_vs_alpha.svg").read_text()
    assert "95% CI" not in legend and "mean (no interval)" in legend
    assert "trend: mean of per-seed slopes (1 seed)" in legend  # estimated, not tested

    other = client.create_experiment("confounded")
    for seed in range(4):  # epochs 8 with a higher lr: a clear difference, but of both
        for epochs, lr, shift in ((6, "0.0005", 0.0), (8, "0.001", 0.05)):
            log_run(client, other, variant="softmax", seed=seed,
                    val_acc=curve("softmax", seed, epochs=epochs) + shift,
                    params={**DATA, "epochs": epochs, "lr": lr})  # fmt: skip
    confounded = compare.compare_runs(experiment="confounded", baseline="6",
                                      tracking_uri=uri, out=None)  # fmt: skip
    row = _row(confounded, "8")
    assert row["p_holm"] < 0.05 and not row["significant"]
    assert confounded.confounders == ("lr",)
    assert not [line for line in format_report(confounded).splitlines() if line.endswith(" *")]

    _run(client, eid, "alpha_remix", 0, curve("softmax", 0), alpha=False,
         params={"variant.alpha": "1"})  # seed 0 of group 1 again: one unit  # fmt: skip
    repeated = _compare(uri, group_by="variant.alpha")
    assert any("'1': 1 seed" in n and "1 1 seed" not in n for n in repeated.notes)

    zero = client.create_experiment("zero")
    for seed in range(3):
        logged = log_run(
            client, zero, variant="softmax", seed=seed, val_acc=curve("softmax", seed)
        )
        client.log_metric(logged["run_id"], "best_epoch", 0.0, step=7,
                          timestamp=int(time.time() * 1000) + 60_000)  # fmt: skip
    with pytest.raises(ConfigError, match="logged best_epoch 0, the untrained or pretrained"):
        compare.compare_runs(experiment="zero", checkpoint="best", tracking_uri=uri, out=None)

    single = compare.compare_runs(experiment="zero", group_by="seed", tracking_uri=uri,
                                  out=str(tmp_path / "one"), format="svg")  # fmt: skip
    curve_svg = (tmp_path / "one" / "curve_acc_val.svg").read_text()
    assert "mean across seeds" in curve_svg and "95% CI" not in curve_svg
    seeds_svg = (tmp_path / "one" / "final_best_test_acc.svg").read_text()
    assert "diamond: group mean" in seeds_svg and "95% CI" not in seeds_svg
    assert single.table["n"].tolist() == [1, 1, 1]


def test_8_a_variant_whose_runs_all_diverged_is_a_row(store):
    """Issue 25 item 8. Before: by default 'all runs 2 (2/0)' (the other variant's runs,
    carrying its failures); with --group-by variant only 'softmax 2 (0/0)', the failures
    counted nowhere."""
    uri, client, eid = store
    for seed in range(2):
        _run(client, eid, "softmax", seed, curve("softmax", seed))
        diverged = curve("softmax_v", seed)
        diverged[3:] = math.nan
        _run(client, eid, "softmax_v", seed, diverged)
    for group_by in (None, "variant"):
        result = _compare(uri, group_by=group_by)
        assert result.group_by == ("variant",)
        assert list(result.table["group"]) == ["softmax", "softmax_v"]
        text = format_report(result)
        assert re.search(r"^softmax +2 \(0/0\) ", text, re.M)
        assert re.search(r"^softmax_v +0 \(2/0\) +- +- +-$", text, re.M)
        assert any("'softmax_v': 2 of 2" in n for n in result.notes)
