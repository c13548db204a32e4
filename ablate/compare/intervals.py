"""Intervals beyond the t-interval: exact binomial, P(better), bootstrap. Plain numbers in.

What each covers, measured by ``benchmarks/compare_coverage.py`` (n = 3, 5, 10 seeds):

* :func:`binomial_interval`: Clopper-Pearson for a proportion of N items (exact, never
  below nominal). For a group whose seeds all scored the same accuracy it is the one
  interval shown: it covers the accuracy these trained models have on the population the N
  test images were drawn from (the test-sampling uncertainty, the part that is known).
* :func:`paired_prob_improvement`: the share of seeds whose run of the variant beats the
  baseline's run of the same seed, with its Clopper-Pearson interval.
* :func:`prob_improvement`: the unpaired Mann-Whitney estimate; its percentile-bootstrap
  interval covers 88-92% at 5 runs per group, so only the estimate is shown.
* :func:`bca_diff_ci`: BCa bootstrap of an unpaired difference; it covers 77-93% at the 3-20
  runs of an ablation, so it is computed only from :data:`BOOTSTRAP_MIN_N` runs per group
  (paired: never; the paired t-interval is exact for normal noise from 3 pairs).
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, Callable, Sequence

__all__ = ["CONFIDENCE", "BOOTSTRAP_MIN_N", "clip", "binomial_interval", "paired_prob_improvement",
           "prob_improvement", "bca_diff_ci"]  # fmt: skip

CONFIDENCE = 0.95
# BCa covers within 1 point of 95% only from here (unpaired: 80% at 3 vs 3, 92% at 10,
# 92.5% at 30, 93.9-95.2% at 50).
BOOTSTRAP_MIN_N = 50


def clip(low: float, high: float, bounds: tuple[float, float] | None) -> tuple[float, float]:
    if bounds is None or not (math.isfinite(low) and math.isfinite(high)):
        return low, high
    return max(low, bounds[0]), min(high, bounds[1])


def rng_kwarg(function: Callable, seed: int) -> dict[str, Any]:
    """scipy >= 1.15 takes ``rng``, older versions only ``random_state``."""
    return {"rng" if "rng" in inspect.signature(function).parameters else "random_state": seed}


def binomial_interval(
    successes: float, trials: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Clopper-Pearson interval of a proportion (``successes`` may be fractional: ties
    counted as halves); NaN without trials."""
    from scipy import special

    if trials <= 0 or not math.isfinite(successes):
        return math.nan, math.nan
    k, tail = min(max(successes, 0.0), float(trials)), (1.0 - confidence) / 2.0
    low = 0.0 if k <= 0 else float(special.betaincinv(k, trials - k + 1, tail))
    high = 1.0 if k >= trials else float(special.betaincinv(k + 1, trials - k, 1.0 - tail))
    return low, high


def paired_prob_improvement(
    diffs: Sequence[float], *, mode: str = "max", confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(share of seeds that improve, ties one half; its Clopper-Pearson interval) from
    per-seed differences variant - baseline (ties are exact zeros: snap them first)."""
    import numpy as np

    d = np.asarray(diffs, dtype=float) * (-1.0 if mode == "min" else 1.0)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    wins = float((d > 0).sum() + 0.5 * (d == 0).sum())
    return (wins / d.size, *binomial_interval(wins, int(d.size), confidence))


def prob_improvement(a: Sequence[float], b: Sequence[float], *, mode: str = "max") -> float:
    """P(a run of ``a`` beats a run of ``b``), ties one half, over all run pairs: the
    Mann-Whitney estimate (Agarwal et al., 2021); 0.5 is no tendency either way."""
    import numpy as np

    sign = -1.0 if mode == "min" else 1.0
    a, b = sign * np.asarray(a, dtype=float), sign * np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        return math.nan
    return float((a[:, None] > b[None, :]).mean() + 0.5 * (a[:, None] == b[None, :]).mean())


def bca_diff_ci(
    a: Sequence[float], b: Sequence[float], *, n_boot: int = 10_000, seed: int = 0,
    confidence: float = CONFIDENCE, bounds: tuple[float, float] | None = None,
    min_n: int = BOOTSTRAP_MIN_N,
) -> tuple[float, float]:  # fmt: skip
    """BCa bootstrap interval of mean(a) - mean(b); NaN below ``min_n`` runs per group
    (where it under-covers) and without spread."""
    import numpy as np
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(a.size, b.size) < min_n or (a.std() == 0 and b.std() == 0):
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples: NaN below
        result = stats.bootstrap(
            (a, b), lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis),
            n_resamples=n_boot, confidence_level=confidence, method="BCa", vectorized=True,
            **rng_kwarg(stats.bootstrap, seed),
        )  # fmt: skip
    low, high = (float(v) for v in result.confidence_interval)
    span = None if bounds is None else (bounds[0] - bounds[1], bounds[1] - bounds[0])
    return clip(low, high, span)
