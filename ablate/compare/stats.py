"""Statistics on plain numbers for `ablate compare`: no MLflow, no pandas.

The design this fits: every group (an attention variant, say) is trained with the same
seeds, and a seed fixes the data split, the initial weights and the data order. Runs of two
groups with the same seed are therefore *paired*, and the per-seed difference removes the
seed's share of the noise. :func:`compare_to_baseline` uses a paired t-test when the two
groups have exactly the same seeds and Welch's t-test otherwise, and says which.

Choices, and the simulations in ``tests/compare/test_stats.py`` that back them:

* Intervals on a mean and on a difference are t-intervals (exact under normal noise, the
  right width at 3-5 seeds). A metric bounded to [0, 1] (accuracy, F1, ...) gets its
  interval clipped to [0, 1], its difference to [-1, 1]: the true value lies inside the
  bounds, so clipping never lowers coverage and never reports an impossible accuracy.
* Several variants tested against one baseline form one family; Holm's step-down keeps
  the chance of any false "significant" at or below the level (0.05).
* The BCa bootstrap (``scipy.stats.bootstrap``) is reported only from
  :data:`BOOTSTRAP_MIN_N` runs per group (:data:`BOOTSTRAP_MIN_PAIRS` pairs): below that it
  under-covers badly (about 77% for a nominal 95% at 3 vs 3).
* The probability of improvement P(variant better than baseline) is the Mann-Whitney
  estimate over all run pairs (Agarwal et al., 2021, "Deep RL at the edge of the
  statistical precipice"), with a percentile bootstrap interval.
* The minimal detectable difference is the true difference the test used would detect with
  80% power at the seeds at hand, from the noncentral t distribution, at the level Holm
  demands of a lone real effect (0.05 / number of comparisons).
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from ablate.compare.power import LEVEL, POWER, min_detectable_diff, seeds_needed
from ablate.exceptions import ConfigError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CONFIDENCE",
    "LEVEL",
    "POWER",
    "BOOTSTRAP_MIN_N",
    "BOOTSTRAP_MIN_PAIRS",
    "PAIRING_CHOICES",
    "Comparison",
    "t_interval",
    "welch_test",
    "paired_test",
    "holm",
    "bca_diff_ci",
    "prob_improvement",
    "compare_to_baseline",
    "compare_groups",
]

CONFIDENCE = 0.95
# Below these sizes the BCa bootstrap covers far less than its nominal 95% (simulated in
# tests/compare/test_stats.py: 3 vs 3 about 77%, 10 vs 10 about 93%; paired: 5 pairs about
# 80%, 20 pairs about 93%), so only the exact t-interval is reported there.
BOOTSTRAP_MIN_N = 10
BOOTSTRAP_MIN_PAIRS = 20
PAIRING_CHOICES = ("auto", "paired", "welch")


@dataclass
class Comparison:
    """One group against the baseline. Differences are group - baseline.

    ``test`` names the test actually used: ``"paired t"`` (seeds matched one to one) or
    ``"Welch t"``; ``n_pairs`` is the number of matched seeds (0 for Welch). NaN marks what
    could not be computed (fewer than 2 runs, no spread, bootstrap below its minimum size).
    """

    diff: float
    ci_low: float
    ci_high: float
    test: str
    n_pairs: int
    p_value: float
    p_holm: float = math.nan
    significant: bool = False
    boot_low: float = math.nan
    boot_high: float = math.nan
    p_improve: float = math.nan
    p_improve_low: float = math.nan
    p_improve_high: float = math.nan
    mde: float = math.nan
    seeds_needed: float = math.nan
    reason: str = ""  # why a test could not be made (empty when it was)


# --------------------------------------------------------------------------------------
# intervals and tests
# --------------------------------------------------------------------------------------
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


def t_interval(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] | None = None,
) -> tuple[float, float, float, float]:
    """Mean, sample std (ddof=1) and the t-interval on the mean, clipped to ``bounds``.

    Args:
        values: one number per run.
        confidence: two-sided coverage of the interval.
        bounds: the metric's range, e.g. ``(0, 1)`` for accuracy; None for unbounded.

    Returns:
        ``(mean, std, low, high)``; std and the interval are NaN when n < 2.
    """
    from scipy import stats

    x = _array(values)
    n = x.size
    if n == 0:
        return (math.nan,) * 4
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    low, high = _clip(mean - half, mean + half, bounds)
    return mean, std, low, high


def _welch_se_df(a: "np.ndarray", b: "np.ndarray") -> tuple[float, float]:
    """Standard error of mean(a) - mean(b) and the Welch-Satterthwaite degrees of freedom."""
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        return 0.0, math.nan
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return se, float(df)


def _t_test(diff: float, se: float, df: float, confidence: float) -> tuple[float, float, float]:
    """Two-sided p-value and t-interval of ``diff``; NaN p (and a point interval) at se 0."""
    from scipy import stats

    if se == 0.0 or not math.isfinite(df):
        return math.nan, diff, diff
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return p, diff - half, diff + half


def welch_test(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float, float]:
    """Welch's t-test of mean(a) - mean(b).

    Returns:
        ``(diff, p, ci_low, ci_high)``; p and the interval are NaN when a group has n < 2,
        p is NaN when neither group has any spread.
    """
    a, b = _array(a), _array(b)
    if a.size == 0 or b.size == 0:
        return (math.nan,) * 4
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return diff, math.nan, math.nan, math.nan
    se, df = _welch_se_df(a, b)
    p, low, high = _t_test(diff, se, df, confidence)
    return diff, p, low, high


def paired_test(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float, float]:
    """Paired t-test of a - b (``a[i]`` and ``b[i]`` share a seed).

    Returns:
        ``(mean difference, p, ci_low, ci_high)``; NaN where fewer than 2 pairs.
    """
    d = _array(a) - _array(b)
    if d.size == 0:
        return (math.nan,) * 4
    diff = float(d.mean())
    if d.size < 2:
        return diff, math.nan, math.nan, math.nan
    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    p, low, high = _t_test(diff, se, float(d.size - 1), confidence)
    return diff, p, low, high


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (NaN entries stay NaN and are not counted).

    Rejecting where the adjusted p < level keeps the family-wise error rate at the level
    for any dependence between the tests.
    """
    finite = [(p, i) for i, p in enumerate(p_values) if math.isfinite(p)]
    adjusted = [math.nan] * len(p_values)
    m = len(finite)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (m - rank) * p))  # step-down stays monotone
        adjusted[i] = running
    return adjusted


# --------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------
def _rng_kwarg(seed: int) -> dict:
    """scipy >= 1.15 takes ``rng``; older versions only ``random_state``."""
    from scipy import stats

    params = inspect.signature(stats.bootstrap).parameters
    return {"rng": seed} if "rng" in params else {"random_state": seed}


def _mean_diff(a: "np.ndarray", b: "np.ndarray", axis: int = -1) -> "np.ndarray":
    return a.mean(axis=axis) - b.mean(axis=axis)


def bca_diff_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    paired: bool = False,
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """BCa bootstrap interval of mean(a) - mean(b) (of the mean of a - b when paired).

    NaN below :data:`BOOTSTRAP_MIN_N` runs per group (:data:`BOOTSTRAP_MIN_PAIRS` pairs),
    where its coverage is poor, and when the data are degenerate (no spread).

    Args:
        a, b: one value per run; with ``paired`` equal length, ``a[i]`` paired to ``b[i]``.
        paired: resample seeds (pairs) instead of each group independently.
        n_boot: resamples; seed: generator seed (fixed: the same table every time).
        confidence: two-sided coverage.
        bounds: range of one value (the difference is clipped to the matching range).
    """
    from scipy import stats

    a, b = _array(a), _array(b)
    if n_boot < 1:
        raise ConfigError(f"--bootstrap: must be >= 1 resamples, got {n_boot}")
    if paired:
        if a.size < BOOTSTRAP_MIN_PAIRS:
            return math.nan, math.nan
        data: tuple = (a - b,)

        def statistic(d, axis=-1):
            return d.mean(axis=axis)
    else:
        if min(a.size, b.size) < BOOTSTRAP_MIN_N:
            return math.nan, math.nan
        data, statistic = (a, b), _mean_diff
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


def prob_improvement(
    a: Sequence[float],
    b: Sequence[float],
    *,
    mode: str = "max",
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """P(a run of ``a`` beats a run of ``b``), ties counting one half, with a bootstrap CI.

    The Mann-Whitney estimate over all ``len(a) * len(b)`` run pairs; 0.5 means no
    tendency either way. The interval is a percentile bootstrap resampling each group
    (with 3-5 runs per group it moves in coarse steps; read it as a rough range).

    Args:
        a, b: one value per run of the variant and of the baseline.
        mode: ``max`` (higher is better) or ``min``.
        n_boot: resamples (0: point estimate only); seed: generator seed.
        confidence: two-sided coverage.

    Returns:
        ``(p, ci_low, ci_high)``.
    """
    import numpy as np
    from scipy import stats

    a, b = _array(a), _array(b)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan, math.nan
    if mode == "min":
        a, b = -a, -b

    def statistic(x, y, axis=-1):
        x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
        wins = (x[..., :, None] > y[..., None, :]).mean(axis=(-1, -2))
        ties = (x[..., :, None] == y[..., None, :]).mean(axis=(-1, -2))
        return wins + 0.5 * ties

    p = float(statistic(a, b))
    if n_boot < 1 or a.size < 2 or b.size < 2:
        return p, math.nan, math.nan
    result = stats.bootstrap(
        (a, b),
        statistic,
        n_resamples=n_boot,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        **_rng_kwarg(seed),
    )
    low, high = (float(v) for v in result.confidence_interval)
    return p, low, high


# --------------------------------------------------------------------------------------
# a group against the baseline, and a family of groups
# --------------------------------------------------------------------------------------
def _pairs(
    seeds: Sequence[object], base_seeds: Sequence[object]
) -> tuple[list[int], list[int]] | None:
    """Indices of runs matched by seed, or None when a seed is unknown or repeated."""
    if any(s is None for s in [*seeds, *base_seeds]):
        return None
    if len(set(seeds)) != len(seeds) or len(set(base_seeds)) != len(base_seeds):
        return None
    where = {s: i for i, s in enumerate(base_seeds)}
    common = [s for s in seeds if s in where]
    return [list(seeds).index(s) for s in common], [where[s] for s in common]


def compare_to_baseline(
    values: Sequence[float],
    seeds: Sequence[object],
    base_values: Sequence[float],
    base_seeds: Sequence[object],
    *,
    mode: str = "max",
    pairing: str = "auto",
    bounds: tuple[float, float] | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    level: float = LEVEL,
) -> Comparison:
    """Difference of one group from the baseline: interval, test, bootstrap, P(better), MDE.

    Args:
        values, seeds: the group's runs (one value and one seed each; None = unknown seed).
        base_values, base_seeds: the baseline's runs.
        mode: ``max`` / ``min``: which direction counts as an improvement.
        pairing: ``auto`` (paired t-test when both groups have exactly the same seeds, each
            once; Welch otherwise), ``paired`` (the runs whose seeds match; needs >= 2
            pairs) or ``welch``.
        bounds: range of one value (e.g. (0, 1)); intervals are clipped to it.
        n_boot: bootstrap resamples (0 skips the bootstraps); seed: their generator seed.
        confidence: interval coverage.
        level: significance level the MDE is computed for (the caller passes the level a
            lone true effect must reach after the multiple-comparison correction).
    """
    if pairing not in PAIRING_CHOICES:
        raise ConfigError(
            f"--pairing: {pairing!r} is not valid; choose one of {', '.join(PAIRING_CHOICES)}"
        )
    a, b = _array(values), _array(base_values)
    if a.size == 0 or b.size == 0:
        return Comparison(math.nan, math.nan, math.nan, "none", 0, math.nan, reason="no values")
    matched = _pairs(list(seeds), list(base_seeds))
    same_seeds = matched is not None and len(matched[0]) == a.size == b.size
    use_paired = pairing == "paired" or (pairing == "auto" and same_seeds and a.size >= 2)
    reason = ""
    if use_paired:
        if matched is None or len(matched[0]) < 2:
            n = 0 if matched is None else len(matched[0])
            return Comparison(
                diff=float(a.mean() - b.mean()),
                ci_low=math.nan,
                ci_high=math.nan,
                test="paired t",
                n_pairs=n,
                p_value=math.nan,
                reason=f"{n} seed(s) shared with the baseline; a paired test needs 2",
            )
        ia, ib = matched
        a_used, b_used = a[ia], b[ib]
        diff, p, low, high = paired_test(a_used, b_used, confidence)
        d_std = float((a_used - b_used).std(ddof=1))
        se, df = d_std / math.sqrt(a_used.size), float(a_used.size - 1)
        test, n_pairs = "paired t", a_used.size
        needed = seeds_needed(diff, 0.0, 0.0, paired_std=d_std, level=level)
    else:
        a_used, b_used = a, b
        diff, p, low, high = welch_test(a, b, confidence)
        test, n_pairs = "Welch t", 0
        if a.size < 2 or b.size < 2:
            se, df, needed = math.nan, math.nan, math.nan
            reason = "a group has fewer than 2 runs"
        else:
            se, df = _welch_se_df(a, b)
            needed = seeds_needed(diff, float(a.std(ddof=1)), float(b.std(ddof=1)), level=level)
    boot = (math.nan, math.nan)
    if n_boot >= 1:
        boot = bca_diff_ci(
            a_used, b_used, paired=use_paired, n_boot=n_boot, seed=seed, bounds=bounds
        )
    if math.isfinite(se) and se == 0.0:
        reason = reason or "no spread in either group"
    low, high = _clip(low, high, _diff_bounds(bounds))
    p_imp = prob_improvement(a, b, mode=mode, n_boot=n_boot, seed=seed, confidence=confidence)
    return Comparison(
        diff=diff,
        ci_low=low,
        ci_high=high,
        test=test,
        n_pairs=int(n_pairs),
        p_value=p,
        boot_low=boot[0],
        boot_high=boot[1],
        p_improve=p_imp[0],
        p_improve_low=p_imp[1],
        p_improve_high=p_imp[2],
        mde=min_detectable_diff(se, df, level) if math.isfinite(se) else math.nan,
        seeds_needed=needed,
        reason=reason,
    )


def compare_groups(
    groups: Mapping[str, tuple[Sequence[float], Sequence[object]]],
    baseline: str,
    *,
    level: float = LEVEL,
    **kwargs: object,
) -> dict[str, Comparison]:
    """Every group against ``baseline``, Holm-corrected as one family.

    ``significant`` is set where the Holm-adjusted p < ``level``. The MDE is computed at
    ``level / m`` for m comparisons: the level Holm requires of a lone true effect.

    Args:
        groups: group -> (values, seeds); must contain ``baseline``.
        baseline: the reference group.
        level: family-wise significance level.
        **kwargs: passed to :func:`compare_to_baseline` (mode, pairing, bounds, n_boot, ...).
    """
    if baseline not in groups:
        raise ConfigError(f"baseline {baseline!r} is not one of: {', '.join(groups)}")
    base_values, base_seeds = groups[baseline]
    others = [g for g in groups if g != baseline]
    m = max(len(others), 1)
    out = {
        g: compare_to_baseline(
            groups[g][0], groups[g][1], base_values, base_seeds, level=level / m, **kwargs
        )
        for g in others
    }
    adjusted = holm([out[g].p_value for g in others])
    for g, p_adj in zip(others, adjusted):
        out[g].p_holm = p_adj
        out[g].significant = bool(math.isfinite(p_adj) and p_adj < level)
    return out
