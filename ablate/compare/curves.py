"""Learning curves: per-epoch aggregation, curve metrics, differences per epoch.

Curves are aligned by epoch (step = epoch): the value at epoch ``e`` averages the runs that
reached ``e``, and ``n`` says how many. Two numbers summarise a run's curve besides its end:

* ``auc``: the mean of the validation curve over epochs 1..E, the area under the curve
  divided by its length (epoch 0, the same untrained model for every variant of a seed,
  would only dilute it). It rewards learning fast as well as ending well; it is comparable
  only over the same epochs, so every run is cut to the epochs all compared runs have.
* ``epochs_to_target``: the first epoch whose value reaches a target.

:func:`diff_curves` gives each group's difference from the baseline per epoch with a
pointwise 95% interval and a simultaneous 95% band over all epochs shown.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Sequence

from ablate.compare.select import RunRecord
from ablate.compare.stats import CONFIDENCE, paired_test, t_interval, welch_test
from ablate.tracking import conventions as cv

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["CURVE_METRICS", "auc", "shortest_curve", "median_censored", "epochs_to_target",
           "default_target", "aggregate_curves", "diff_curves", "sup_t_critical"]  # fmt: skip

# Drawn for every comparison (a metric no run has is skipped). loss/train is the training
# objective (label smoothing, MixUp/CutMix): its own figure, never on the loss/val axis.
CURVE_METRICS = (cv.VAL_ACC, cv.VAL_LOSS, cv.TRAIN_LOSS, cv.ALPHA)
CURVE_COLUMNS = ["metric", "group", "step", "n", "mean", "std", "ci_low", "ci_high"]
DIFF_COLUMNS = [
    "metric", "group", "step", "n", "test", "diff", "ci_low", "ci_high", "band_low",
    "band_high", "band",
]  # fmt: skip
SUP_T_DRAWS = 2000  # simulated max-|t| draws per band (fixed generator seed)


def _trained(history: "pd.Series", last: int | None) -> "pd.Series":
    """Epochs 1..last (epoch 0 is the untrained or pretrained start)."""
    return history[(history.index >= 1) & (history.index <= (math.inf if last is None else last))]


def auc(history: "pd.Series", last: int | None = None) -> float:
    """Mean of a curve over epochs 1..``last`` (default: all); NaN without any."""
    trained = _trained(history, last)
    return float(trained.mean()) if len(trained) else math.nan


def epochs_to_target(
    history: "pd.Series", target: float, mode: str, last: int | None = None
) -> float:
    """The first epoch >= 1 (and <= ``last``) whose value reaches ``target`` (>= for max, <=
    for min); ``inf`` if none did (censored within the epochs looked at)."""
    trained = _trained(history, last)
    hits = trained.index[(trained >= target if mode == "max" else trained <= target).to_numpy()]
    return float(hits[0]) if len(hits) else math.inf


def shortest_curve(runs: Sequence[RunRecord], metric: str) -> tuple[int | None, RunRecord | None]:
    """The last epoch every run with a ``metric`` curve reached, and the run that set it."""
    ends = [(int(r.histories[metric].index[-1]), r) for r in runs
            if metric in r.histories and len(r.histories[metric])]  # fmt: skip
    return min(ends, key=lambda e: e[0]) if ends else (None, None)


def median_censored(values: Sequence[float]) -> float:
    """Median epochs-to-target where ``inf`` marks a run that never reached it; NaN when the
    median itself is censored (half or more never did)."""
    import numpy as np

    x = np.sort(np.asarray(values, dtype=float))
    if x.size == 0 or np.isinf(x[x.size // 2]):
        return math.nan
    return float(np.median(x))


def default_target(
    runs: Sequence[RunRecord], metric: str, mode: str, last: int | None = None
) -> float | None:
    """The worst group's mean value at epoch ``last`` (or its end), rounded toward easier
    to 3 significant digits: a level every group reaches on average, so epochs-to-target
    compares speed. None without curves."""
    finals: dict[str, list[float]] = {}
    for run in runs:
        history = run.histories.get(metric)
        upto = history[history.index <= (math.inf if last is None else last)] if (
            history is not None) else ()  # fmt: skip
        if len(upto):
            finals.setdefault(run.group, []).append(float(upto.iloc[-1]))
    if not finals:
        return None
    means = [sum(v) / len(v) for v in finals.values()]
    worst = min(means) if mode == "max" else max(means)
    if worst == 0 or not math.isfinite(worst):
        return worst
    factor = 10.0 ** (3 if abs(worst) < 1 else 2 - int(math.floor(math.log10(abs(worst)))))
    return (math.floor if mode == "max" else math.ceil)(worst * factor) / factor


def _unit(run: RunRecord) -> str:
    return str(run.seed) if run.seed is not None else f"run:{run.run_id}"


def _wide(runs: Sequence[RunRecord], metric: str, group: str, repeats: str) -> "pd.DataFrame":
    """(steps, units) curves of one group, one column per seed (a run without a seed is its
    own unit), NaN where a unit has not reached the step; a seed run more than once is the
    mean of its runs per epoch, or its latest run (``repeats``)."""
    import pandas as pd

    by_unit: dict[str, list[RunRecord]] = {}
    for run in sorted(runs, key=lambda r: r.start_time):
        if run.group == group and len(run.histories.get(metric, ())):
            by_unit.setdefault(_unit(run), []).append(run)
    if not by_unit:
        return pd.DataFrame()
    series = {
        unit: (rs[-1].histories[metric] if repeats == "latest" or len(rs) == 1 else
               pd.concat([r.histories[metric] for r in rs], axis=1).mean(axis=1))
        for unit, rs in by_unit.items()
    }  # fmt: skip
    return pd.concat(series, axis=1).sort_index()


def aggregate_curves(
    runs: Sequence[RunRecord], metrics: Iterable[str], order: Sequence[str],
    bounds: dict[str, tuple[float, float]] | None = None, repeats: str = "mean",
    confidence: float = CONFIDENCE,
) -> "pd.DataFrame":  # fmt: skip
    """Mean curve and pointwise t-interval (clipped to the metric's ``bounds``) per group and
    epoch: metric, group, step, n (seeds), mean, std, ci_low, ci_high."""
    import pandas as pd

    rows = []
    for metric in metrics:
        for group in order:
            for step, values in _wide(runs, metric, group, repeats).iterrows():
                x = values.dropna().to_numpy(float)
                stats = t_interval(x, confidence, (bounds or {}).get(metric))
                rows.append([metric, group, int(step), x.size, *stats])
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def _epoch_diffs(wide: "pd.DataFrame", base: "pd.DataFrame", confidence: float) -> list[list]:
    """[step, n, test, diff, low, high] per common epoch: the paired t-interval when both
    groups have the same seeds there, Welch's otherwise."""
    rows: list[list] = []
    for step in wide.index.intersection(base.index):
        a, b = wide.loc[step].dropna(), base.loc[step].dropna()
        if a.empty or b.empty:
            continue
        seeded = not any(str(c).startswith("run:") for c in [*a.index, *b.index])
        if seeded and set(a.index) == set(b.index) and a.size >= 2:
            diff, _, low, high = paired_test(
                a.to_numpy(float), b[a.index].to_numpy(float), confidence
            )
            rows.append([int(step), a.size, "paired t", diff, low, high])
        else:
            diff, _, low, high = welch_test(a.to_numpy(float), b.to_numpy(float), confidence)
            rows.append([int(step), min(a.size, b.size), "Welch t", diff, low, high])
    return rows


def sup_t_critical(diffs: "np.ndarray", confidence: float = CONFIDENCE, seed: int = 0) -> float:
    """Critical value c of the simultaneous band mean_e ± c·se_e over the epochs of
    (seeds, epochs) per-seed difference curves: the 95% quantile of the largest |t| over
    epochs, simulated from the epochs' estimated correlation shrunk toward independence
    (weight 1/sqrt(n): with 3 seeds the estimate has rank 2 and alone under-covers), never
    above the Bonferroni value, which is valid for any correlation. NaN below 2 seeds."""
    import numpy as np
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    n, epochs = d.shape
    if n < 2 or epochs == 0:
        return math.nan
    bonferroni = float(stats.t.ppf(1 - (1 - confidence) / (2 * epochs), n - 1))
    varying = d.std(axis=0, ddof=1) > 0
    if epochs == 1 or varying.sum() < 2:
        return bonferroni
    weight = 1.0 - 1.0 / math.sqrt(n)
    corr = weight * np.corrcoef(d[:, varying], rowvar=False) + (1 - weight) * np.eye(varying.sum())
    z = np.random.default_rng(seed).standard_normal((SUP_T_DRAWS, n, len(corr)))
    z = z @ np.linalg.cholesky(corr).T  # (draws, n, epochs)
    t = np.abs(z.mean(axis=1) / (z.std(axis=1, ddof=1) / math.sqrt(n)))
    return min(float(np.quantile(t.max(axis=1), confidence)), bonferroni)


def _band(rows: list[list], wide, base, confidence: float) -> tuple[list, list, str]:
    """The simultaneous band over the epochs of ``rows``: sup-t on the per-seed difference
    curves when every epoch pairs the same seeds, else Bonferroni over the epochs."""
    steps = [r[0] for r in rows]
    seeds = [c for c in wide.columns if c in set(base.columns)]
    pairs = wide.loc[steps, seeds] - base.loc[steps, seeds]  # (epochs, seeds)
    if not (all(r[2] == "paired t" for r in rows) and len(seeds) >= 2
            and not pairs.isna().to_numpy().any()):  # fmt: skip
        at = {r[0]: r for r in _epoch_diffs(wide, base, 1 - (1 - confidence) / len(rows))}
        return [at[s][4] for s in steps], [at[s][5] for s in steps], (
            f"Bonferroni over {len(steps)} epochs")  # fmt: skip
    d = pairs.to_numpy(float).T  # (seeds, epochs)
    half = sup_t_critical(d, confidence) * d.std(axis=0, ddof=1) / math.sqrt(d.shape[0])
    mean = d.mean(axis=0)
    return list(mean - half), list(mean + half), f"sup-t over {len(steps)} epochs"


def diff_curves(
    runs: Sequence[RunRecord], metric: str, order: Sequence[str], baseline: str | None,
    bounds: tuple[float, float] | None = None, repeats: str = "mean",
    confidence: float = CONFIDENCE,
) -> "pd.DataFrame":  # fmt: skip
    """Each group minus the baseline per epoch >= 1, with two intervals: ``ci_*`` pointwise
    (each epoch alone: over 20 null epochs some epoch excludes 0 in about half the
    studies), ``band_*`` simultaneous over all epochs shown (it holds the whole difference
    curve in 95% of studies; ``band`` names the method). Clipped to the difference's range
    for a metric in ``bounds``. Columns: :data:`DIFF_COLUMNS`."""
    import pandas as pd

    out: list[list] = []
    base = _wide(runs, metric, baseline, repeats) if baseline is not None else pd.DataFrame()
    span = None if bounds is None else bounds[0] - bounds[1]
    for group in order:
        if group == baseline or base.empty:
            continue
        wide = _wide(runs, metric, group, repeats)
        rows = [r for r in _epoch_diffs(wide, base, confidence) if r[0] >= 1]
        if not rows:
            continue
        lows, highs, method = _band(rows, wide, base, confidence)
        for row, low, high in zip(rows, lows, highs):
            cells = [*row[4:], low, high]
            if span is not None:
                cells = [min(max(c, span), -span) if math.isfinite(c) else c for c in cells]
            out.append([metric, group, *row[:4], *cells, method])
    return pd.DataFrame(out, columns=DIFF_COLUMNS)
