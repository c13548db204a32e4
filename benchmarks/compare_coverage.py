"""Coverage of every interval `ablate compare` prints (or withholds), at n = 3, 5, 10 seeds.

Each row simulates data with a known truth and counts how often the interval computed by
the code `ablate compare` runs contains it. The rule (issue 16): an interval is shown only
when its coverage is within 1 point of nominal (95%), or above it (then it is marked
conservative); otherwise it is withheld, and the row says so. Monte-Carlo standard error:
about 0.5 points at 2000 simulations, 0.7 at 1000.

Data: per-seed values share a seed effect across groups (same split, init and data order);
curves have 20 epochs with AR(1) noise (0.8) and a shared seed curve; accuracies on a small
test set are binomial counts out of 360 images at ~99.7%.

    python benchmarks/compare_coverage.py              # ~2 min of one core (3 min on a loaded VM)
    python benchmarks/compare_coverage.py --sims 500   # quicker, wider Monte-Carlo error
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
from scipy import stats as sps

from ablate.compare.dose import trend
from ablate.compare.intervals import (
    BOOTSTRAP_MIN_N,
    bca_diff_ci,
    paired_prob_improvement,
    sup_t_critical,
)
from ablate.compare.stats import compare_to_baseline, paired_test, t_interval, welch_test
from ablate.compare.summary import group_interval

SIZES = (3, 5, 10)
EPOCHS = 20
SHIFT = 0.3  # true difference in noise SDs for the difference intervals


def _ar_curves(rng, n: int, rho: float = 0.8) -> np.ndarray:
    """(n, EPOCHS) per-seed difference curves of mean 0, unit variance, AR(1) over epochs."""
    x = np.empty((n, EPOCHS))
    x[:, 0] = rng.standard_normal(n)
    for t in range(1, EPOCHS):
        x[:, t] = rho * x[:, t - 1] + math.sqrt(1 - rho**2) * rng.standard_normal(n)
    return x


def group_mean_t(rng, n):
    _, _, low, high = t_interval(rng.normal(0.0, 1.0, n))
    return low <= 0.0 <= high


def _accuracies(rng, n):
    p = np.clip(0.997 + rng.normal(0, 0.001, n), 0, 1)  # seed-to-seed differences
    return rng.binomial(360, p) / 360, 0.997  # the truth: the mean accuracy


def group_binomial(rng, n):
    acc, truth = _accuracies(rng, n)
    _, _, low, high, _ = group_interval(acc, 0.95, (0.0, 1.0), 360)
    return low <= truth <= high


def group_t_only(rng, n):  # before: the t-interval alone, zero-width without spread
    acc, truth = _accuracies(rng, n)
    _, _, low, high = t_interval(acc, bounds=(0.0, 1.0))
    return low <= truth <= high


def diff_paired(rng, n):
    seed = rng.normal(0, 2.0, n)
    c = compare_to_baseline(SHIFT + seed + rng.standard_normal(n), list(range(n)),
                            seed + rng.standard_normal(n), list(range(n)), level=None)  # fmt: skip
    return c.ci_low <= SHIFT <= c.ci_high


def diff_welch(rng, n):
    a_seeds, b_seeds = [f"a{i}" for i in range(n)], [f"b{i}" for i in range(n)]
    c = compare_to_baseline(SHIFT + rng.standard_normal(n), a_seeds, rng.standard_normal(n),
                            b_seeds, level=None)  # fmt: skip
    return c.ci_low <= SHIFT <= c.ci_high


def _pointwise(d):
    return [paired_test(d[:, t], np.zeros(d.shape[0]))[2:] for t in range(d.shape[1])]


def band_pointwise_one_epoch(rng, n):
    low, high = paired_test(_ar_curves(rng, n)[:, 10], np.zeros(n))[2:]
    return low <= 0.0 <= high


def band_pointwise_all_epochs(rng, n):
    return all(low <= 0.0 <= high for low, high in _pointwise(_ar_curves(rng, n)))


def band_sup_t(rng, n):
    d = _ar_curves(rng, n)
    crit = sup_t_critical(d, seed=int(rng.integers(1 << 30)))
    se = d.std(axis=0, ddof=1) / math.sqrt(n)
    return bool(np.all(np.abs(d.mean(axis=0)) <= crit * se))


def band_bonferroni(rng, n):  # what the band does for unpaired epochs: Welch at 0.05/20
    a, b = _ar_curves(rng, n), _ar_curves(rng, n)
    conf = 1 - 0.05 / EPOCHS
    for t in range(EPOCHS):
        _, _, low, high = welch_test(a[:, t], b[:, t], conf)
        if not low <= 0.0 <= high:
            return False
    return True


def p_better_paired(rng, n):
    truth = float(sps.norm.cdf(SHIFT))  # P(D > 0) for D ~ N(SHIFT, 1)
    _, low, high = paired_prob_improvement(SHIFT + rng.standard_normal(n))
    return low <= truth <= high


def p_better_bootstrap(rng, n):  # before: percentile bootstrap of the Mann-Whitney P
    a, b = SHIFT + rng.standard_normal(n), rng.standard_normal(n)
    truth = float(sps.norm.cdf(SHIFT / math.sqrt(2)))

    def stat(x, y, axis=-1):
        x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
        return (x[..., :, None] > y[..., None, :]).mean(axis=(-1, -2))

    res = sps.bootstrap((a, b), stat, n_resamples=1000, method="percentile", vectorized=True,
                        rng=int(rng.integers(1 << 30)))  # fmt: skip
    return res.confidence_interval.low <= truth <= res.confidence_interval.high


def _bca(rng, n, paired):
    a, b = SHIFT + rng.standard_normal(n), rng.standard_normal(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        low, high = bca_diff_ci(a, b, paired=paired, n_boot=1000, min_n=2,
                                seed=int(rng.integers(1 << 30)))  # fmt: skip
    return low <= SHIFT <= high


def bca_unpaired(rng, n):
    return _bca(rng, n, False)


def bca_paired(rng, n):
    return _bca(rng, n, True)


def trend_slope(rng, n):
    xs = np.repeat([0.0, 0.25, 0.5, 1.0], n)
    seeds = np.tile(np.arange(n), 4)
    ys = 0.02 * xs + rng.normal(0, 1.0, n)[seeds] + rng.normal(0, 0.01, xs.size)
    fit = trend(xs, ys, list(seeds))
    return fit["ci_low"] <= 0.02 <= fit["ci_high"]


# name, function, shown in the table as, bootstrap-heavy (fewer simulations)
ROWS = [
    ("group mean: t-interval (normal data)", group_mean_t, "shown", False),
    ("group mean, 360-image accuracy: t + binomial floor/exact", group_binomial, "shown", False),
    ("  before: t-interval alone (zero width without spread)", group_t_only, "replaced", False),
    ("Δ: paired t-interval", diff_paired, "shown", False),
    ("Δ: Welch t-interval", diff_welch, "shown", False),
    ("per-epoch Δ: pointwise t, one epoch", band_pointwise_one_epoch, "csv (pointwise)", False),
    ("  pointwise t, all 20 epochs at once", band_pointwise_all_epochs, "not a band", False),
    ("per-epoch Δ: sup-t band, 20 epochs (paired)", band_sup_t, "shaded band", False),
    ("per-epoch Δ: Bonferroni band, 20 epochs (Welch)", band_bonferroni, "shaded band", False),
    ("P(better) paired: Clopper-Pearson", p_better_paired, "shown", False),
    ("P(better) unpaired: percentile bootstrap", p_better_bootstrap, "not shown", True),
    ("Δ: BCa bootstrap, unpaired", bca_unpaired, f"from n={BOOTSTRAP_MIN_N}", True),
    ("Δ: BCa bootstrap, paired", bca_paired, "never", True),
    ("dose trend: slope CI, seeds as blocks (4 levels)", trend_slope, "shown", False),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=2000, help="simulations per cell")
    parser.add_argument("--boot-sims", type=int, default=800,
                        help="simulations per cell of the bootstrap rows")  # fmt: skip
    parser.add_argument("--bca-n", type=int, default=BOOTSTRAP_MIN_N,
                        help="extra size for the BCa rows (its threshold)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=16, help="generator seed")
    parser.add_argument("--rows", default="",
                        help="only rows whose name contains one of these (comma-separated)")
    args = parser.parse_args()
    width = max(len(r[0]) for r in ROWS)
    se = [100 * math.sqrt(0.0475 / s) for s in (args.sims, args.boot_sims)]
    print(f"coverage (%) of nominal 95% intervals; Monte-Carlo SE ~{se[0]:.1f} points "
          f"(bootstrap and per-epoch rows ~{se[1]:.1f})")  # fmt: skip
    print(f"{'interval':<{width}}  {'n=3':>6} {'n=5':>6} {'n=10':>6} {'n=' + str(args.bca_n):>7}"
          f"  {'in the table':<15} time")  # fmt: skip
    for row, (name, simulate, shown, heavy) in enumerate(ROWS):
        if args.rows and not any(part in name for part in args.rows.split(",")):
            continue
        start = time.perf_counter()
        sims = args.boot_sims if heavy else args.sims
        sims = sims // 2 if "epoch" in name else sims  # 20 intervals per simulation
        sizes = (*SIZES, args.bca_n) if "BCa" in name else SIZES
        cells = []
        for n in sizes:
            rng = np.random.default_rng([args.seed, n, row])
            cells.append(f"{100 * np.mean([simulate(rng, n) for _ in range(sims)]):.1f}")
        cells += [""] * (4 - len(cells))
        print(f"{name:<{width}}  {cells[0]:>6} {cells[1]:>6} {cells[2]:>6} {cells[3]:>7}  "
              f"{shown:<15} {time.perf_counter() - start:.0f}s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
