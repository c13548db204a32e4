"""Tests and intervals on plain numbers for `ablate compare`: no MLflow, no pandas.

The design this fits: every group (an attention variant, say) is trained with the same
seeds, and a seed fixes the data split, the initial weights and the data order. Runs of two
groups with the same seed are *paired*: the per-seed difference removes the seed's share
of the noise. Measured in ``benchmarks/compare_null.py`` and ``compare_coverage.py``:

* Intervals on a mean and on a difference are t-intervals (exact under normal noise, the
  right width at 3-5 seeds), clipped to the metric's range ([0, 1] for an accuracy): the
  truth lies inside, so clipping never lowers coverage.
* Pairing: on the seeds both groups have, when they have the same seeds, or share at least
  3 and half of the larger group's; a group that lost a seed keeps its pairs ("paired t (4
  of 5 pairs)": 48% power for a 1-point effect where Welch over all seeds has 3-41%).
* Ties are decided at the metric's resolution (:func:`tie_tolerance`): an accuracy on N
  test items moves in steps of 1/N, and values logged in float32 differ in the 8th digit.
  Identical numbers never get a p-value below 1. Without spread there is no t-test: per-seed
  differences that are all equal get the exact sign test; a group without spread against
  another gets the exact permutation test (Welch's t would take that group's variance as
  0). Their intervals are undefined, never zero-width.
* Every comparison of one invocation forms one family: Holm's step-down keeps the chance of
  any false star at or below 0.05.
* The minimal detectable difference (MDE) is the true difference the t-test used detects
  with 80% power at these seeds (noncentral t), at the level Holm asks of a lone real
  effect (0.05 / number of comparisons).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from ablate.compare import intervals as iv
from ablate.compare.intervals import CONFIDENCE, clip
from ablate.exceptions import ConfigError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CONFIDENCE", "LEVEL", "POWER", "PAIRING_CHOICES", "Comparison", "tie_tolerance",
           "snap", "t_interval", "welch_test", "paired_test", "sign_test", "permutation_test",
           "holm", "holm_family", "t_power", "min_detectable_diff", "compare_to_baseline",
           "compare_groups"]  # fmt: skip

LEVEL = 0.05  # family-wise significance level
POWER = 0.80
PAIRING_CHOICES = ("auto", "paired", "welch")
PERMUTATIONS = 9999  # random relabelings when the exact test would enumerate more


@dataclass
class Comparison:
    """One group against the baseline; differences are group - baseline. ``test`` names the
    test used; ``n_pairs`` the seeds paired, of ``n_units`` seeds in either group. NaN marks
    what could not be computed, and ``reason`` says why."""

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
    reason: str = ""
    n_units: int = 0


def _array(values: Sequence[float]) -> "np.ndarray":
    import numpy as np

    return np.asarray(values, dtype=float)


def tie_tolerance(values: Sequence[float], resolution: float | None = None) -> float:
    """Numbers closer than this are one number: a tenth of the metric's resolution (1/N for
    an accuracy on N items), else a millionth of their magnitude (float32 noise is 6e-8)."""
    if resolution:
        return 0.1 * resolution
    x = _array(values)
    return 1e-6 * max(1.0, float(abs(x).max()) if x.size else 1.0)


def snap(values: Sequence[float], tol: float) -> "np.ndarray":
    """Values in units of ``tol``, rounded: equal numbers become equal integers."""
    import numpy as np

    return np.round(_array(values) / tol)


def t_interval(
    values: Sequence[float], confidence: float = CONFIDENCE,
    bounds: tuple[float, float] | None = None,
) -> tuple[float, float, float, float]:  # fmt: skip
    """(mean, std (ddof=1), low, high): the t-interval on the mean, clipped to ``bounds``;
    std and the interval are NaN below 2 values."""
    from scipy import stats

    x = _array(values)
    if x.size < 2:
        return (float(x.mean()) if x.size else math.nan), math.nan, math.nan, math.nan
    mean, std = float(x.mean()), float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * std / math.sqrt(x.size)
    return (mean, std, *clip(mean - half, mean + half, bounds))


def _t(diff: float, se: float, df: float, confidence: float) -> tuple[float, float, float]:
    """Two-sided p-value and t-interval of ``diff``."""
    from scipy import stats

    if not (se > 0 and math.isfinite(df)):
        return math.nan, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return float(2 * stats.t.sf(abs(diff) / se, df)), diff - half, diff + half


def _welch_se_df(a: "np.ndarray", b: "np.ndarray") -> tuple[float, float]:
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:
        return 0.0, math.nan
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))  # Welch-Satterthwaite
    return math.sqrt(va + vb), float(df)


def welch_test(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE):
    """Welch's t-test of mean(a) - mean(b): (diff, p, low, high); NaN below 2 per group."""
    a, b = _array(a), _array(b)
    diff = float(a.mean() - b.mean()) if a.size and b.size else math.nan
    if a.size < 2 or b.size < 2:
        return diff, math.nan, math.nan, math.nan
    return (diff, *_t(diff, *_welch_se_df(a, b), confidence))


def paired_test(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE):
    """Paired t-test of a - b (``a[i]``, ``b[i]`` share a seed): (diff, p, low, high)."""
    d = _array(a) - _array(b)
    diff = float(d.mean()) if d.size else math.nan
    if d.size < 2:
        return diff, math.nan, math.nan, math.nan
    return (diff, *_t(diff, float(d.std(ddof=1)) / math.sqrt(d.size), d.size - 1.0, confidence))


def sign_test(diffs: Sequence[float], tol: float | None = None) -> float:
    """Exact two-sided sign test of per-seed differences, ties (within ``tol``) dropped;
    1 when every difference is a tie."""
    from scipy import stats

    q = snap(diffs, tol or tie_tolerance(diffs))
    q = q[q != 0]
    return float(stats.binomtest(int((q > 0).sum()), int(q.size)).pvalue) if q.size else 1.0


def permutation_test(
    a: Sequence[float], b: Sequence[float], tol: float | None = None, seed: int = 0
) -> float:
    """Two-sided permutation test of mean(a) = mean(b) over relabelings of the runs (exact
    up to :data:`PERMUTATIONS` relabelings): assumes no variance, only exchangeability
    under the null; identical numbers give 1."""
    import numpy as np
    from scipy import stats

    tol = tol or tie_tolerance(np.concatenate([_array(a), _array(b)]))
    result = stats.permutation_test(
        (snap(a, tol), snap(b, tol)),
        lambda x, y, axis: np.abs(x.mean(axis=axis) - y.mean(axis=axis)),
        permutation_type="independent", vectorized=True, n_resamples=PERMUTATIONS,
        alternative="greater", **iv.rng_kwarg(stats.permutation_test, seed),
    )  # fmt: skip
    return float(result.pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (NaN stays NaN and is not counted): rejecting where
    the adjusted p < level keeps the family-wise error at the level, for any dependence."""
    finite = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        adjusted[i] = running
    return adjusted


def holm_family(comparisons: Sequence[Comparison], level: float = LEVEL) -> None:
    """Holm over every comparison given (one family): sets ``p_holm`` and ``significant``."""
    for c, p_adj in zip(comparisons, holm([c.p_value for c in comparisons])):
        c.p_holm, c.significant = p_adj, bool(math.isfinite(p_adj) and p_adj < level)


def t_power(effect: float, se: float, df: float, level: float = LEVEL) -> float:
    """Power of a two-sided t-test (``df``) to detect a true difference ``effect`` whose
    estimate has standard error ``se``: P(|T| > t_crit), T ~ noncentral t (NaN if se 0)."""
    from scipy import special

    if not (se > 0 and math.isfinite(df) and df > 0):
        return math.nan
    # scipy.special's ufuncs rather than scipy.stats.nct: the same functions, ~100x faster
    crit, nc = float(special.stdtrit(df, 1 - level / 2)), abs(effect) / se
    upper = 1.0 - float(special.nctdtr(df, nc, crit))
    if math.isnan(upper):  # deep in a tail nctdtr is NaN; the normal approximation is exact
        upper = float(special.ndtr(nc - crit))
    lower = float(special.nctdtr(df, nc, -crit))
    return min(1.0, upper + (0.0 if math.isnan(lower) else lower))


def min_detectable_diff(se: float, df: float, level: float = LEVEL, power: float = POWER) -> float:
    """The smallest true difference a two-sided t-test detects with ``power`` (NaN if se 0)."""
    from scipy import special
    from scipy.optimize import brentq

    if not (se > 0 and math.isfinite(df) and df > 0):
        return math.nan
    # the central-t approximation is within a few percent: bracket the exact root around it
    guess = float(special.stdtrit(df, 1 - level / 2) + special.stdtrit(df, power)) * se
    low, high = 0.5 * guess, 1.5 * guess
    while t_power(high, se, df, level) < power:
        high *= 2
    while low > 0 and t_power(low, se, df, level) > power:
        low /= 2
    return float(brentq(lambda d: t_power(d, se, df, level) - power, low, high, xtol=se * 1e-6))


def _shared(seeds: Sequence[object], base_seeds: Sequence[object]):
    """(indices in the group, in the baseline, seeds in either) of the seeds both have;
    None when a seed is unknown or repeated (pooled over lr: unpairable)."""
    if None in [*seeds, *base_seeds] or len(set(seeds)) < len(seeds) or (
            len(set(base_seeds)) < len(base_seeds)):  # fmt: skip
        return None
    where = {s: i for i, s in enumerate(base_seeds)}
    pairs = [(i, where[s]) for i, s in enumerate(seeds) if s in where]
    return [i for i, _ in pairs], [j for _, j in pairs], len(set(seeds) | set(base_seeds))


def _paired(a, b, tol: float, confidence: float) -> tuple[Comparison, float]:
    """Matched runs: the paired t-test, or the sign test when every seed moved alike."""
    import numpy as np

    d = a - b
    if np.ptp(snap(d, tol)) == 0:
        why = "per-seed differences all equal: interval undefined"
        p = sign_test(d, tol)
        return Comparison(float(d.mean()), math.nan, math.nan, "sign (no spread)", d.size, p,
                          reason=why), math.nan  # fmt: skip
    diff, p, low, high = paired_test(a, b, confidence)
    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    return Comparison(diff, low, high, "paired t", d.size, p), se


def _unpaired(a, b, tol: float, confidence: float, seed: int) -> tuple[Comparison, float]:
    """Independent runs: Welch's t-test, or the permutation test when a group has no spread."""
    import numpy as np

    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        n = min(a.size, b.size)
        return Comparison(diff, math.nan, math.nan, f"none (n={n})", 0, math.nan,
                          reason=f"a group has n={n}: no test"), math.nan  # fmt: skip
    flat = [name for name, x in (("group", a), ("baseline", b)) if np.ptp(snap(x, tol)) == 0]
    if flat:
        why = (f"no spread in the {' or '.join(flat)}: Welch's t would take its variance as 0; "
               "exact permutation test, interval undefined")
        p = permutation_test(a, b, tol, seed)
        return Comparison(diff, math.nan, math.nan, "permutation", 0, p, reason=why), math.nan
    _, p, low, high = welch_test(a, b, confidence)
    return Comparison(diff, low, high, "Welch t", 0, p), _welch_se_df(a, b)[0]


def compare_to_baseline(
    values: Sequence[float], seeds: Sequence[object], base_values: Sequence[float],
    base_seeds: Sequence[object], *, mode: str = "max", pairing: str = "auto",
    bounds: tuple[float, float] | None = None, n_boot: int = 0, seed: int = 0,
    confidence: float = CONFIDENCE, level: float | None = LEVEL,
    resolution: float | None = None,
) -> Comparison:  # fmt: skip
    """One group against the baseline: difference, interval, test, P(better), MDE.

    Args:
        values, seeds / base_values, base_seeds: one number and one seed (None: unknown)
            per unit of the group / of the baseline.
        mode: ``max`` or ``min``: the direction of an improvement (P(better)).
        pairing: ``auto`` (on the shared seeds when there are enough, see the module doc),
            ``paired`` (the shared seeds; needs 2) or ``welch``.
        bounds: the range of one value; intervals are clipped to it.
        n_boot, seed: BCa resamples and their seed (shown only from 50 seeds per group).
        level: the level the MDE is computed at (None: no MDE).
        resolution: the metric's step (1/N for an accuracy on N items), for ties.
    """
    if pairing not in PAIRING_CHOICES:
        raise ConfigError(f"--pairing: {pairing!r} is not valid; choose one of "
                          f"{', '.join(PAIRING_CHOICES)}")  # fmt: skip
    import numpy as np

    a, b = _array(values), _array(base_values)
    if a.size == 0 or b.size == 0:
        return Comparison(math.nan, math.nan, math.nan, "none", 0, math.nan,
                          reason="a group has no finished run")  # fmt: skip
    tol = tie_tolerance(np.concatenate([a, b]), resolution)
    shared = _shared(list(seeds), list(base_seeds))
    n_shared = len(shared[0]) if shared else 0
    larger = max(a.size, b.size)
    enough = n_shared >= 2 and (n_shared == larger or n_shared >= max(3, math.ceil(larger / 2)))
    if pairing == "paired" and n_shared < 2:
        return Comparison(float(a.mean() - b.mean()), math.nan, math.nan, "none", n_shared,
                          math.nan, reason=f"{n_shared} seed(s) shared with the baseline; a "
                          "paired test needs 2")  # fmt: skip
    if pairing == "paired" or (pairing == "auto" and enough):
        a, b = a[shared[0]], b[shared[1]]
        out, se = _paired(a, b, tol, confidence)
        out.n_units = shared[2]
        out.p_improve, out.p_improve_low, out.p_improve_high = iv.paired_prob_improvement(
            snap(a - b, tol), mode=mode, confidence=confidence)  # fmt: skip
        df = a.size - 1.0
    else:
        out, se = _unpaired(a, b, tol, confidence, seed)
        out.p_improve = iv.prob_improvement(snap(a, tol), snap(b, tol), mode=mode)
        df = _welch_se_df(a, b)[1] if a.size > 1 and b.size > 1 else math.nan
        if n_boot and math.isfinite(se):
            out.boot_low, out.boot_high = iv.bca_diff_ci(a, b, n_boot=n_boot, seed=seed,
                                                         bounds=bounds)  # fmt: skip
    if abs(out.diff) < tol / 2:
        out.diff = 0.0  # a floating-point zero prints as 0, never -0.0000
    span = None if bounds is None else (bounds[0] - bounds[1], bounds[1] - bounds[0])
    out.ci_low, out.ci_high = clip(out.ci_low, out.ci_high, span)
    if level and math.isfinite(se):
        out.mde = min_detectable_diff(se, df, level)
    return out


def compare_groups(
    groups: Mapping[str, tuple[Sequence[float], Sequence[object]]], baseline: str, *,
    level: float = LEVEL, holm_correct: bool = True, mde_level: float | None | bool = None,
    **options,
) -> dict[str, Comparison]:  # fmt: skip
    """Every group (group -> (values, seeds)) against ``baseline``, with
    :func:`compare_to_baseline` ``options``. The MDE is at ``mde_level`` (default
    ``level / m`` for m comparisons, what Holm asks of a lone true effect; False: none).
    ``holm_correct=False`` leaves the correction to a caller that pools several tables
    into one family (:func:`holm_family`)."""
    if baseline not in groups:
        raise ConfigError(f"baseline {baseline!r} is not one of: {', '.join(groups)}")
    others = [g for g in groups if g != baseline]
    at = level / max(len(others), 1) if mde_level is None else (mde_level or None)
    out = {
        g: compare_to_baseline(*groups[g], *groups[baseline], level=at, **options) for g in others
    }
    if holm_correct:
        holm_family(list(out.values()), level)
    return out
