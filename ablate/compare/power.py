"""Power of the t-tests `ablate compare` uses: what the seeds at hand can detect.

Exact for normal noise through the noncentral t distribution: a two-sided t-test with
``df`` degrees of freedom, whose difference estimate has standard error ``se``, rejects
with probability P(|T| > t_crit) for T ~ nct(df, effect / se). Two questions follow:

* :func:`min_detectable_diff`: the smallest true difference detected with 80% power;
* :func:`seeds_needed`: how many seeds per group would detect a given difference.

Both take the spread as known (the observed one), which is what makes them estimates.
"""

from __future__ import annotations

import math

__all__ = ["LEVEL", "POWER", "MAX_SEEDS", "t_power", "min_detectable_diff", "seeds_needed"]

LEVEL = 0.05  # family-wise significance level
POWER = 0.80
# The seeds-needed search stops here; beyond it the effect is practically undetectable.
MAX_SEEDS = 1000


def t_power(effect: float, se: float, df: float, level: float = LEVEL) -> float:
    """Power of a two-sided t-test with ``df`` degrees of freedom to detect a true
    difference ``effect`` whose estimate has standard error ``se`` (NaN if se or df <= 0).

    Args:
        effect: the true difference.
        se: standard error of its estimate.
        df: degrees of freedom of the test.
        level: two-sided significance level.
    """
    from scipy import special

    if not (se > 0 and math.isfinite(df) and df > 0):
        return math.nan
    # scipy.special's ufuncs rather than scipy.stats.nct: the same functions, ~100x less
    # overhead, and the power is evaluated many times per comparison.
    crit = float(special.stdtrit(df, 1 - level / 2))
    nc = abs(effect) / se
    upper = 1.0 - float(special.nctdtr(df, nc, crit))
    lower = float(special.nctdtr(df, nc, -crit))
    # nctdtr returns NaN deep in a tail (large df and nc); the tail's mass is ~0 there and
    # the normal approximation is exact to many digits.
    if math.isnan(upper):
        upper = float(special.ndtr(nc - crit))
    return min(1.0, upper + (0.0 if math.isnan(lower) else lower))


def min_detectable_diff(se: float, df: float, level: float = LEVEL, power: float = POWER) -> float:
    """Smallest true difference a two-sided t-test detects with ``power`` (NaN if se=0).

    Args:
        se: standard error of the difference estimate.
        df: degrees of freedom of the test.
        level: two-sided significance level.
        power: the detection probability asked for.
    """
    from scipy import special
    from scipy.optimize import brentq

    if not (se > 0 and math.isfinite(df) and df > 0):
        return math.nan
    # The central-t approximation is within a few percent; bracket the exact root around it.
    guess = float(special.stdtrit(df, 1 - level / 2) + special.stdtrit(df, power)) * se
    low, high = 0.5 * guess, 1.5 * guess
    while t_power(high, se, df, level) < power:
        high *= 2
    while low > 0 and t_power(low, se, df, level) > power:
        low /= 2
    return float(brentq(lambda d: t_power(d, se, df, level) - power, low, high, xtol=se * 1e-6))


def seeds_needed(
    effect: float,
    std_a: float,
    std_b: float,
    *,
    paired_std: float | None = None,
    level: float = LEVEL,
    power: float = POWER,
) -> float:
    """Seeds per group for the test to detect ``effect`` with ``power``, assuming the
    observed spread. ``inf`` beyond :data:`MAX_SEEDS`, NaN without an effect or a spread.

    Args:
        effect: the difference to detect (e.g. the observed one).
        std_a, std_b: the groups' standard deviations (Welch, equal group sizes).
        paired_std: std of the per-seed differences; given, the paired test is sized.
        level: two-sided significance level.
        power: the detection probability asked for.
    """
    from scipy import special

    def se_df(n: int) -> tuple[float, float]:
        if paired_std is not None:
            return paired_std / math.sqrt(n), float(n - 1)
        va, vb = std_a**2 / n, std_b**2 / n
        if va + vb == 0:
            return 0.0, math.nan
        return math.sqrt(va + vb), (va + vb) ** 2 * (n - 1) / (va**2 + vb**2)

    if not (math.isfinite(effect) and effect != 0) or math.isnan(t_power(effect, *se_df(2))):
        return math.nan  # no effect to detect, or no spread to size it against

    def enough(n: int) -> bool:
        return t_power(effect, *se_df(n), level) >= power

    # Start from the normal approximation (it slightly underestimates the t-test's need),
    # walk up to a sufficient n, then bisect: power grows with n.
    spread = paired_std if paired_std is not None else math.hypot(std_a, std_b)
    z = float(special.ndtri(1 - level / 2) + special.ndtri(power))
    n = min(max(2, math.ceil((z * spread / abs(effect)) ** 2)), MAX_SEEDS)
    if enough(n):
        while n > 2 and enough(n - 1):
            n -= 1
        return float(n)
    low, high = n, n + 1  # enough(low) is False
    while not enough(high):
        if high >= MAX_SEEDS:
            return math.inf
        low, high = high, min(MAX_SEEDS, high + max(1, high // 10))
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return float(high)
