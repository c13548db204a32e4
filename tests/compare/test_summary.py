"""The per-group table: statistics of a per-run frame, checked against scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ablate.compare.endpoints import parse_metric
from ablate.compare.stats import holm
from ablate.compare.summary import resolve_baseline, span, summarize


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(2)
    rows = []
    for group, shift in (("softmax", 0.0), ("softmax_v", 0.03), ("alpha_remix", -0.01)):
        for seed in range(5):
            final = 0.9 + shift + 0.01 * seed + rng.normal(0, 0.004)
            rows.append(
                {
                    "group": group, "run_id": f"{group}{seed}", "run_name": f"{group}{seed}",
                    "status": "FINISHED", "pruned": False, "seed": str(seed),
                    "final": final, "final_epoch": 20.0,
                    "final_alpha": math.nan if group == "softmax" else 1.0,
                    "best": final + 0.005, "best_epoch": 15.0 + seed, "best_alpha": math.nan,
                    "last_epoch": 20, "auc": final - 0.1, "auc_alpha_low": math.nan,
                    "auc_alpha_high": math.nan, "epochs_to_target": float(5 + seed),
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_summarize_against_scipy():
    per_run = _frame()
    order = ["softmax", "softmax_v", "alpha_remix"]
    table = summarize(
        per_run, spec=parse_metric("acc"), order=order, baseline="softmax", target=0.9,
        n_boot=500,
    ).set_index("group")  # fmt: skip
    base = per_run.query("group == 'softmax'")["final"].to_numpy()
    raw, raw_auc = [], []
    for group in order[1:]:
        x = per_run.query("group == @group")["final"].to_numpy()
        ref = stats.ttest_rel(x, base)
        row = table.loc[group]
        assert row["test"] == "paired t" and row["p_value"] == pytest.approx(ref.pvalue)
        assert row["diff"] == pytest.approx(x.mean() - base.mean())
        raw.append(ref.pvalue)
        auc = per_run.query("group == @group")["auc"].to_numpy()
        base_auc = per_run.query("group == 'softmax'")["auc"].to_numpy()
        assert row["auc_p_value"] == pytest.approx(stats.ttest_rel(auc, base_auc).pvalue)
        raw_auc.append(row["auc_p_value"])
        assert math.isnan(row["boot_ci_low"])  # 5 pairs: BCa withheld
        assert 0.0 <= row["p_improve_low"] <= row["p_improve"] <= row["p_improve_high"] <= 1.0
        assert row["mde"] > 0 and row["seeds_needed"] >= 2
    # one family: end point and AUC comparisons Holm-corrected together
    assert list(table.loc[order[1:], "p_holm"]) == pytest.approx(holm(raw + raw_auc)[:2])
    assert (
        table.loc["softmax", "final_alphas"] == ""
        and table.loc["softmax_v", "final_alphas"] == "1"
    )
    assert table.loc["softmax", "best_epochs"] == "15-19"
    assert table.loc["softmax", "epochs_to_target"] == pytest.approx(7.0)
    assert table.loc["softmax", "n_reached"] == 5
    assert table.loc["softmax_v", "final_ci_high"] <= 1.0
    assert table.loc["softmax", "test"] == ""  # the baseline row carries no comparison


def test_summarize_without_baseline_or_target():
    table = summarize(_frame(), spec=parse_metric("acc"), order=["softmax_v", "softmax"])
    assert "p_value" not in table.columns and "epochs_to_target" not in table.columns
    assert list(table["group"]) == ["softmax_v", "softmax"]


def test_span_and_baseline_resolution():
    assert span([20.0, 20.0]) == "20" and span([1.0, 0.5, math.nan]) == "0.5-1" and span([]) == ""
    groups = ["alpha_remix/attention", "softmax/attention", "softmax_v/attention"]
    assert resolve_baseline(None, groups) == ("softmax/attention", None)
    assert resolve_baseline("softmax_v", groups)[0] == "softmax_v/attention"
    missing, note = resolve_baseline("performer", groups)
    assert missing is None and "performer" in note and "softmax/attention" in note
    several, note = resolve_baseline("softmax", ["softmax/attention", "softmax/seqpool"])
    assert several is None and "matches several groups" in note


def test_group_interval_never_zero_width_nor_below_a_binomial_spread():
    from ablate.compare.summary import group_interval

    # 359, 359, 360 correct of 360: the seeds spread less than one binomial count would
    acc = pd.Series([359 / 360, 359 / 360, 1.0])
    mean, std, low, high, method = group_interval(acc, 0.95, (0.0, 1.0), 360)
    assert method == "t, binomial floor (N=360)" and high == 1.0
    p = (mean * 360 + 0.5) / 361
    half = stats.t.ppf(0.975, 2) * math.sqrt(p * (1 - p) / 360 / 3)
    assert low == pytest.approx(mean - half)
    # a wide spread keeps the plain t-interval; no spread: exact binomial, or none without N
    assert group_interval(pd.Series([0.9, 0.95, 0.99]), 0.95, (0.0, 1.0), 360)[-1] == "t"
    flat = pd.Series([0.9, 0.9, 0.9])
    assert group_interval(flat, 0.95, (0.0, 1.0), 360)[-1] == "binomial (N=360)"
    _, _, low, high, method = group_interval(flat, 0.95, (0.0, 1.0), None)
    assert math.isnan(low) and math.isnan(high) and method == "no spread"
