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

from ablate.compare.select import RunRecord
from ablate.compare.stats import CONFIDENCE, paired_test, t_interval, welch_test

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CURVE_METRICS",
    "auc",
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
DIFF_COLUMNS = ["metric", "group", "step", "n", "test", "diff", "ci_low", "ci_high"]


def auc(history: "pd.Series") -> float:
    """Mean of a per-epoch curve over epochs >= 1 (NaN when only epoch 0 was logged)."""
    trained = history[history.index >= 1]
    return float(trained.mean()) if len(trained) else math.nan


def epochs_to_target(history: "pd.Series", target: float, mode: str) -> float:
    """First epoch whose value reaches ``target`` (>= for max, <= for min); NaN if never."""
    reached = history >= target if mode == "max" else history <= target
    hits = history.index[reached.to_numpy()]
    return float(hits[0]) if len(hits) else math.nan


def default_target(runs: Sequence[RunRecord], metric: str, mode: str) -> float | None:
    """The worst group's mean final value of the curve: a level every group reaches on
    average, so epochs-to-target compares speed. None without curves."""
    finals: dict[str, list[float]] = {}
    for run in runs:
        history = run.histories.get(metric)
        if history is not None and not history.empty:
            finals.setdefault(run.group, []).append(float(history.iloc[-1]))
    if not finals:
        return None
    means = [sum(v) / len(v) for v in finals.values()]
    return min(means) if mode == "max" else max(means)


def _wide(runs: Sequence[RunRecord], metric: str, group: str) -> "pd.DataFrame":
    """(steps, runs) table of one group's curves, columns named by seed (or run id), NaN
    where a run has not reached the step."""
    import pandas as pd

    series = {}
    for run in runs:
        history = run.histories.get(metric)
        if run.group == group and history is not None and not history.empty:
            series[run.seed if run.seed is not None else run.run_id] = history
    if len(series) < sum(1 for r in runs if r.group == group and metric in r.histories):
        # a seed repeated inside the group (pooled over another key): keep every run and
        # mark the columns unpairable
        series = {
            f"run:{r.run_id}": r.histories[metric]
            for r in runs
            if r.group == group and metric in r.histories and not r.histories[metric].empty
        }
    if not series:
        return pd.DataFrame()
    return pd.concat(series, axis=1).sort_index()


def aggregate_curves(
    runs: Sequence[RunRecord],
    metrics: Iterable[str],
    order: Sequence[str],
    confidence: float = CONFIDENCE,
    bounds: dict[str, tuple[float, float]] | None = None,
) -> "pd.DataFrame":
    """Mean curve and t-interval per group and epoch, aligned by epoch.

    Args:
        runs: the grouped runs.
        metrics: per-epoch metric keys.
        order: groups to include, in order.
        confidence: interval coverage.
        bounds: metric -> range; its intervals are clipped to it (accuracy stays <= 1).

    Returns:
        Long format: metric, group, step, n, mean, std, ci_low, ci_high.
    """
    import pandas as pd

    rows = []
    for metric in metrics:
        limit = (bounds or {}).get(metric)
        for group in order:
            wide = _wide(runs, metric, group)
            for step, values in wide.iterrows():
                x = values.dropna().to_numpy(float)
                mean, std, low, high = t_interval(x, confidence, limit)
                rows.append([metric, group, int(step), x.size, mean, std, low, high])
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def diff_curves(
    runs: Sequence[RunRecord],
    metric: str,
    order: Sequence[str],
    baseline: str | None,
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] | None = None,
) -> "pd.DataFrame":
    """Each group minus the baseline per epoch, with a 95% interval (empty without one).

    At each epoch the runs of both groups that reached it are used; when their seeds match
    one to one the interval is the paired t-interval of the per-seed differences, else
    Welch's. Intervals of a metric in ``bounds`` are clipped to the difference's range.

    Returns:
        Long format: metric, group, step, n (pairs, or runs of the smaller group), test
        (``paired t`` / ``Welch t``), diff, ci_low, ci_high.
    """
    import pandas as pd

    rows: list[list] = []
    if baseline is None:
        return pd.DataFrame(rows, columns=DIFF_COLUMNS)
    base = _wide(runs, metric, baseline)
    span = None if bounds is None else (bounds[0] - bounds[1], bounds[1] - bounds[0])
    for group in order:
        if group == baseline or base.empty:
            continue
        wide = _wide(runs, metric, group)
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
                n, test = a.size, "paired t"
            else:
                diff, _, low, high = welch_test(a.to_numpy(float), b.to_numpy(float), confidence)
                n, test = min(a.size, b.size), "Welch t"
            if span is not None and math.isfinite(low):
                low, high = max(low, span[0]), min(high, span[1])
            rows.append([metric, group, int(step), n, test, diff, low, high])
    return pd.DataFrame(rows, columns=DIFF_COLUMNS)
