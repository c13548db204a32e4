"""The per-group table of `ablate compare`: statistics of the per-run end points and curves.

Input is :func:`ablate.compare.endpoints.per_run_frame` (one row per run); output one row
per group. The tested end point (``final`` or ``best``, from ``--checkpoint``) and the
area under the validation curve are each compared with the baseline as one Holm family
(see :mod:`ablate.compare.stats`); the other checkpoint is described, not tested.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

from ablate.compare.endpoints import MetricSpec
from ablate.compare.stats import CONFIDENCE, LEVEL, Comparison, compare_groups, t_interval

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["span", "summarize", "resolve_baseline", "DEFAULT_BASELINE"]

# Tried as the reference group when --baseline is not given: plain softmax attention is
# what every other attention variant in an ablation is measured against.
DEFAULT_BASELINE = "softmax"


def span(values: Sequence[float]) -> str:
    """``"20"``, ``"18-20"`` or ``""`` (no finite value): which epochs / alphas a group's
    numbers came from."""
    finite = sorted({float(v) for v in values if v is not None and math.isfinite(float(v))})
    if not finite:
        return ""
    low, high = f"{finite[0]:g}", f"{finite[-1]:g}"
    return low if low == high else f"{low}-{high}"


def _comparison_columns(prefix: str, c: Comparison | None) -> dict[str, Any]:
    names = [
        "test", "n_pairs", "diff", "diff_ci_low", "diff_ci_high", "p_value", "p_holm",
        "significant", "boot_ci_low", "boot_ci_high", "p_improve", "p_improve_low",
        "p_improve_high", "mde", "seeds_needed", "reason",
    ]  # fmt: skip
    if c is None:
        values: list[Any] = ["", 0] + [math.nan] * 5 + [False] + [math.nan] * 7 + [""]
    else:
        values = [
            c.test, c.n_pairs, c.diff, c.ci_low, c.ci_high, c.p_value, c.p_holm,
            c.significant, c.boot_low, c.boot_high, c.p_improve, c.p_improve_low,
            c.p_improve_high, c.mde, c.seeds_needed, c.reason,
        ]  # fmt: skip
    return {prefix + name: value for name, value in zip(names, values)}


def summarize(
    per_run: "pd.DataFrame",
    *,
    spec: MetricSpec,
    order: Sequence[str],
    baseline: str | None = None,
    target: float | None = None,
    pairing: str = "auto",
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    level: float = LEVEL,
) -> "pd.DataFrame":
    """One row per group.

    Columns: group, n, n_running; for ``final`` and ``best`` (checkpoint): ``*_mean``,
    ``*_std``, ``*_ci_low``, ``*_ci_high`` (t-interval, clipped to the metric's range),
    ``*_epochs`` and ``*_alphas`` (where the numbers came from); ``auc_*`` likewise, with
    ``auc_last_epochs`` (the E of "epochs 1..E"). With a
    baseline, for the tested checkpoint: test, n_pairs, diff, diff_ci_low/high, p_value,
    p_holm, significant, boot_ci_low/high (BCa; NaN below its minimum size), p_improve with
    its interval, mde, seeds_needed, reason; and the same with the ``auc_`` prefix. With a
    target: epochs_to_target (mean over the runs that reached it) and n_reached.

    Args:
        per_run: see :func:`ablate.compare.endpoints.per_run_frame`.
        spec: the parsed metric (mode, range, tested checkpoint).
        order: groups, in table order.
        baseline: the reference group (None: no comparisons).
        target: the epochs-to-target level (None: no such columns).
        pairing: ``auto``, ``paired`` or ``welch`` (see :func:`stats.compare_to_baseline`).
        n_boot: bootstrap resamples; seed: their generator seed.
        confidence: interval coverage; level: family-wise significance level.
    """
    import pandas as pd

    bounds = spec.bounds
    tested = spec.checkpoint

    def groups_of(column: str) -> dict[str, tuple[list[float], list[object]]]:
        out = {}
        for group in order:
            sub = per_run[(per_run["group"] == group) & per_run[column].notna()]
            out[group] = (sub[column].to_list(), sub["seed"].to_list())
        return out

    comparisons: dict[str, dict[str, Comparison]] = {"": {}, "auc_": {}}
    if baseline is not None:
        options = dict(pairing=pairing, n_boot=n_boot, seed=seed, confidence=confidence)
        comparisons[""] = compare_groups(
            groups_of(tested), baseline, mode=spec.mode, bounds=bounds, level=level, **options
        )
        auc_groups = groups_of("auc")
        if len(auc_groups[baseline][0]):
            comparisons["auc_"] = compare_groups(
                auc_groups, baseline, mode=spec.mode, bounds=bounds, level=level, **options
            )
    rows = []
    for group in order:
        sub = per_run[per_run["group"] == group]
        row: dict[str, Any] = {
            "group": group,
            "n": int(sub[tested].notna().sum()),
            "n_running": int((sub["status"] == "RUNNING").sum()),
        }
        for which in ("final", "best", "auc"):
            mean, std, low, high = t_interval(sub[which].dropna(), confidence, bounds)
            row.update({f"{which}_mean": mean, f"{which}_std": std})
            row.update({f"{which}_ci_low": low, f"{which}_ci_high": high})
            if which != "auc":
                row[f"{which}_epochs"] = span(sub[f"{which}_epoch"])
                row[f"{which}_alphas"] = span(sub[f"{which}_alpha"])
        row["auc_last_epochs"] = span(sub.loc[sub["auc"].notna(), "last_epoch"])
        if baseline is not None:
            for prefix, results in comparisons.items():
                row.update(_comparison_columns(prefix, results.get(group)))
        if target is not None:
            reached = sub["epochs_to_target"].dropna().to_numpy(float)
            row["epochs_to_target"] = float(reached.mean()) if reached.size else math.nan
            row["n_reached"] = int(reached.size)
        rows.append(row)
    return pd.DataFrame(rows)


def resolve_baseline(
    requested: str | None, groups: Sequence[str]
) -> tuple[str | None, str | None]:
    """Group label used as baseline, plus a note when there is none.

    Matches the full label (``softmax/attention``) or, when grouping by several keys, a
    single key value (``softmax``) if exactly one group has it.
    """
    wanted = requested or DEFAULT_BASELINE
    if wanted in groups:
        return wanted, None
    partial = [g for g in groups if wanted in g.split("/")]
    if len(partial) == 1:
        return partial[0], None
    listed = ", ".join(groups)
    if len(partial) > 1:
        return None, (
            f"baseline {wanted!r} matches several groups ({', '.join(partial)}); "
            "pass the full group name with --baseline; no differences computed"
        )
    if requested is None:
        return None, f"no baseline group: pass --baseline with one of: {listed}"
    return (
        None,
        f"baseline group {requested!r} not found; groups: {listed}; no differences computed",
    )
