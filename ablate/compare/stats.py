"""Statistics on plain numbers for `ablate compare`: no MLflow, no pandas.

The design this fits: every group (an attention variant, say) is trained with the same
seeds, and a seed fixes the data split, the initial weights and the data order. Runs of two
groups with the same seed are therefore *paired*, and the per-seed difference removes the
seed's share of the noise. :func:`compare_to_baseline` uses a paired t-test when the two
groups have exactly the same seeds and Welch's t-test otherwise, and says which.

Choices (simulated in ``benchmarks/compare_null.py`` and ``benchmarks/compare_coverage.py``):

* Intervals on a mean and on a difference are t-intervals (exact under normal noise, the
  right width at 3-5 seeds). A metric bounded to [0, 1] (accuracy, F1, ...) gets its
  interval clipped to [0, 1], its difference to [-1, 1]: the true value lies inside the
  bounds, so clipping never lowers coverage and never reports an impossible accuracy.
* Per-seed differences that are all equal (accuracies on a small test set tie) have no
  spread, so no t-test: the exact sign test is used (it can still say "every seed moved the
  same way", at p = 2 / 2^n) and the interval is reported as undefined, never zero-width.
* Every comparison of one invocation (end points and curves) forms one family; Holm's
  step-down (:func:`holm_family`) keeps the chance of any false "significant" at or below
  the level (0.05).
* The minimal detectable difference is the true difference the test used would detect with
  80% power at the seeds at hand, from the noncentral t distribution, at the level Holm
  demands of a lone real effect (0.05 / number of comparisons).
* Bootstrap and P(better) intervals live in :mod:`ablate.compare.intervals`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from ablate.compare.intervals import (
    BOOTSTRAP_MIN_N,
    BOOTSTRAP_MIN_PAIRS,
    CONFIDENCE,
    _clip,
    _diff_bounds,
    bca_diff_ci,
    paired_prob_improvement,
    prob_improvement,
)
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
    "sign_test",
    "holm",
    "holm_family",
    "compare_to_baseline",
    "compare_groups",
    "family_size",
]

PAIRING_CHOICES = ("auto", "paired", "welch")
# |difference| below this is a floating-point zero (0.97 - 0.97 need not be exactly 0)
ZERO_DIFF = 1e-9


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


def sign_test(diffs: Sequence[float]) -> float:
    """Exact two-sided sign test of per-seed differences (zeros dropped); 1 without any."""
    from scipy import stats

    d = _array(diffs)
    d = d[abs(d) > ZERO_DIFF]
    if d.size == 0:
        return 1.0
    return float(stats.binomtest(int((d > 0).sum()), int(d.size)).pvalue)


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


def _paired(
    a: "np.ndarray", b: "np.ndarray", level: float | None, confidence: float
) -> tuple[Comparison, float, float]:
    """Paired comparison of matched runs; (comparison, se, df). No spread: sign test."""
    d = a - b
    diff = float(d.mean())
    d_std = float(d.std(ddof=1))
    if d_std <= ZERO_DIFF * max(1.0, abs(diff)):
        comparison = Comparison(
            diff, math.nan, math.nan, "sign (no spread)", int(d.size), sign_test(d),
            reason="per-seed differences all equal: no spread, interval undefined",
        )  # fmt: skip
        return comparison, math.nan, math.nan
    _, p, low, high = paired_test(a, b, confidence)
    se, df = d_std / math.sqrt(d.size), float(d.size - 1)
    comparison = Comparison(diff, low, high, "paired t", int(d.size), p)
    comparison.seeds_needed = (_needed if level else _skip)(diff, lambda: seeds_needed(
        diff, 0.0, 0.0, paired_std=d_std, level=level))  # fmt: skip
    return comparison, se, df


def _welch(
    a: "np.ndarray", b: "np.ndarray", level: float | None, confidence: float
) -> tuple[Comparison, float, float]:
    """Welch comparison of independent runs; (comparison, se, df)."""
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        smaller = min(a.size, b.size)
        comparison = Comparison(
            diff, math.nan, math.nan, f"none (n={smaller})", 0, math.nan,
            reason=f"a group has n={smaller}: no test",
        )  # fmt: skip
        return comparison, math.nan, math.nan
    se, df = _welch_se_df(a, b)
    if se == 0.0:
        comparison = Comparison(
            diff, math.nan, math.nan, "none (no spread)", 0, math.nan,
            reason="no spread in either group: test and interval undefined",
        )  # fmt: skip
        return comparison, math.nan, math.nan
    _, p, low, high = welch_test(a, b, confidence)
    comparison = Comparison(diff, low, high, "Welch t", 0, p)
    comparison.seeds_needed = (_needed if level else _skip)(diff, lambda: seeds_needed(
        diff, float(a.std(ddof=1)), float(b.std(ddof=1)), level=level))  # fmt: skip
    return comparison, se, df


def _needed(diff: float, compute) -> float:
    """Seeds needed for the observed difference; NaN for a (floating-point) zero."""
    return math.nan if abs(diff) <= ZERO_DIFF else compute()


def _skip(diff: float, compute) -> float:
    return math.nan


def compare_to_baseline(
    values: Sequence[float],
    seeds: Sequence[object],
    base_values: Sequence[float],
    base_seeds: Sequence[object],
    *,
    mode: str = "max",
    pairing: str = "auto",
    bounds: tuple[float, float] | None = None,
    n_boot: int = 0,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    level: float | None = LEVEL,
) -> Comparison:
    """Difference of one group from the baseline: interval, test, P(better), MDE.

    Args:
        values, seeds: the group's units (one value and one seed each; None = unknown).
        base_values, base_seeds: the baseline's units.
        mode: ``max`` / ``min``: which direction counts as an improvement.
        pairing: ``auto`` (paired when both groups have exactly the same seeds, each once;
            Welch otherwise), ``paired`` (the units whose seeds match; needs >= 2 pairs) or
            ``welch``.
        bounds: range of one value (e.g. (0, 1)); intervals are clipped to it.
        n_boot: BCa resamples (0: none; computed only from the sizes where it covers).
        seed: the bootstrap's generator seed.
        confidence: interval coverage.
        level: the level the MDE is computed for (the caller passes the level a lone true
            effect must reach after the multiple-comparison correction); None skips the MDE
            and seeds needed (a first pass that only counts the tests).
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
    if use_paired and (matched is None or len(matched[0]) < 2):
        n = 0 if matched is None else len(matched[0])
        return Comparison(
            float(a.mean() - b.mean()), math.nan, math.nan, "none", n, math.nan,
            reason=f"{n} seed(s) shared with the baseline; a paired test needs 2",
        )  # fmt: skip
    if use_paired:
        a, b = a[matched[0]], b[matched[1]]
        out, se, df = _paired(a, b, level, confidence)
        out.p_improve, out.p_improve_low, out.p_improve_high = paired_prob_improvement(
            a - b, mode=mode, confidence=confidence
        )
    else:
        out, se, df = _welch(a, b, level, confidence)
        out.p_improve = prob_improvement(a, b, mode=mode)
    out.ci_low, out.ci_high = _clip(out.ci_low, out.ci_high, _diff_bounds(bounds))
    if n_boot >= 1:
        out.boot_low, out.boot_high = bca_diff_ci(
            a, b, paired=use_paired, n_boot=n_boot, seed=seed, bounds=bounds
        )
    if level and math.isfinite(se):
        out.mde = min_detectable_diff(se, df, level)
    return out


def holm_family(comparisons: Sequence[Comparison], level: float = LEVEL) -> None:
    """Holm over every comparison given (one family), setting ``p_holm`` and
    ``significant`` in place; comparisons without a p-value are not counted."""
    adjusted = holm([c.p_value for c in comparisons])
    for c, p_adj in zip(comparisons, adjusted):
        c.p_holm = p_adj
        c.significant = bool(math.isfinite(p_adj) and p_adj < level)


def family_size(n_groups: int, n_tables: int) -> int:
    """Comparisons in one invocation's family: every non-baseline group per table."""
    return max((n_groups - 1) * n_tables, 1)


def compare_groups(
    groups: Mapping[str, tuple[Sequence[float], Sequence[object]]],
    baseline: str,
    *,
    level: float = LEVEL,
    holm_correct: bool = True,
    mde_level: float | None | bool = None,
    **kwargs: object,
) -> dict[str, Comparison]:
    """Every group against ``baseline``, Holm-corrected as one family.

    ``significant`` is set where the Holm-adjusted p < ``level``. The MDE is computed at
    ``mde_level`` (default ``level / m`` for m comparisons: the level Holm requires of a
    lone true effect; ``False``: not computed). ``holm_correct=False`` leaves the
    correction to the caller, who pools several tables into one family (:func:`holm_family`).

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
    at = mde_level if mde_level is not None else level / max(len(others), 1)
    at = None if at is False else at
    out = {
        g: compare_to_baseline(
            groups[g][0], groups[g][1], base_values, base_seeds, level=at, **kwargs
        )
        for g in others
    }
    if holm_correct:
        holm_family([out[g] for g in others], level)
    return out
