"""The per-group table: statistics of a per-run frame, checked against scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ablate.compare.endpoints import parse_metric
from ablate.compare.stats import holm
from ablate.compare.summary import group_interval, resolve_baseline, span, summarize
from ablate.exceptions import ConfigError


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
        assert row["mde"] > 0
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
    assert resolve_baseline(None, groups, groups) == ("softmax/attention", None)
    assert resolve_baseline("softmax_v", groups, groups)[0] == "softmax_v/attention"
    missing, note = resolve_baseline(None, groups[:1], groups[:1])
    assert missing is None and "pass --baseline with one of: alpha_remix/attention" in note
    with pytest.raises(ConfigError, match="'performer' is not a group; groups with finished"):
        resolve_baseline("performer", groups, groups)
    with pytest.raises(ConfigError, match="matches several groups"):
        resolve_baseline("softmax", ["softmax/attention", "softmax/seqpool"], groups)
    with pytest.raises(ConfigError, match="has no finished run"):
        resolve_baseline("softmax_v/attention", groups, groups[:2])


def test_group_interval_never_zero_width():
    """Issue 24 item 6: one binomial interval, for accuracies with a known N only, for one
    quantity (the mean over seeds on this test set): the exact interval of the seeds'
    pooled answers, where it is wider than the t-interval."""
    acc = [342 / 360, 349 / 360, 356 / 360]
    mean, std, low, high, method = group_interval(acc, 0.95, (0.0, 1.0), 360)
    ref = stats.t.interval(0.95, 2, loc=np.mean(acc), scale=stats.sem(acc))
    assert method == "t" and (low, high) == pytest.approx((ref[0], min(ref[1], 1.0)))
    tight = [0.9, 0.9, 0.9 + 1 / 360, 0.9, 0.9]  # less spread than 1800 answers allow
    mean, std, low, high, method = group_interval(tight, 0.95, (0.0, 1.0), 360)
    ref = stats.binomtest(1621, 1800).proportion_ci(0.95, method="exact")
    assert method == "t, binomial floor (N=360)" and (low, high) == pytest.approx(ref)
    assert group_interval(tight, 0.95, (0.0, 1.0), None)[-1] == "t"  # F1: no N, no floor
    flat = [float(np.float32(0.9)), 0.9, 0.9]  # equal at the resolution, not bit for bit
    assert group_interval(flat, 0.95, (0.0, 1.0), 360)[-1] == "binomial (N=360)"
    ref = stats.binomtest(972, 1080).proportion_ci(0.95, method="exact")
    assert group_interval(flat, 0.95, (0.0, 1.0), 360)[2:4] == pytest.approx((ref.low, ref.high))
    _, _, low, high, method = group_interval(flat, 0.95, (0.0, 1.0), None)
    assert math.isnan(low) and math.isnan(high) and method == "no spread"
