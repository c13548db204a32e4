"""The per-group table of `ablate compare`: statistics of the per-run end points and curves.

Input is one row per unit (a seed; :func:`ablate.compare.units.collapse_repeats`); output
one row per group. The tested end point (``final`` or ``best``, from ``--checkpoint``) and
the area under the validation curve are compared with the baseline as *one* Holm family
(see :mod:`ablate.compare.stats`): a star anywhere in the report keeps the family-wise
error at 5%. The other checkpoint is described, not tested.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ablate.compare.curves import median_censored
from ablate.compare.endpoints import MetricSpec
from ablate.compare.intervals import binomial_interval
from ablate.compare.stats import (
    CONFIDENCE,
    LEVEL,
    Comparison,
    compare_groups,
    holm_family,
    t_interval,
)
from ablate.compare.units import LOST_KINDS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["span", "summarize", "group_interval", "resolve_baseline", "DEFAULT_BASELINE"]

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


def group_interval(
    values: "pd.Series", confidence: float, bounds: tuple[float, float] | None,
    trials: int | None,
) -> tuple[float, float, float, float, str]:
    """(mean, std, low, high, method) of one group's values.

    The t-interval. For a fraction measured on ``trials`` test items (an accuracy), a run's
    value varies at least as much as a binomial count does, so a sample variance below
    p(1-p)/N (ties on a small test set: few distinct values) is raised to it (method
    ``t, binomial floor (N=...)``); a group without any spread gets the exact
    Clopper-Pearson interval of its accuracy on N items (``binomial (N=...)``). Without N,
    a group without spread has no interval (``no spread``), never a zero-width one.
    """
    mean, std, low, high = t_interval(values, confidence, bounds)
    if len(values) < 2:
        return mean, std, low, high, "n<2"
    fraction = bounds == (0.0, 1.0) and bool(trials)
    if std == 0 and fraction:
        low, high = binomial_interval(mean * trials, trials, confidence)
        return mean, std, low, high, f"binomial (N={trials})"
    if std == 0:
        return mean, std, math.nan, math.nan, "no spread"
    if fraction:
        p = (mean * trials + 0.5) / (trials + 1)  # never exactly 0 or 1
        floor = p * (1 - p) / trials
        if std**2 < floor:
            from scipy import stats

            n = len(values)
            half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * math.sqrt(floor / n)
            low, high = max(mean - half, 0.0), min(mean + half, 1.0)
            return mean, std, low, high, f"t, binomial floor (N={trials})"
    return mean, std, low, high, "t"


def _split(units: "pd.DataFrame", order: Sequence[str]) -> dict[str, "pd.DataFrame"]:
    """group -> its rows (empty frame for a group without any)."""
    parts = {g: sub for g, sub in units.groupby("group", sort=False)}
    return {g: parts.get(g, units.iloc[:0]) for g in order}


def _comparisons(
    units: "pd.DataFrame", spec: MetricSpec, order: Sequence[str], baseline: str,
    level: float, options: dict[str, Any], power: bool = True,
) -> dict[str, dict[str, Comparison]]:
    """End point and AUC against the baseline: one Holm family over both tables."""

    split = _split(units, order)

    def groups_of(column: str) -> dict[str, tuple[list[float], list[object]]]:
        out = {}
        for group in order:
            sub = split[group]
            sub = sub[sub[column].notna()]
            out[group] = (sub[column].to_list(), sub["seed"].to_list())
        return out

    tables = {"": groups_of(spec.checkpoint)}
    auc_groups = groups_of("auc")
    if len(auc_groups[baseline][0]) and any(len(v[0]) for g, v in auc_groups.items()
                                            if g != baseline):  # fmt: skip
        tables["auc_"] = auc_groups
    def run(mde_level: float | bool) -> dict[str, dict[str, Comparison]]:
        return {
            prefix: compare_groups(
                groups, baseline, mode=spec.mode, bounds=spec.bounds, level=level,
                holm_correct=False, mde_level=mde_level, **options,
            )  # fmt: skip
            for prefix, groups in tables.items()
        }

    # the MDE is at the level Holm asks of a lone real effect: level / (tests with a p)
    counted = run(False)
    m = sum(math.isfinite(c.p_value) for r in counted.values() for c in r.values())
    out = run(level / max(m, 1)) if power else counted
    holm_family([c for results in out.values() for c in results.values()], level)
    return out


def summarize(
    units: "pd.DataFrame",
    *,
    spec: MetricSpec,
    order: Sequence[str],
    baseline: str | None = None,
    target: float | None = None,
    pairing: str = "auto",
    n_boot: int = 0,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    level: float = LEVEL,
    trials: Mapping[str, int | None] | None = None,
    lost: Mapping[str, Mapping[str, int]] | None = None,
    power: bool = True,
) -> "pd.DataFrame":
    """One row per group.

    Columns: group, n (units: seeds), n_runs, repeated (seeds with several runs), failed,
    pruned, running (runs lost per group); for ``final`` and ``best`` (checkpoint) and
    ``auc``: ``*_mean``, ``*_std``, ``*_ci_low``, ``*_ci_high``, ``*_ci_method`` (``t``,
    ``binomial (N=...)`` for a group without spread, ``no spread``, ``n<2``), ``*_epochs``
    and ``*_alphas`` (where the numbers came from); ``auc_alpha_low/high`` (alpha over the
    AUC's epochs). With a baseline, for the tested checkpoint and for the AUC (prefix
    ``auc_``), one Holm family across both: test, n_pairs, diff, diff_ci_low/high, p_value,
    p_holm, significant, boot_ci_low/high, p_improve (+ interval when paired), mde,
    seeds_needed, reason. With a target: epochs_to_target (median, runs that never
    reached it counted as never; NaN when half or more never did) and n_reached.

    Args:
        units: one row per seed (see :func:`ablate.compare.units.collapse_repeats`).
        spec: the parsed metric (mode, range, tested checkpoint).
        order: groups, in table order.
        baseline: the reference group (None: no comparisons).
        target: the epochs-to-target level (None: no such columns).
        pairing: ``auto``, ``paired`` or ``welch`` (see :func:`stats.compare_to_baseline`).
        n_boot: BCa resamples; seed: their generator seed.
        confidence: interval coverage; level: family-wise significance level.
        trials: group -> test-set size (for the binomial interval of a group without spread).
        lost: group -> {failed, pruned, running} (see :func:`ablate.compare.units.lost_counts`).
        power: compute the MDE and seeds-needed columns (False: NaN; the tests and the
            intervals are the same, e.g. for simulations).
    """
    import pandas as pd

    comparisons: dict[str, dict[str, Comparison]] = {}
    if baseline is not None:
        options = dict(pairing=pairing, n_boot=n_boot, seed=seed, confidence=confidence)
        comparisons = _comparisons(units, spec, order, baseline, level, options, power)
    rows = []
    split = _split(units, order)
    for group in order:
        sub = split[group]
        row = _describe(sub, group, spec, confidence, (trials or {}).get(group))
        row.update({k: (lost or {}).get(group, {}).get(k, 0) for k in LOST_KINDS})
        if baseline is not None:
            for prefix in ("", "auc_"):
                row.update(_comparison_columns(prefix, comparisons.get(prefix, {}).get(group)))
        if target is not None:
            reached = sub["epochs_to_target"].dropna().to_numpy(float)
            row["epochs_to_target"] = median_censored(reached)
            row["n_reached"] = int((reached < math.inf).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _describe(
    sub: "pd.DataFrame", group: str, spec: MetricSpec, confidence: float, trials: int | None
) -> dict[str, Any]:
    """The descriptive columns of one group (see :func:`summarize`)."""
    tested = spec.checkpoint
    row: dict[str, Any] = {
        "group": group,
        "n": int(sub[tested].notna().sum()),
        "n_runs": int(sub["n_runs"].sum()) if "n_runs" in sub else len(sub),
        "repeated": int((sub["n_runs"] > 1).sum()) if "n_runs" in sub else 0,
        "n_running": int((sub["status"] == "RUNNING").sum()),
    }
    for which in ("final", "best", "auc"):
        limit = trials if which != "auc" else None
        mean, std, low, high, method = group_interval(
            sub[which].dropna(), confidence, spec.bounds, limit
        )
        row.update({f"{which}_mean": mean, f"{which}_std": std})
        row.update({f"{which}_ci_low": low, f"{which}_ci_high": high})
        row[f"{which}_ci_method"] = method
        if which != "auc":
            row[f"{which}_epochs"] = span(sub[f"{which}_epoch"])
            row[f"{which}_alphas"] = span(sub[f"{which}_alpha"])
    row["auc_last_epochs"] = span(sub.loc[sub["auc"].notna(), "last_epoch"])
    row["auc_alpha_low"] = float(sub["auc_alpha_low"].min()) if len(sub) else math.nan
    row["auc_alpha_high"] = float(sub["auc_alpha_high"].max()) if len(sub) else math.nan
    return row


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
