"""Learning curves: aligned by epoch, AUC over epochs 1..E, differences from the baseline."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ablate.compare.curves import (
    aggregate_curves,
    auc,
    default_target,
    diff_curves,
    epochs_to_target,
    median_censored,
)
from ablate.compare.select import RunRecord
from ablate.tracking.conventions import VAL_ACC, VAL_LOSS


def _run(group: str, seed: str, values) -> RunRecord:
    series = pd.Series(np.asarray(values, float), index=pd.RangeIndex(len(values), name="step"))
    return RunRecord(
        run_id=f"{group}-{seed}", name=f"{group}-{seed}", experiment_id="1",
        status="FINISHED", pruned=False, tags={}, params={"seed": seed}, latest={},
        histories={VAL_ACC: series}, group=group,
    )  # fmt: skip


RNG = np.random.default_rng(0)
BASE = {s: np.clip(0.5 + 0.1 * np.arange(5) + RNG.normal(0, 0.02, 5), 0, 1) for s in "012"}
RUNS = [_run("softmax", s, v) for s, v in BASE.items()] + [
    _run("softmax_v", s, np.clip(v + 0.05 + RNG.normal(0, 0.01, 5), 0, 1)) for s, v in BASE.items()
]


def test_auc_and_epochs_to_target():
    s = pd.Series([0.1, 0.5, 0.7, 0.9])
    assert auc(s) == pytest.approx(0.7)  # mean of epochs 1..3
    assert math.isnan(auc(s.iloc[:1]))
    assert auc(s, last=2) == pytest.approx(0.6)  # over a common range 1..2
    assert epochs_to_target(s, 0.7, "max") == 2.0
    assert epochs_to_target(s, 0.95, "max") == math.inf  # never: censored, not dropped
    assert epochs_to_target(s, 0.9, "max", last=2) == math.inf
    assert epochs_to_target(1 - s, 0.35, "min") == 2.0
    # epoch 0 is the start, not an epoch of training: a start at the target counts epoch 1
    assert epochs_to_target(pd.Series([0.95, 0.9, 0.97]), 0.9, "max") == 1.0
    assert median_censored([3, 4, 5, math.inf, 7]) == 5.0
    assert math.isnan(median_censored([3, math.inf, math.inf]))


def test_aggregate_curves_aligned_and_bounded():
    runs = [*RUNS, _run("short", "0", [0.9, 0.99]), _run("short", "1", [0.95, 0.999, 1.0])]
    curves = aggregate_curves(runs, [VAL_ACC], ["softmax", "short"], bounds={VAL_ACC: (0, 1)})
    soft = curves[curves["group"] == "softmax"].set_index("step")
    at3 = np.array([v[3] for v in BASE.values()])
    assert soft.loc[3, "mean"] == pytest.approx(at3.mean())
    ref = stats.t.interval(0.95, 2, loc=at3.mean(), scale=stats.sem(at3))
    assert (soft.loc[3, "ci_low"], soft.loc[3, "ci_high"]) == pytest.approx(ref)
    short = curves[curves["group"] == "short"].set_index("step")
    assert list(short["n"]) == [2, 2, 1]  # the second run reached epoch 2 alone
    assert short.loc[1, "ci_high"] == 1.0  # clipped: an accuracy interval stays <= 1
    assert math.isnan(short.loc[2, "ci_low"])


def test_diff_curves_paired_by_seed_else_welch():
    diffs = diff_curves(RUNS, VAL_ACC, ["softmax", "softmax_v"], "softmax", bounds=(0, 1))
    assert set(diffs["group"]) == {"softmax_v"} and set(diffs["test"]) == {"paired t"}
    row = diffs.set_index("step").loc[2]
    a = np.array([r.histories[VAL_ACC][2] for r in RUNS if r.group == "softmax_v"])
    b = np.array([r.histories[VAL_ACC][2] for r in RUNS if r.group == "softmax"])
    ref = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert row["diff"] == pytest.approx((a - b).mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(tuple(ref))
    # the simultaneous band over epochs 1-4 is wider than each pointwise interval, narrower
    # than Bonferroni's
    band = diffs.set_index("step")
    assert list(band.index) == [1, 2, 3, 4] and set(band["band"]) == {"sup-t over 4 epochs"}
    half = (band["band_high"] - band["band_low"]) / (band["ci_high"] - band["ci_low"])
    bonferroni = stats.t.ppf(1 - 0.025 / 4, 2) / stats.t.ppf(0.975, 2)
    assert ((half >= 1 - 1e-9) & (half <= bonferroni + 1e-9)).all()
    # other seeds in the variant: Welch's interval
    other = [*RUNS[:3], *(_run("softmax_v", f"9{s}", BASE[s] + 0.05) for s in "012")]
    diffs = diff_curves(other, VAL_ACC, ["softmax", "softmax_v"], "softmax")
    assert set(diffs["test"]) == {"Welch t"} and set(diffs["band"]) == {"Bonferroni over 4 epochs"}
    assert diff_curves(RUNS, VAL_ACC, ["softmax"], None).empty


def test_default_target_is_the_worst_groups_final_level():
    worst = np.mean([v[-1] for v in BASE.values()])
    # rounded down to 3 decimals (0.1 of a percentage point): every group still reaches it
    assert default_target(RUNS, VAL_ACC, "max") == math.floor(worst * 1000) / 1000
    assert default_target(RUNS, VAL_LOSS, "max") is None
