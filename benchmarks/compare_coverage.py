"""Coverage of every interval `ablate compare` prints (or withholds), at n = 3, 5, 10 seeds.

Each row simulates data with a known truth and counts how often the interval computed by
the code `ablate compare` runs contains it. The rule: an interval is shown only when its
coverage is within 1 point of nominal (95%) or above it (conservative); otherwise it is
withheld, and the row says so. Monte-Carlo standard error: about 0.5 points at 2000
simulations, 0.7 at 1000.

Data: per-seed values share a seed effect across groups (same split, init and data order);
curves have 20 epochs with AR(1) noise (0.8). Accuracies on a test set of 360 images near
99.7%: the images are drawn once per study (a few are hard for every model), each seed's
model errs on an image with its own rate. The group interval (t, widened to the exact
binomial interval of the pooled answers where that is wider) claims the mean over seeds of
the accuracy *on this test set*; the accuracy on the population of images also carries the
test set's own sampling error, shared by every seed, which no number of seeds removes.

    python benchmarks/compare_coverage.py              # about 1 min of one core
    python benchmarks/compare_coverage.py --sims 500   # quicker, wider Monte-Carlo error
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
from scipy import stats as sps

from ablate.compare.curves import sup_t_critical
from ablate.compare.dose import trend
from ablate.compare.intervals import BOOTSTRAP_MIN_N, bca_diff_ci, paired_prob_improvement
from ablate.compare.stats import compare_to_baseline, paired_test, t_interval, welch_test
from ablate.compare.summary import group_interval

SIZES = (3, 5, 10)
EPOCHS = 20
SHIFT = 0.3  # true difference in noise SDs for the difference intervals
N_IMAGES, HARD, HARD_ERR, EASY_ERR = 360, 0.004, 0.5, 0.001  # ~99.7% accuracy


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


def _accuracy_study(rng, n):
    """(interval method, low, high, Q1, Q2) of one group of n seeds on one test set."""
    hard = rng.random(N_IMAGES) < HARD  # this test set's hard images
    rate = np.where(hard, HARD_ERR, EASY_ERR)  # (images,)
    scale = rng.lognormal(-0.045, 0.3, n)  # a seed's error multiplier, mean 1
    errors = (rng.random((n, N_IMAGES)) < np.minimum(1, rate * scale[:, None])).sum(axis=1)
    acc = 1 - errors / N_IMAGES
    population = 1 - (HARD * HARD_ERR + (1 - HARD) * EASY_ERR) * scale.mean()
    _, _, low, high, method = group_interval(acc, 0.95, (0.0, 1.0), N_IMAGES)
    return method, low, high, 1 - rate.mean(), population


def group_acc_q1(rng, n):  # what the interval claims: the mean over seeds on this test set
    _, low, high, q1, _ = _accuracy_study(rng, n)
    return low <= q1 <= high


def group_acc_q2(rng, n):  # not claimed: the models' accuracy on the population of images
    _, low, high, _, q2 = _accuracy_study(rng, n)
    return low <= q2 <= high


def group_acc_t_alone(rng, n):  # without the binomial: zero width when seeds tie
    hard = rng.random(N_IMAGES) < HARD
    rate = np.where(hard, HARD_ERR, EASY_ERR)
    scale = rng.lognormal(-0.045, 0.3, n)
    acc = 1 - (rng.random((n, N_IMAGES)) < np.minimum(1, rate * scale[:, None])).sum(1) / N_IMAGES
    _, _, low, high = t_interval(acc, bounds=(0.0, 1.0))
    return low <= 1 - rate.mean() <= high


def _diff(rng, n, pairs: int, pairing: str = "auto"):
    seed = rng.normal(0, 2.0, n)
    base = seed + rng.standard_normal(n)
    other = SHIFT + seed[:pairs] + rng.standard_normal(pairs)
    c = compare_to_baseline(other, list(range(pairs)), base, list(range(n)), pairing=pairing,
                            level=None)  # fmt: skip
    return c.ci_low <= SHIFT <= c.ci_high


def diff_paired(rng, n):
    return _diff(rng, n, n)


def diff_paired_lost_seed(rng, n):  # one seed of the group failed: n - 1 of n pairs
    return _diff(rng, n, n - 1, "paired")


def diff_welch(rng, n):
    a_seeds, b_seeds = [f"a{i}" for i in range(n)], [f"b{i}" for i in range(n)]
    c = compare_to_baseline(SHIFT + rng.standard_normal(n), a_seeds, rng.standard_normal(n),
                            b_seeds, level=None)  # fmt: skip
    return c.ci_low <= SHIFT <= c.ci_high


def band_pointwise_one_epoch(rng, n):
    low, high = paired_test(_ar_curves(rng, n)[:, 10], np.zeros(n))[2:]
    return low <= 0.0 <= high


def band_pointwise_all_epochs(rng, n):
    d = _ar_curves(rng, n)
    return all(low <= 0.0 <= high for low, high in
               (paired_test(d[:, t], np.zeros(n))[2:] for t in range(EPOCHS)))  # fmt: skip


def band_sup_t(rng, n):
    d = _ar_curves(rng, n)
    crit = sup_t_critical(d, seed=int(rng.integers(1 << 30)))
    return bool(np.all(np.abs(d.mean(axis=0)) <= crit * d.std(axis=0, ddof=1) / math.sqrt(n)))


def band_bonferroni(rng, n):  # what the band does for unpaired epochs: Welch at 0.05/20
    a, b = _ar_curves(rng, n), _ar_curves(rng, n)
    intervals = [welch_test(a[:, t], b[:, t], 1 - 0.05 / EPOCHS)[2:] for t in range(EPOCHS)]
    return all(low <= 0.0 <= high for low, high in intervals)


def p_better_paired(rng, n):
    _, low, high = paired_prob_improvement(SHIFT + rng.standard_normal(n))
    return low <= float(sps.norm.cdf(SHIFT)) <= high  # P(D > 0) for D ~ N(SHIFT, 1)


def p_better_bootstrap(rng, n):  # a percentile bootstrap of the Mann-Whitney P: withheld
    a, b = SHIFT + rng.standard_normal(n), rng.standard_normal(n)

    def stat(x, y, axis=-1):
        x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
        return (x[..., :, None] > y[..., None, :]).mean(axis=(-1, -2))

    res = sps.bootstrap((a, b), stat, n_resamples=1000, method="percentile", vectorized=True,
                        rng=int(rng.integers(1 << 30)))  # fmt: skip
    return res.confidence_interval.low <= float(sps.norm.cdf(SHIFT / math.sqrt(2))) <= (
        res.confidence_interval.high)  # fmt: skip


def bca_unpaired(rng, n):
    a, b = SHIFT + rng.standard_normal(n), rng.standard_normal(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        low, high = bca_diff_ci(a, b, n_boot=1000, min_n=2, seed=int(rng.integers(1 << 30)))
    return low <= SHIFT <= high


def bca_paired(rng, n):  # never shown: computed here with scipy directly
    d = SHIFT + rng.standard_normal(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.bootstrap((d,), np.mean, n_resamples=1000, method="BCa",
                            rng=int(rng.integers(1 << 30)))  # fmt: skip
    return res.confidence_interval.low <= SHIFT <= res.confidence_interval.high


ALPHAS = np.array([0.0, 0.25, 0.5, 1.0])


def _dose(rng, n, grows: bool):
    """Seed-specific slopes (SD 1 around a mean of 0.5); noise SD 1, or 0.5 -> 2 with alpha."""
    xs, seeds = np.tile(ALPHAS, n), np.repeat(np.arange(n), ALPHAS.size)
    noise = 0.5 + 1.5 * xs if grows else 1.0
    ys = (
        rng.normal(0, 1, n)[seeds] + (0.5 + rng.normal(0, 1, n)[seeds]) * xs + rng.normal(0, noise)
    )
    return xs, ys, seeds


def trend_seed_slopes(rng, n):
    xs, ys, seeds = _dose(rng, n, False)
    fit, _ = trend(xs, ys, list(seeds))
    return fit.ci_low <= 0.5 <= fit.ci_high


def trend_noise_grows(rng, n):
    xs, ys, seeds = _dose(rng, n, True)
    fit, _ = trend(xs, ys, list(seeds))
    return fit.ci_low <= 0.5 <= fit.ci_high


def trend_blocked_regression(rng, n):  # before: one slope, an intercept per seed, OLS
    xs, ys, seeds = _dose(rng, n, False)
    design = np.column_stack([xs, np.eye(n)[seeds]])
    coef, residual, *_ = np.linalg.lstsq(design, ys, rcond=None)
    df = ys.size - design.shape[1]
    se = math.sqrt(residual[0] / df * np.linalg.inv(design.T @ design)[0, 0])
    return abs(coef[0] - 0.5) <= sps.t.ppf(0.975, df) * se


# name, function, shown in the table as, bootstrap-heavy (fewer simulations)
ROWS = [
    ("group mean: t-interval (normal data)", group_mean_t, "shown", False),
    ("group mean, accuracy on 360 images ~99.7%:", None, "", False),
    ("  t or binomial floor: mean over seeds, this test set", group_acc_q1, "shown", False),
    ("  the same interval: population accuracy", group_acc_q2, "not claimed", False),
    ("  the t-interval alone (zero width w/o spread)", group_acc_t_alone, "not shown", False),
    ("Δ: paired t-interval", diff_paired, "shown", False),
    ("Δ: paired t-interval, one seed lost (n-1 pairs)", diff_paired_lost_seed, "shown", False),
    ("Δ: Welch t-interval", diff_welch, "shown", False),
    ("per-epoch Δ: pointwise t, one epoch", band_pointwise_one_epoch, "csv (pointwise)", False),
    ("  pointwise t, all 20 epochs at once", band_pointwise_all_epochs, "not a band", False),
    ("per-epoch Δ: sup-t band, 20 epochs (paired)", band_sup_t, "shaded band", False),
    ("per-epoch Δ: Bonferroni band, 20 epochs (Welch)", band_bonferroni, "shaded band", False),
    ("P(better) paired: Clopper-Pearson", p_better_paired, "shown", False),
    ("P(better) unpaired: percentile bootstrap", p_better_bootstrap, "not shown", True),
    ("Δ: BCa bootstrap, unpaired", bca_unpaired, f"from n={BOOTSTRAP_MIN_N}", True),
    ("Δ: BCa bootstrap, paired", bca_paired, "never", True),
    ("dose trend: mean of per-seed slopes, seed slopes", trend_seed_slopes, "shown", False),
    ("  the same, noise SD 0.5 -> 2 with alpha", trend_noise_grows, "shown", False),
    ("  before: blocked regression, seed slopes", trend_blocked_regression, "replaced", False),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=2000, help="simulations per cell")
    parser.add_argument("--boot-sims", type=int, default=800,
                        help="simulations per cell of the bootstrap rows")  # fmt: skip
    parser.add_argument("--bca-n", type=int, default=BOOTSTRAP_MIN_N,
                        help="extra size for the BCa rows (its threshold)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=16, help="generator seed")
    parser.add_argument(
        "--rows", default="", help="only rows whose name contains one of these (comma-separated)"
    )
    args = parser.parse_args()
    width = max(len(r[0]) for r in ROWS)
    se = [100 * math.sqrt(0.0475 / s) for s in (args.sims, args.boot_sims, args.sims // 2)]
    print(f"coverage (%) of nominal 95% intervals; Monte-Carlo SE ~{se[0]:.1f} points "
          f"(per-epoch rows ~{se[2]:.1f}, bootstrap rows ~{se[1]:.1f})")  # fmt: skip
    print(f"{'interval':<{width}}  {'n=3':>6} {'n=5':>6} {'n=10':>6} {'n=' + str(args.bca_n):>7}"
          f"  {'in the table':<15} time")  # fmt: skip
    for row, (name, simulate, shown, heavy) in enumerate(ROWS):
        if args.rows and not any(part in name for part in args.rows.split(",")):
            continue
        if simulate is None:
            print(name)
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
