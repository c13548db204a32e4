"""Intervals of `ablate compare` beyond the t-interval: exact binomial, P(better), bootstrap,
and the simultaneous band over epochs. Plain numbers in, no MLflow, no pandas.

What each covers, measured by ``benchmarks/compare_coverage.py`` (n = 3, 5, 10 seeds):

* :func:`binomial_interval`: Clopper-Pearson for an accuracy measured on ``N`` test items.
  Used for a group whose runs all scored the same (no spread across seeds, so no
  t-interval): it states the test-sampling uncertainty, the part that is known.
* :func:`paired_prob_improvement`: P(a seed's run of the variant beats the baseline's run of
  the same seed), the share of seeds that improve, with a Clopper-Pearson interval (exact,
  never below nominal).
* :func:`prob_improvement`: the unpaired Mann-Whitney estimate; its percentile-bootstrap
  interval covers 88-92% at 5 runs per group, so only the estimate is reported.
* :func:`bca_diff_ci`: BCa bootstrap of a difference. It covers 77-93% at the 3-20 runs of
  an ablation, so it is computed only for unpaired groups from :data:`BOOTSTRAP_MIN_N` runs.
* :func:`sup_t_critical`: the critical value of a simultaneous (sup-t / max-t) band over
  epochs for per-seed difference curves: the 95% quantile of the largest |t| over epochs,
  simulated from the estimated correlation between epochs shrunk toward independence
  (weight 1/sqrt(n): with 3 seeds the estimated correlation has rank 2 and alone gives a
  band that under-covers), never above the Bonferroni value, which is valid for any
  correlation.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import TYPE_CHECKING, Sequence

from ablate.exceptions import ConfigError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CONFIDENCE",
    "BOOTSTRAP_MIN_N",
    "BOOTSTRAP_MIN_PAIRS",
    "binomial_interval",
    "paired_prob_improvement",
    "prob_improvement",
    "bca_diff_ci",
    "sup_t_critical",
]

CONFIDENCE = 0.95
# BCa covers less than nominal - 1 point below these sizes (benchmarks/compare_coverage.py:
# unpaired 80% at 3 vs 3, 92% at 10, 92.5% at 30, 93.9-95.2% at 50; paired 70% at 3 pairs,
# 90% at 10, 91.6% at 30, 93.4% at 50): unpaired from 50 seeds per group, paired never (the
# paired t-interval is exact for normal noise and covers 94.4-95.3% from 3 pairs).
BOOTSTRAP_MIN_N = 50
BOOTSTRAP_MIN_PAIRS: int | None = None
SUP_T_DRAWS = 2000  # simulated max-|t| draws per band (fixed generator seed)


def _array(values: Sequence[float]) -> "np.ndarray":
    import numpy as np

    return np.asarray(values, dtype=float)


def _clip(low: float, high: float, bounds: tuple[float, float] | None) -> tuple[float, float]:
    if bounds is None or not (math.isfinite(low) and math.isfinite(high)):
        return low, high
    return max(low, bounds[0]), min(high, bounds[1])


def _diff_bounds(bounds: tuple[float, float] | None) -> tuple[float, float] | None:
    """A difference of two values in [lo, hi] lies in [lo - hi, hi - lo]."""
    return None if bounds is None else (bounds[0] - bounds[1], bounds[1] - bounds[0])


def binomial_interval(
    successes: float, trials: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Clopper-Pearson interval of a proportion (``successes`` may be fractional: ties
    counted as halves); NaN without trials."""
    from scipy import special

    if trials <= 0 or not math.isfinite(successes):
        return math.nan, math.nan
    k = min(max(successes, 0.0), float(trials))
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if k <= 0 else float(special.betaincinv(k, trials - k + 1, tail))
    high = 1.0 if k >= trials else float(special.betaincinv(k + 1, trials - k, 1.0 - tail))
    return low, high


def paired_prob_improvement(
    diffs: Sequence[float], *, mode: str = "max", confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """Share of seeds whose variant run beats the baseline run of the same seed (ties
    count one half), with its Clopper-Pearson interval.

    Args:
        diffs: per-seed differences variant - baseline.
        mode: ``max`` (higher is better) or ``min``.
    """
    d = _array(diffs)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    if mode == "min":
        d = -d
    wins = float((d > 0).sum() + 0.5 * (d == 0).sum())
    low, high = binomial_interval(wins, int(d.size), confidence)
    return wins / d.size, low, high


def prob_improvement(a: Sequence[float], b: Sequence[float], *, mode: str = "max") -> float:
    """P(a run of ``a`` beats a run of ``b``), ties one half: the Mann-Whitney estimate over
    all ``len(a) * len(b)`` run pairs (Agarwal et al., 2021); 0.5 is no tendency either way.
    No interval: the percentile bootstrap under-covers at ablation sizes."""
    a, b = _array(a), _array(b)
    if a.size == 0 or b.size == 0:
        return math.nan
    if mode == "min":
        a, b = -a, -b
    wins = (a[:, None] > b[None, :]).mean()
    ties = (a[:, None] == b[None, :]).mean()
    return float(wins + 0.5 * ties)


def _rng_kwarg(seed: int) -> dict:
    """scipy >= 1.15 takes ``rng``; older versions only ``random_state``."""
    from scipy import stats

    params = inspect.signature(stats.bootstrap).parameters
    return {"rng": seed} if "rng" in params else {"random_state": seed}


def bca_diff_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    paired: bool = False,
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] | None = None,
    min_n: int | None = None,
) -> tuple[float, float]:
    """BCa bootstrap interval of mean(a) - mean(b) (of the mean of a - b when paired).

    NaN below ``min_n`` runs per group or pairs (default :data:`BOOTSTRAP_MIN_N`; paired:
    :data:`BOOTSTRAP_MIN_PAIRS`, None = never), where it under-covers, and without spread.
    """
    from scipy import stats

    a, b = _array(a), _array(b)
    if n_boot < 1:
        raise ConfigError(f"--bootstrap: must be >= 1 resamples, got {n_boot}")
    if paired:
        needed = BOOTSTRAP_MIN_PAIRS if min_n is None else min_n
        if needed is None or a.size < needed:
            return math.nan, math.nan
        data: tuple = (a - b,)

        def statistic(d, axis=-1):
            return d.mean(axis=axis)
    else:
        if min(a.size, b.size) < (BOOTSTRAP_MIN_N if min_n is None else min_n):
            return math.nan, math.nan
        data = (a, b)

        def statistic(x, y, axis=-1):
            return x.mean(axis=axis) - y.mean(axis=axis)

    if float(data[0].std()) == 0.0 and (paired or float(b.std()) == 0.0):
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples: reported as NaN below
        result = stats.bootstrap(
            data,
            statistic,
            n_resamples=n_boot,
            confidence_level=confidence,
            method="BCa",
            vectorized=True,
            **_rng_kwarg(seed),
        )
    low, high = (float(v) for v in result.confidence_interval)
    return _clip(low, high, _diff_bounds(bounds))


def sup_t_critical(
    diffs: "np.ndarray", confidence: float = CONFIDENCE, seed: int = 0
) -> float:
    """Critical value c of the simultaneous band mean_e ± c * se_e over the epochs.

    Args:
        diffs: (seeds, epochs) per-seed differences, complete (no NaN), seeds >= 2.
        confidence: simultaneous coverage over all epochs.
        seed: generator seed of the simulation (fixed: the same band every time).

    Returns:
        The critical value (NaN with fewer than 2 seeds); the plain t quantile for one
        epoch; never above the Bonferroni quantile.
    """
    import numpy as np
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    n, epochs = d.shape
    if n < 2 or epochs == 0:
        return math.nan
    df = n - 1
    bonferroni = float(stats.t.ppf(1 - (1 - confidence) / (2 * epochs), df))
    if epochs == 1:
        return bonferroni
    sd = d.std(axis=0, ddof=1)
    varying = sd > 0
    if varying.sum() < 2:
        return bonferroni
    corr = np.corrcoef(d[:, varying], rowvar=False)  # (k, k)
    weight = 1.0 - 1.0 / math.sqrt(n)
    corr = weight * corr + (1.0 - weight) * np.eye(corr.shape[0])
    chol = np.linalg.cholesky(corr)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((SUP_T_DRAWS, n, corr.shape[0])) @ chol.T  # (draws, n, k)
    t = np.abs(z.mean(axis=1) / (z.std(axis=1, ddof=1) / math.sqrt(n)))  # (draws, k)
    return min(float(np.quantile(t.max(axis=1), confidence)), bonferroni)
