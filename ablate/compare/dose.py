"""Dose-response: the end point against a numeric parameter (`ablate compare --x alpha`).

One row per level of the parameter (read from the variant's parameters, tag
``variant.<name>``, or a config key): n, mean, its 95% CI and the difference from a
baseline level (``--baseline-x``, default the lowest), paired by seed when the seeds
match; and a test for trend: the least-squares slope of the end point on the parameter
with seeds as blocks (each seed's own mean removed, so the seed-to-seed spread that
pairing removes does not blur the slope), with its t-interval. The level comparisons and the
trend test form one Holm family. Levels come from the group table, so the counts of
failed/pruned runs, the binomial interval of a level without spread, etc. carry over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ablate.compare.fmt import UNDEFINED
from ablate.compare.fmt import interval as _interval
from ablate.compare.fmt import num as _num
from ablate.compare.fmt import p_text as _p
from ablate.compare.grouping import lookup
from ablate.compare.select import RunRecord, join_names
from ablate.compare.stats import CONFIDENCE, LEVEL, Comparison, compare_groups, holm_family
from ablate.exceptions import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from ablate.compare.result import ComparisonResult

__all__ = ["DoseResponse", "x_key", "trend", "dose_response", "dose_table"]


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def x_key(runs: Sequence[RunRecord], x: str) -> str:
    """The key ``--x`` is read from: the variant parameter tag ``variant.<x>`` when runs
    have it, else the tag or param ``x``; every run must give a number."""
    key = f"tags.variant.{x}" if any(f"variant.{x}" in r.tags for r in runs) else x
    values = {r.name: lookup(key, r.tags, r.params) for r in runs}
    if all(v is None for v in values.values()):
        numeric = {k for r in runs for k, v in [*r.tags.items(), *r.params.items()]
                   if _number(v) is not None and not k.startswith("mlflow.")}  # fmt: skip
        raise ConfigError(
            f"--x {x}: no selected run has a variant parameter or config key {x!r}; "
            f"numeric keys: {join_names(numeric)}"
        )
    bad = [name for name, v in values.items() if _number(v) is None]
    if bad:
        listed = ", ".join(sorted(bad)[:5]) + (" ..." if len(bad) > 5 else "")
        raise ConfigError(
            f"--x {x}: {len(bad)} run(s) have no numeric {x} ({listed}); leave them out "
            f"with --filter"
        )
    return key


def trend(xs: Sequence[float], ys: Sequence[float], blocks: Sequence[object] | None,
          confidence: float = CONFIDENCE) -> dict[str, float]:  # fmt: skip
    """Least-squares slope of ``ys`` on ``xs`` with a free intercept per block (seed).

    Returns:
        slope, ci_low, ci_high, p_value, df, intercept (of the pooled line, for drawing),
        blocks (used: those with >= 2 levels); NaN where undefined.
    """
    import numpy as np
    from scipy import stats

    x, y = np.asarray(xs, float), np.asarray(ys, float)
    labels = list(blocks) if blocks is not None and None not in blocks else [0] * x.size
    xt, yt, used = [], [], 0
    for label in dict.fromkeys(labels):
        idx = [i for i, b in enumerate(labels) if b == label]
        if len(idx) >= 2 and np.ptp(x[idx]) > 0:
            xt.append(x[idx] - x[idx].mean())
            yt.append(y[idx] - y[idx].mean())
            used += 1
    out = dict(slope=math.nan, ci_low=math.nan, ci_high=math.nan, p_value=math.nan,
               df=math.nan, intercept=math.nan, blocks=float(used))  # fmt: skip
    if not used:
        return out
    xt_all, yt_all = np.concatenate(xt), np.concatenate(yt)
    sxx = float((xt_all**2).sum())
    slope = float((xt_all * yt_all).sum() / sxx)
    df = xt_all.size - used - 1
    out.update(slope=slope, df=float(df), intercept=float(y.mean() - slope * x.mean()))
    if df < 1:
        return out
    resid = yt_all - slope * xt_all
    se = math.sqrt(float((resid**2).sum()) / df / sxx)
    if se == 0:
        return out
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * stats.t.sf(abs(slope) / se, df))
    out.update(ci_low=slope - half, ci_high=slope + half, p_value=p)
    return out


@dataclass
class DoseResponse:
    """``levels``: one row per (series, level); ``trends``: one row per series."""

    x: str
    key: str
    baseline_x: float
    levels: "pd.DataFrame"
    trends: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "x": self.x,
            "baseline_x": self.baseline_x,
            "levels": self.levels.to_dict("records"),
            "trends": self.trends,
        }

    def figure(self, result: "ComparisonResult") -> "Figure":
        from ablate.compare import plots

        units = result.units
        where = dict(zip(self.levels["group"], self.levels["x"]))
        points = units[units["group"].isin(where)].assign(
            x=lambda f: f["group"].map(where), value=lambda f: f[result.checkpoint]
        )
        first = self.trends[0] if self.trends else {}
        fit = (first.get("intercept", math.nan), first.get("slope", math.nan))
        return plots.plot_dose_response(
            self.levels, points, result.metric, self.x, None, fit=fit,
            title=f"{plots.axis_label(result.metric)}\nagainst {self.x}: seeds, means, trend",
        )  # fmt: skip


def _levels(
    result: "ComparisonResult", key: str
) -> dict[tuple[str, ...], list[tuple[float, str]]]:
    """series (values of the other group-by keys) -> [(x, group)] sorted by x."""
    series: dict[tuple[str, ...], dict[str, float]] = {}
    for run in result.runs:
        value = _number(run.group_values.get(key))
        rest = tuple(v for k, v in run.group_values.items() if k != key)
        if value is not None and run.group in set(result.table["group"]):
            series.setdefault(rest, {})[run.group] = value
    return {s: sorted((v, g) for g, v in groups.items()) for s, groups in series.items()}


def dose_response(
    result: "ComparisonResult", x: str, baseline_x: float | str | None, *, pairing: str = "auto"
) -> DoseResponse:
    """Levels, differences from the baseline level and the trend (see the module doc)."""
    import pandas as pd

    key = result.group_by[0]
    units, tested = result.units, result.checkpoint
    rows, trends, family = [], [], []
    wanted = _number(str(baseline_x)) if baseline_x is not None else None
    if baseline_x is not None and wanted is None:
        raise ConfigError(f"--baseline-x: give a number, got {baseline_x!r}")
    for series, levels in _levels(result, key).items():
        xs = [v for v, _ in levels]
        base_x = xs[0] if wanted is None else wanted
        if base_x not in xs:
            raise ConfigError(
                f"--baseline-x {baseline_x}: not a level of {x}; levels: "
                + ", ".join(f"{v:g}" for v in xs)
            )
        base_group = levels[xs.index(base_x)][1]
        groups = {}
        for _, g in levels:
            sub = units[units["group"] == g]
            groups[g] = (sub[tested].to_list(), sub["seed"].to_list())
        comps = compare_groups(groups, base_group, mode=result.mode, pairing=pairing,
                               bounds=result.spec.bounds, holm_correct=False)  # fmt: skip
        family += list(comps.values())
        sub = units[units["group"].isin(groups)]
        level_of = {g: v for v, g in levels}
        fit = trend(sub["group"].map(level_of), sub[tested],
                    None if pairing == "welch" else sub["seed"].to_list())  # fmt: skip
        fit_comp = Comparison(fit["slope"], fit["ci_low"], fit["ci_high"], "trend", 0,
                              fit["p_value"])  # fmt: skip
        family.append(fit_comp)
        trends.append({"series": "/".join(series), **fit, "comparison": fit_comp})
        for value, group in levels:
            rows.append(_level_row(result, series, value, group, comps.get(group)))
    holm_family(family, LEVEL)
    for t in trends:
        c = t.pop("comparison")
        t.update(p_holm=c.p_holm, significant=c.significant)
    levels = pd.DataFrame(rows)
    for column in ("p_holm", "significant"):
        levels[column] = [getattr(r.get("_c"), column, math.nan if column == "p_holm" else False)
                          for r in rows]  # fmt: skip
    levels = levels.drop(columns="_c")
    return DoseResponse(x, key, float(levels["x"].iloc[0]) if wanted is None else wanted,
                        levels, trends)  # fmt: skip


def _level_row(result: "ComparisonResult", series: tuple[str, ...], value: float, group: str,
               comp: Comparison | None) -> dict[str, Any]:  # fmt: skip
    rec = result.table.set_index("group").loc[group]
    tested = result.checkpoint
    row = {"series": "/".join(series), "x": value, "group": group, "n": int(rec["n"]),
           "failed": int(rec["failed"]), "pruned": int(rec["pruned"]),
           "mean": rec[f"{tested}_mean"], "std": rec[f"{tested}_std"],
           "ci_low": rec[f"{tested}_ci_low"], "ci_high": rec[f"{tested}_ci_high"],
           "ci_method": rec[f"{tested}_ci_method"], "_c": comp}  # fmt: skip
    for name in ("diff", "ci_low", "ci_high", "test", "p_value", "n_pairs"):
        column = {"ci_low": "diff_ci_low", "ci_high": "diff_ci_high"}.get(name, name)
        row[column] = getattr(comp, name) if comp is not None else (
            "" if name == "test" else 0 if name == "n_pairs" else math.nan)  # fmt: skip
    return row


def dose_table(result: "ComparisonResult") -> tuple[str, list[str], list[list[str]]]:
    """The printed table: one row per level, then the trend."""
    dose = result.dose
    m = result.metric_label
    better = "higher" if result.mode == "max" else "lower"
    title = (
        f"dose-response: {m} against {dose.x} ({better} is better); "
        f"Δ vs {dose.x} = {dose.baseline_x:g}"
    )
    header = [dose.x, "n (failed/pruned)", f"{result.metric} (mean ± std)", "95% CI",
              f"Δ vs {dose.baseline_x:g} [95% CI]", "test", "p (Holm)"]  # fmt: skip
    if len({s for s in dose.levels["series"]}) > 1:
        header.insert(0, "series")
    rows = []
    for rec in dose.levels.to_dict("records"):
        spread = "n<2" if rec["n"] < 2 else _num(rec["std"])
        ci = _interval(rec["ci_low"], rec["ci_high"])
        if rec["ci_method"] == "no spread":
            ci = UNDEFINED
        elif rec["ci_method"].startswith("binomial"):
            ci += f" {rec['ci_method']}"
        if rec["test"]:
            delta_ci = _interval(rec["diff_ci_low"], rec["diff_ci_high"], True)
            if rec["test"].startswith("sign"):
                delta_ci = UNDEFINED
            delta = _num(rec["diff"], True) + " " + delta_ci
            holm = _p(rec["p_holm"]) + (" *" if rec["significant"] else "")
        else:
            delta, holm = "baseline", ""
        test = rec["test"] + (f" ({rec['n_pairs']} pairs)" if rec["n_pairs"] else "")
        row = [f"{rec['x']:g}", f"{rec['n']} ({rec['failed']}/{rec['pruned']})",
               f"{_num(rec['mean'])} ± {spread}", ci, delta, test, holm]  # fmt: skip
        rows.append(([rec["series"]] if len(header) == 8 else []) + row)
    for t in dose.trends:
        slope = f"slope {_num(t['slope'], True)} per unit {dose.x}"
        row = ["trend", f"{int(t['blocks'])} seeds as blocks", slope,
               _interval(t["ci_low"], t["ci_high"], True), "", f"regression (df {t['df']:g})",
               _p(t["p_holm"]) + (" *" if t["significant"] else "")]  # fmt: skip
        rows.append(([t["series"]] if len(header) == 8 else []) + row)
    return title, header, rows
