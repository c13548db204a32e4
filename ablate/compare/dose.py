"""Dose-response: the end point against a numeric parameter (`ablate compare --x alpha`).

One row per level of the parameter (the variant parameter ``variant.<x>`` or a config key
``x``): n, mean, its 95% CI and the difference from a baseline level (``--baseline-x``,
default each series' lowest), paired by seed where the seeds match; and a trend test. The
trend is the mean of the per-seed least-squares slopes, tested with a t-test over seeds:
seeds are the unit, so it stays valid when seeds respond differently to the parameter and
when the noise grows with it (a regression over all runs, seed intercepts removed, treats
the runs as independent and rejects 15-16% of null trends with seed-specific slopes).
Without seeds (``--pairing welch``) it is the least-squares slope over independent runs.
The level comparisons and the trend tests form one Holm family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ablate.compare import stats as st
from ablate.compare.grouping import config_view, lookup
from ablate.compare.select import RunRecord, join_names
from ablate.compare.stats import CONFIDENCE, LEVEL, Comparison
from ablate.exceptions import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from ablate.compare.result import ComparisonResult

__all__ = ["DoseResponse", "x_key", "trend", "dose_response"]


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def x_key(runs: Sequence[RunRecord], x: str) -> str:
    """The param ``--x`` is read from: ``variant.<x>`` when runs have it, else ``x``; every
    run must give a number."""
    key = f"variant.{x}" if any(f"variant.{x}" in r.params for r in runs) else x
    values = {r.name: lookup(key, r) for r in runs}
    if all(v is None for v in values.values()):
        numeric = {k for r in runs for k, v in config_view(r).items() if _number(v) is not None}
        raise ConfigError(f"--x {x}: no selected run has a variant parameter or config key {x!r}; "
                          f"numeric config keys: {join_names(numeric)}")  # fmt: skip
    bad = sorted(name for name, v in values.items() if _number(v) is None)
    if bad:
        listed = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise ConfigError(f"--x {x}: {len(bad)} run(s) have no numeric {key} ({listed}); leave "
                          "them out with --filter")  # fmt: skip
    return key


def trend(
    xs: Sequence[float], ys: Sequence[float], seeds: Sequence[object] | None,
    confidence: float = CONFIDENCE,
) -> tuple[Comparison, float]:  # fmt: skip
    """(the slope of ``ys`` on ``xs`` as a Comparison against 0, the intercept of the line
    drawn): the mean of per-seed slopes (seeds with >= 2 levels) with a t-test over seeds,
    or without ``seeds`` the least-squares slope over independent runs."""
    import numpy as np
    from scipy import stats

    x, y = np.asarray(xs, float), np.asarray(ys, float)
    labels = list(seeds) if seeds is not None and None not in seeds else None
    if labels is not None:
        slopes = {}
        for seed in dict.fromkeys(labels):
            idx = [i for i, s in enumerate(labels) if s == seed]
            if np.ptp(x[idx]) > 0:
                slopes[seed] = np.polyfit(x[idx], y[idx], 1)[0]
        units = list(slopes)
        c = st.compare_to_baseline(list(slopes.values()), units, [0.0] * len(units), units,
                                   pairing="paired", level=None, confidence=confidence)
        c.test = f"mean of per-seed slopes ({len(units)} seed{'s' * (len(units) != 1)})"
    else:
        fit = stats.linregress(x, y) if x.size > 2 and np.ptp(x) > 0 else None
        df = x.size - 2
        half = float(stats.t.ppf(0.5 + confidence / 2, df)) * fit.stderr if fit else math.nan
        slope, p = (fit.slope, fit.pvalue) if fit else (math.nan, math.nan)
        c = Comparison(slope, slope - half, slope + half, f"least squares ({x.size} runs)", 0, p)
    return c, float(y.mean() - c.diff * x.mean())


@dataclass
class DoseResponse:
    """``levels``: one row per (series, level); ``trends``: one row per series."""

    x: str
    key: str
    levels: "pd.DataFrame"
    trends: list[dict[str, Any]] = field(default_factory=list)

    @property
    def baselines(self) -> list[float]:
        """The baseline level of each series."""
        return sorted(set(self.levels.loc[self.levels["test"] == "", "x"]))

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x, "levels": self.levels.to_dict("records"), "trends": self.trends}


def _levels(
    result: "ComparisonResult", key: str
) -> dict[tuple[str, ...], list[tuple[float, str]]]:
    """series (values of the other group-by keys) -> [(x, group)] sorted by x."""
    series: dict[tuple[str, ...], dict[str, float]] = {}
    finished = set(result.units["group"])
    for run in result.runs:
        value = _number(run.group_values.get(key))
        if value is not None and run.group in finished:
            rest = tuple(v for k, v in run.group_values.items() if k != key)
            series.setdefault(rest, {})[run.group] = value
    return {s: sorted((v, g) for g, v in groups.items()) for s, groups in series.items()}


def dose_response(
    result: "ComparisonResult", x: str, baseline_x: float | str | None, *, pairing: str = "auto"
) -> DoseResponse:
    """Levels, differences from the baseline level and the trend (see the module doc)."""
    import pandas as pd

    key, units, tested = result.group_by[0], result.units, result.checkpoint
    wanted = _number(str(baseline_x)) if baseline_x is not None else None
    if baseline_x is not None and wanted is None:
        raise ConfigError(f"--baseline-x: give a number, got {baseline_x!r}")
    rows, trends, family = [], [], []
    for series, levels in _levels(result, key).items():
        xs = [v for v, _ in levels]
        if wanted is not None and wanted not in xs:
            raise ConfigError(f"--baseline-x {baseline_x}: not a level of {x}; levels: "
                              + ", ".join(f"{v:g}" for v in xs))  # fmt: skip
        base = levels[xs.index(xs[0] if wanted is None else wanted)][1]
        rows_of = {g: units[units["group"] == g] for _, g in levels}
        groups = {g: (sub[tested].to_list(), sub["seed"].to_list()) for g, sub in rows_of.items()}
        comps = st.compare_groups(groups, base, mode=result.mode, pairing=pairing,
                                  bounds=result.spec.bounds, holm_correct=False)  # fmt: skip
        sub = units[units["group"].isin(groups)]
        fit, intercept = trend(sub["group"].map({g: v for v, g in levels}), sub[tested],
                               None if pairing == "welch" else sub["seed"].to_list())  # fmt: skip
        family += [*comps.values(), fit]
        trends.append({"series": "/".join(series), "fit": fit, "intercept": intercept})
        table = result.table.set_index("group")
        for value, group in levels:
            rows.append({"series": "/".join(series), "x": value, "group": group,
                         **table.loc[group, ["n", "failed", "pruned"]].to_dict(),
                         **{k: table.loc[group, f"{tested}_{k}"] for k in
                            ("mean", "std", "ci_low", "ci_high", "ci_method")},
                         "comparison": comps.get(group)})  # fmt: skip
    st.holm_family(family, LEVEL)
    for row in rows:
        c = row.pop("comparison") or Comparison(math.nan, math.nan, math.nan, "", 0, math.nan)
        row.update(diff=c.diff, diff_ci_low=c.ci_low, diff_ci_high=c.ci_high, test=c.test,
                   n_pairs=c.n_pairs, n_units=c.n_units, p_value=c.p_value, p_holm=c.p_holm,
                   significant=c.significant)  # fmt: skip
    for t in trends:
        c = t.pop("fit")
        t.update(slope=c.diff, ci_low=c.ci_low, ci_high=c.ci_high, test=c.test,
                 p_value=c.p_value, p_holm=c.p_holm, significant=c.significant)  # fmt: skip
    return DoseResponse(x, key, pd.DataFrame(rows), trends)
