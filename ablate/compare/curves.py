"""Learning curves for `ablate compare`: per-epoch aggregation and per-run curve metrics.

Curves are aligned by epoch (step = epoch): the value at epoch ``e`` averages the runs that
reached ``e`` and ``n`` says how many. Two numbers summarise a run's curve besides its end:

* ``auc``: the mean of the validation metric over epochs 1..E, the area under the curve
  divided by its length (epoch 0, the untrained model, is the same for every variant with
  the same seed and would only dilute it). It rewards learning fast as well as ending well.
* ``epochs_to_target``: the first epoch whose value reaches a target.

:func:`diff_curves` gives each group's difference from the baseline per epoch with a 95%
interval, paired by seed when both groups have the same seeds at that epoch (Welch's
interval otherwise), so "is it better early on?" has an answer with its uncertainty.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Sequence

from ablate.compare.intervals import sup_t_critical
from ablate.compare.select import RunRecord
from ablate.compare.stats import CONFIDENCE, paired_test, t_interval, welch_test

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CURVE_METRICS",
    "auc",
    "common_epoch",
    "median_censored",
    "epochs_to_target",
    "default_target",
    "aggregate_curves",
    "diff_curves",
]

# Learning curves drawn for every comparison (a metric no selected run has is skipped).
# train_loss is the training objective (label smoothing, MixUp/CutMix): it gets its own
# figure and label and is never drawn on the val_loss axis.
CURVE_METRICS = ("val_acc", "val_loss", "train_loss", "alpha")
CURVE_COLUMNS = ["metric", "group", "step", "n", "mean", "std", "ci_low", "ci_high"]
DIFF_COLUMNS = [
    "metric", "group", "step", "n", "test", "diff", "ci_low", "ci_high", "band_low",
    "band_high", "band",
]  # fmt: skip


def auc(history: "pd.Series", last: int | None = None) -> float:
    """Mean of a per-epoch curve over epochs 1..``last`` (default: every epoch >= 1); NaN
    when none was logged. Comparable only between runs with the same ``last``."""
    trained = history[history.index >= 1]
    if last is not None:
        trained = trained[trained.index <= last]
    return float(trained.mean()) if len(trained) else math.nan


def epochs_to_target(
    history: "pd.Series", target: float, mode: str, last: int | None = None
) -> float:
    """First epoch >= 1 (and <= ``last``) whose value reaches ``target`` (>= for max, <= for
    min); ``inf`` if never (censored: it did not within the epochs looked at). Epoch 0 is
    the untrained or pretrained start, not an epoch of training."""
    trained = history[history.index >= 1]
    if last is not None:
        trained = trained[trained.index <= last]
    reached = trained >= target if mode == "max" else trained <= target
    hits = trained.index[reached.to_numpy()]
    return float(hits[0]) if len(hits) else math.inf


def common_epoch(runs: Sequence[RunRecord], metric: str) -> int | None:
    """The last epoch every run with a ``metric`` curve has reached (None without curves)."""
    ends = [
        int(r.histories[metric].index[-1])
        for r in runs
        if metric in r.histories and not r.histories[metric].empty
    ]
    return min(ends) if ends else None


def median_censored(values: Sequence[float]) -> float:
    """Median of epochs-to-target where ``inf`` marks a run that never reached it; NaN when
    half or more never did (the median is then not known)."""
    import numpy as np

    x = np.sort(np.asarray(values, dtype=float))
    if x.size == 0 or np.isinf(x[(x.size - 1) // 2 + (x.size % 2 == 0)]):
        return math.nan
    return float(np.median(x))


def default_target(
    runs: Sequence[RunRecord], metric: str, mode: str, last: int | None = None
) -> float | None:
    """The worst group's mean value of the curve at its end (or at epoch ``last``), rounded
    to 2 significant digits (1 decimal of a percentage): a level every group reaches on
    average, so epochs-to-target compares speed. None without curves."""
    finals: dict[str, list[float]] = {}
    for run in runs:
        history = run.histories.get(metric)
        if history is not None and not history.empty:
            upto = history if last is None else history[history.index <= last]
            if not upto.empty:
                finals.setdefault(run.group, []).append(float(upto.iloc[-1]))
    if not finals:
        return None
    means = [sum(v) / len(v) for v in finals.values()]
    worst = min(means) if mode == "max" else max(means)
    if worst == 0 or not math.isfinite(worst):
        return worst
    digits = 3 if 0 < abs(worst) < 1 else 2 - int(math.floor(math.log10(abs(worst))))
    factor = 10.0**digits
    # round toward "easier", so every group still reaches it on average
    return (math.floor if mode == "max" else math.ceil)(worst * factor) / factor


def _unit(run: RunRecord) -> str:
    return str(run.seed) if run.seed is not None else f"run:{run.run_id}"


def _wide(
    runs: Sequence[RunRecord], metric: str, group: str, repeats: str = "mean"
) -> "pd.DataFrame":
    """(steps, units) table of one group's curves, one column per seed (runs without a seed
    are their own unit), NaN where a unit has not reached the step. A seed run more than
    once is one unit: the mean of its runs per epoch, or its latest run (``repeats``)."""
    import pandas as pd

    members = [
        r for r in runs
        if r.group == group and metric in r.histories and not r.histories[metric].empty
    ]  # fmt: skip
    by_unit: dict[str, list[RunRecord]] = {}
    for run in sorted(members, key=lambda r: r.start_time):
        by_unit.setdefault(_unit(run), []).append(run)
    if not by_unit:
        return pd.DataFrame()
    series = {}
    for unit, repeated in by_unit.items():
        if repeats == "latest" or len(repeated) == 1:
            series[unit] = repeated[-1].histories[metric]
        else:
            series[unit] = pd.concat([r.histories[metric] for r in repeated], axis=1).mean(axis=1)
    return pd.concat(series, axis=1).sort_index()


def aggregate_curves(
    runs: Sequence[RunRecord],
    metrics: Iterable[str],
    order: Sequence[str],
    confidence: float = CONFIDENCE,
    bounds: dict[str, tuple[float, float]] | None = None,
    repeats: str = "mean",
) -> "pd.DataFrame":
    """Mean curve and pointwise t-interval per group and epoch, aligned by epoch.

    Args:
        runs: the grouped runs.
        metrics: per-epoch metric keys.
        order: groups to include, in order.
        confidence: interval coverage (pointwise: at each epoch on its own).
        bounds: metric -> range; its intervals are clipped to it (accuracy stays <= 1).
        repeats: ``mean`` or ``latest``: how a seed run more than once counts (one unit).

    Returns:
        Long format: metric, group, step, n (seeds), mean, std, ci_low, ci_high.
    """
    import pandas as pd

    rows = []
    for metric in metrics:
        limit = (bounds or {}).get(metric)
        for group in order:
            wide = _wide(runs, metric, group, repeats)
            for step, values in wide.iterrows():
                x = values.dropna().to_numpy(float)
                mean, std, low, high = t_interval(x, confidence, limit)
                rows.append([metric, group, int(step), x.size, mean, std, low, high])
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def _epoch_diffs(wide: "pd.DataFrame", base: "pd.DataFrame", confidence: float) -> list[list]:
    """Per-epoch differences of one group from the baseline (see :func:`diff_curves`)."""
    rows: list[list] = []
    for step in wide.index.intersection(base.index):
        a, b = wide.loc[step].dropna(), base.loc[step].dropna()
        if a.empty or b.empty:
            continue
        paired = (
            not any(str(c).startswith("run:") for c in [*a.index, *b.index])
            and set(a.index) == set(b.index)
            and a.size >= 2
        )
        if paired:
            diff, _, low, high = paired_test(
                a.to_numpy(float), b[a.index].to_numpy(float), confidence
            )
            rows.append([int(step), a.size, "paired t", diff, low, high])
        else:
            diff, _, low, high = welch_test(a.to_numpy(float), b.to_numpy(float), confidence)
            rows.append([int(step), min(a.size, b.size), "Welch t", diff, low, high])
    return rows


def _band(
    rows: list[list], wide: "pd.DataFrame", base: "pd.DataFrame", confidence: float
) -> tuple[list[float], list[float], str]:
    """Simultaneous band over the epochs of ``rows``: sup-t on the per-seed difference
    curves when every epoch is paired on the same seeds, else Bonferroni over the epochs."""
    steps = [r[0] for r in rows]
    seeds = [c for c in wide.columns if c in set(base.columns)]
    pairs = wide.loc[steps, seeds] - base.loc[steps, seeds]  # (epochs, seeds)
    complete = (
        all(r[2] == "paired t" for r in rows)
        and not pairs.isna().to_numpy().any()
        and len(seeds) >= 2
    )
    if not complete:  # each epoch's interval at level / epochs: valid for any dependence
        wider = 1.0 - (1.0 - confidence) / len(rows)
        at = {r[0]: r for r in _epoch_diffs(wide, base, wider)}
        return [at[s][4] for s in steps], [at[s][5] for s in steps], (
            f"Bonferroni over {len(steps)} epochs"
        )
    d = pairs.to_numpy(float).T  # (seeds, epochs)
    crit = sup_t_critical(d, confidence)
    se = d.std(axis=0, ddof=1) / math.sqrt(d.shape[0])  # (epochs,)
    means = d.mean(axis=0)
    return list(means - crit * se), list(means + crit * se), f"sup-t over {len(steps)} epochs"


def diff_curves(
    runs: Sequence[RunRecord],
    metric: str,
    order: Sequence[str],
    baseline: str | None,
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] | None = None,
    repeats: str = "mean",
    first_epoch: int = 1,
) -> "pd.DataFrame":
    """Each group minus the baseline per epoch >= ``first_epoch``, with two intervals.

    ``ci_low``/``ci_high`` are *pointwise* 95% intervals (each epoch on its own: over 20
    epochs of a null difference some epoch excludes 0 in about half the studies):
    the paired t-interval of the per-seed differences when the seeds match one to one,
    else Welch's. ``band_low``/``band_high`` are a *simultaneous* 95% band over all the
    epochs shown (it contains the whole true difference curve in 95% of studies): sup-t
    when paired, Bonferroni otherwise; ``band`` names the method. Intervals of a metric in
    ``bounds`` are clipped to the difference's range.

    Returns:
        Long format: metric, group, step, n (pairs, or seeds of the smaller group), test,
        diff, ci_low, ci_high, band_low, band_high, band.
    """
    import pandas as pd

    out: list[list] = []
    if baseline is None:
        return pd.DataFrame(out, columns=DIFF_COLUMNS)
    base = _wide(runs, metric, baseline, repeats)
    span = None if bounds is None else (bounds[0] - bounds[1], bounds[1] - bounds[0])
    for group in order:
        if group == baseline or base.empty:
            continue
        wide = _wide(runs, metric, group, repeats)
        rows = [r for r in _epoch_diffs(wide, base, confidence) if r[0] >= first_epoch]
        if not rows:
            continue
        lows, highs, method = _band(rows, wide, base, confidence)
        for row, band_low, band_high in zip(rows, lows, highs):
            step, n, test, diff, low, high = row
            cells = [low, high, band_low, band_high]
            if span is not None:
                cells = [min(max(c, span[0]), span[1]) if math.isfinite(c) else c for c in cells]
            out.append([metric, group, step, n, test, diff, *cells, method])
    return pd.DataFrame(out, columns=DIFF_COLUMNS)
