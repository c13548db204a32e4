"""The per-group table: statistics of the per-seed end points and curve areas.

Input is one row per unit (a seed; :func:`ablate.compare.endpoints.collapse_repeats`),
output one row per group, groups whose every run failed included (n = 0). The tested end
point (``final`` or ``best``) and the area under the validation curve are compared with the
baseline as *one* Holm family (:mod:`ablate.compare.stats`): a star anywhere in the report
keeps the family-wise error at 5%. The other checkpoint is described, not tested.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ablate.compare import stats as st
from ablate.compare.endpoints import MetricSpec
from ablate.compare.grouping import LOST_KINDS
from ablate.compare.intervals import binomial_interval
from ablate.compare.stats import CONFIDENCE, LEVEL, Comparison
from ablate.exceptions import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_BASELINE", "span", "group_interval", "summarize", "resolve_baseline"]

# The reference group when --baseline is not given: plain softmax attention is what every
# other attention variant of an ablation is measured against.
DEFAULT_BASELINE = "softmax"
_COMPARISON_FIELDS = [
    "test", "n_pairs", "n_units", "diff", "ci_low", "ci_high", "p_value", "p_holm",
    "significant", "boot_low", "boot_high", "p_improve", "p_improve_low", "p_improve_high",
    "mde", "reason",
]  # fmt: skip
_COLUMN = {"ci_low": "diff_ci_low", "ci_high": "diff_ci_high", "boot_low": "boot_ci_low",
           "boot_high": "boot_ci_high"}  # fmt: skip


def span(values: Sequence[float]) -> str:
    """``"20"``, ``"18-20"`` or ``""``: which epochs / alphas a group's numbers came from."""
    finite = sorted({float(v) for v in values if v is not None and math.isfinite(float(v))})
    if not finite:
        return ""
    low, high = f"{finite[0]:g}", f"{finite[-1]:g}"
    return low if low == high else f"{low}-{high}"


def group_interval(
    values: Sequence[float], confidence: float, bounds: tuple[float, float] | None,
    n_items: int | None = None,
) -> tuple[float, float, float, float, str]:  # fmt: skip
    """(mean, std, low, high, method) of one group's values: an interval for the mean over
    seeds of the metric on this evaluation set (the set held fixed).

    The t-interval (``t``). For an accuracy on ``n_items`` items it is widened to at least
    the exact binomial interval of the seeds' pooled correct answers (n x N): near 100%
    accuracy a seed errs on a handful of items, the t-interval of such counts under-covers
    (83-93% at 3-10 seeds), and seeds that spread less than binomial sampling would are not
    evidence of a smaller spread (``t, binomial floor (N=...)``; ``binomial (N=...)`` for
    seeds that all scored the same). Without N, seeds without spread give no interval
    (``no spread``), never a zero-width one.
    """
    import numpy as np

    mean, std, low, high = st.t_interval(values, confidence, bounds)
    if len(values) < 2:
        return mean, std, low, high, "n<2"
    tol = st.tie_tolerance(values, 1 / n_items if n_items else None)
    spread = np.ptp(st.snap(values, tol)) > 0
    if not n_items:
        return (mean, std, low, high, "t") if spread else (mean, std, math.nan, math.nan,
                                                           "no spread")  # fmt: skip
    pooled = len(values) * n_items
    floor_low, floor_high = binomial_interval(mean * pooled, pooled, confidence)
    if not spread:
        return mean, std, floor_low, floor_high, f"binomial (N={n_items})"
    if floor_low >= low and floor_high <= high:
        return mean, std, low, high, "t"
    method = f"t, binomial floor (N={n_items})"
    return mean, std, min(low, floor_low), max(high, floor_high), method


def _columns(prefix: str, c: Comparison | None) -> dict[str, Any]:
    c = c or Comparison(math.nan, math.nan, math.nan, "", 0, math.nan)
    return {prefix + _COLUMN.get(name, name): getattr(c, name) for name in _COMPARISON_FIELDS}


def _split(units: "pd.DataFrame", order: Sequence[str]) -> dict[str, "pd.DataFrame"]:
    """group -> its rows (an empty frame for a group without any)."""
    parts = dict(iter(units.groupby("group", sort=False)))
    return {g: parts.get(g, units.iloc[:0]) for g in order}


def _comparisons(
    split: dict[str, "pd.DataFrame"], spec: MetricSpec, baseline: str, level: float,
    resolution: float | None, options: dict[str, Any], power: bool,
) -> dict[str, dict[str, Comparison]]:  # fmt: skip
    """End point and AUC against the baseline: one Holm family over both tables."""

    def groups_of(column: str) -> dict[str, tuple[list[float], list[object]]]:
        kept = {g: sub[sub[column].notna()] for g, sub in split.items()}
        return {g: (sub[column].to_list(), sub["seed"].to_list()) for g, sub in kept.items()}

    tables = {"": (groups_of(spec.checkpoint), resolution)}
    areas = groups_of("auc")
    if areas[baseline][0] and any(v[0] for g, v in areas.items() if g != baseline):
        tables["auc_"] = (areas, None)

    def run(mde_level: float | bool) -> dict[str, dict[str, Comparison]]:
        return {prefix: st.compare_groups(groups, baseline, mode=spec.mode, bounds=spec.bounds,
                                          level=level, holm_correct=False, mde_level=mde_level,
                                          resolution=step, **options)
                for prefix, (groups, step) in tables.items()}  # fmt: skip

    # the MDE is at the level Holm asks of a lone real effect: level / (tests with a p)
    counted = run(False)
    m = sum(math.isfinite(c.p_value) for r in counted.values() for c in r.values())
    out = run(level / max(m, 1)) if power else counted
    st.holm_family([c for results in out.values() for c in results.values()], level)
    return out


def summarize(
    units: "pd.DataFrame", *, spec: MetricSpec, order: Sequence[str],
    baseline: str | None = None, target: float | None = None, pairing: str = "auto",
    n_boot: int = 0, seed: int = 0, confidence: float = CONFIDENCE, level: float = LEVEL,
    n_items: Mapping[str, int | None] | None = None,
    lost: Mapping[str, Mapping[str, int]] | None = None, power: bool = True,
) -> "pd.DataFrame":  # fmt: skip
    """One row per group of ``order``.

    Columns: group, n (seeds), n_runs, repeated (seeds with several runs), n_running,
    failed / pruned / running (runs lost, from ``lost``); for ``final``, ``best`` and
    ``auc``: ``*_mean``, ``*_std``, ``*_ci_low``, ``*_ci_high``, ``*_ci_method`` (see
    :func:`group_interval`), where the numbers came from (``*_epochs``, ``*_alphas``,
    ``auc_last_epochs``, ``auc_alpha_low/high``). With a baseline, for the tested checkpoint
    and the AUC (prefix ``auc_``), one Holm family: the fields of
    :class:`ablate.compare.stats.Comparison`. With a target: epochs_to_target (median, runs
    that never reached it counted as never) and n_reached. ``n_items``: group -> the size of
    the set an accuracy was measured on (its resolution and binomial interval); ``power``:
    False skips the MDE (simulations).
    """
    import pandas as pd

    split = _split(units, order)
    sizes = {(n_items or {}).get(g) for g in order} if spec.counts else {None}
    resolution = 1 / next(iter(sizes)) if len(sizes) == 1 and None not in sizes else None
    comparisons: dict[str, dict[str, Comparison]] = {}
    if baseline is not None:
        options = dict(pairing=pairing, n_boot=n_boot, seed=seed, confidence=confidence)
        comparisons = _comparisons(split, spec, baseline, level, resolution, options, power)
    rows = []
    for group in order:
        sub = split[group]
        row = _describe(sub, group, spec, confidence, (n_items or {}).get(group))
        row.update({k: (lost or {}).get(group, {}).get(k, 0) for k in LOST_KINDS})
        if baseline is not None:
            for prefix in ("", "auc_"):
                row.update(_columns(prefix, comparisons.get(prefix, {}).get(group)))
        if target is not None:
            from ablate.compare.curves import median_censored

            reached = sub["epochs_to_target"].dropna().to_numpy(float)
            row["epochs_to_target"] = median_censored(reached)
            row["n_reached"] = int((reached < math.inf).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _describe(
    sub: "pd.DataFrame", group: str, spec: MetricSpec, confidence: float, n_items: int | None
) -> dict[str, Any]:
    n_runs = sub["n_runs"] if "n_runs" in sub else None
    row: dict[str, Any] = {
        "group": group, "n": int(sub[spec.checkpoint].notna().sum()),
        "n_runs": int(n_runs.sum()) if n_runs is not None else len(sub),
        "repeated": int((n_runs > 1).sum()) if n_runs is not None else 0,
        "n_running": int((sub["status"] == "RUNNING").sum()),
    }  # fmt: skip
    for which in ("final", "best", "auc"):
        stats = group_interval(sub[which].dropna().to_numpy(float), confidence, spec.bounds,
                               n_items if which != "auc" and spec.counts else None)  # fmt: skip
        for name, value in zip(("mean", "std", "ci_low", "ci_high", "ci_method"), stats):
            row[f"{which}_{name}"] = value
        if which != "auc":
            row[f"{which}_epochs"] = span(sub[f"{which}_epoch"])
            row[f"{which}_alphas"] = span(sub[f"{which}_alpha"])
    row["auc_last_epochs"] = span(sub.loc[sub["auc"].notna(), "last_epoch"])
    row["auc_alpha_low"] = float(sub["auc_alpha_low"].min()) if len(sub) else math.nan
    row["auc_alpha_high"] = float(sub["auc_alpha_high"].max()) if len(sub) else math.nan
    return row


def resolve_baseline(
    requested: str | None, groups: Sequence[str], finished: Sequence[str]
) -> tuple[str | None, str | None]:
    """The baseline group, matched by its full label (``softmax/attention``) or, grouping
    by several keys, by one value (``softmax``) that one group has; and a note when there
    is none. A requested baseline that does not match a group with finished runs is an
    error naming the valid ones; the default (:data:`DEFAULT_BASELINE`) may be absent."""
    wanted = requested or DEFAULT_BASELINE
    matches = [g for g in groups if g == wanted] or [g for g in groups if wanted in g.split("/")]
    listed = ", ".join(finished) or "none"
    if len(matches) == 1 and matches[0] in finished:
        return matches[0], None
    if requested is None:
        return None, f"no baseline group: pass --baseline with one of: {listed}"
    if len(matches) > 1:
        why = f"matches several groups ({', '.join(matches)}); give the full name"
    elif matches:
        why = "has no finished run to compare with"
    else:
        why = "is not a group"
    raise ConfigError(f"--baseline {requested!r} {why}; groups with finished runs: {listed}")
