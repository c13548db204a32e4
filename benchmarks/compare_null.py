"""False positives of `ablate compare` under the null, and the power pairing keeps.

Each scenario simulates studies with no true difference and runs the statistics
`ablate compare` prints; a study is a false positive when *any* starred cell appears (the
end-point and learning-curve tables are one Holm family). Printed with the Monte-Carlo
standard error of the rate.

Scenarios:

* ``continuous``: 6 variants x 5 seeds, 20-epoch curves; a seed shifts every variant's
  curve alike (shared split, init and data order), epochs are autocorrelated (AR(1), 0.8);
  the end point is the last epoch plus test noise.
* ``ties``: test accuracy k/360 near 99.7% or 99.9% (most runs tie; float32 noise added),
  unequal groups: a baseline of 10 (5) seeds, a variant that lost one seed (9 of 10 pairs;
  4 of 5) and one on 9 (3) other seeds (unpaired); and, given a baseline of 3 seeds tied
  at one value, a variant on 4 other seeds (where Welch took the variance as 0).
* ``repeated``: 2 variants x 3 seeds, one seed re-run in every group (one unit, averaged).
* ``failed seed``: 3 variants x 5 seeds, one variant lost a seed (paired on 4 of 5).
* ``diverged``: 3 variants x 5 seeds x 20 epochs read through the same code as a real
  comparison (:func:`ablate.compare.core.measure`), one run diverged at epoch 2 (NaN).
* ``dose, seed slopes`` (n = 3, 5, 10 seeds): 4 alpha levels, a true mean slope of 0 but a
  slope per seed (SD equal to the noise SD); ``dose, noise grows``: the noise SD grows
  from 0.5 to 2 with alpha as well.

Then the power of a 1-point effect when one of 5 seeds failed: paired on the 4 shared
seeds against Welch over all seeds, at seed SDs of 0.5, 1 and 2 points (run noise 0.5).

    python benchmarks/compare_null.py              # 3 min of one core (6 on a loaded 2-core VM)
    python benchmarks/compare_null.py --sims 500   # quicker, wider Monte-Carlo error
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd

from ablate.compare.core import measure
from ablate.compare.dose import trend
from ablate.compare.endpoints import collapse_repeats, parse_metric
from ablate.compare.select import RunRecord, Selection
from ablate.compare.stats import compare_to_baseline
from ablate.compare.summary import summarize
from ablate.tracking.conventions import VAL_ACC

SPEC = parse_metric("test_acc")
EPOCHS = 20
COLUMNS = ["group", "run_id", "status", "seed", "start_time", "final", "final_epoch",
           "final_alpha", "best", "best_epoch", "best_alpha", "last_epoch", "auc",
           "auc_alpha_low", "auc_alpha_high", "epochs_to_target"]  # fmt: skip


def _curves(rng, variants: int, seeds: int, seed_sd: float = 0.02) -> np.ndarray:
    """(variants, seeds, epochs) validation curves with no variant effect."""
    level = 0.95 - 0.85 * np.exp(-np.arange(1, EPOCHS + 1) / 4.0)  # (epochs,)
    noise = np.empty((variants, seeds, EPOCHS))
    noise[..., 0] = rng.normal(0, 0.01, (variants, seeds))
    for t in range(1, EPOCHS):  # AR(1) over epochs, stationary sd 0.01
        noise[..., t] = 0.8 * noise[..., t - 1] + rng.normal(0, 0.006, (variants, seeds))
    return np.clip(level + rng.normal(0, seed_sd, (1, seeds, 1)) + noise, 0, 1)


def _frame(final, auc, seeds: list[list[str]]) -> pd.DataFrame:
    rows = [[f"v{g}", f"{g}-{i}", "FINISHED", seed, i, final[g][i], 20.0, math.nan,
             final[g][i], 20.0, math.nan, EPOCHS, auc[g][i] if auc is not None else math.nan,
             math.nan, math.nan, math.nan]
            for g in range(len(seeds)) for i, seed in enumerate(seeds[g])]  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def _starred(frame: pd.DataFrame, groups: int, n_items: int | None = None) -> bool:
    order = [f"v{g}" for g in range(groups)]
    table = summarize(collapse_repeats(frame), spec=SPEC, order=order, baseline="v0",
                      power=False, n_items=dict.fromkeys(order, n_items))  # fmt: skip
    return bool(table["significant"].any() or table["auc_significant"].any())


def continuous(rng) -> bool:
    curves = _curves(rng, 6, 5)
    final = np.clip(curves[..., -1] + rng.normal(0, 0.005, curves.shape[:2]), 0, 1)
    return _starred(_frame(final, curves.mean(axis=-1), [[str(s) for s in range(5)]] * 6), 6)


def _ties(rng, sizes: tuple[int, int, int], shared: int, level: float = 0.997) -> bool:
    """Accuracies k/360 near ``level`` (seeds differ by 0.1 point): a baseline, a variant on
    ``shared`` of its seeds, one on other seeds; float32 noise as a logged value has."""
    seeds = [list(range(sizes[0])), list(range(shared)),
             list(range(100, 100 + sizes[2]))]  # fmt: skip
    p = np.clip(level + rng.normal(0, 0.001, 200), 0, 1)  # a seed's accuracy, any variant
    final = [rng.binomial(360, p[group]) / 360 for group in seeds]
    final = [f + rng.choice([0.0, 3e-8], f.size) for f in final]
    return _starred(_frame(final, None, [[str(s) for s in g] for g in seeds]), 3, n_items=360)


def ties(rng) -> bool:
    return _ties(rng, (10, 9, 9), 9)


def ties_small(rng) -> bool:
    return _ties(rng, (5, 4, 3), 4)


def ties_saturated(rng) -> bool:  # 99.9%: most groups have no spread at all
    return _ties(rng, (5, 4, 3), 4, level=0.999)


def ties_given_flat(rng) -> bool:
    """Given a baseline without spread (3 seeds tied at one k/360) against 4 other seeds:
    the case where Welch took the baseline's variance as 0."""
    while True:
        p = np.clip(0.997 + rng.normal(0, 0.001, 7), 0, 1)
        k = rng.binomial(360, p)
        if k[0] == k[1] == k[2]:
            break
    final = [k[:3] / 360 + rng.choice([0.0, 3e-8], 3), k[3:] / 360 + rng.choice([0.0, 3e-8], 4)]
    return _starred(_frame(final, None, [["0", "1", "2"], ["10", "11", "12", "13"]]), 2, 360)


def repeated(rng) -> bool:
    curves = _curves(rng, 2, 4, seed_sd=0.002)
    # index 3 re-runs seed 1: same split, init and data order, a little run-to-run noise
    curves[:, 3] = np.clip(curves[:, 1] + rng.normal(0, 0.002, curves[:, 1].shape), 0, 1)
    final = np.clip(curves[..., -1] + rng.normal(0, 0.005, curves.shape[:2]), 0, 1)
    return _starred(_frame(final, curves.mean(axis=-1), [["0", "1", "2", "1"]] * 2), 2)


def failed_seed(rng) -> bool:
    curves = _curves(rng, 3, 5)
    final = np.clip(curves[..., -1] + rng.normal(0, 0.005, curves.shape[:2]), 0, 1)
    seeds = [[str(s) for s in range(5)]] * 3
    seeds[1] = seeds[1][:4]  # seed 4 of v1 failed
    final, auc = list(final), list(curves.mean(axis=-1))
    final[1], auc[1] = final[1][:4], auc[1][:4]
    return _starred(_frame(final, auc, seeds), 3)


def _record(group: str, seed: int, values: np.ndarray, test: float) -> RunRecord:
    steps = pd.RangeIndex(len(values) + 1)
    history = pd.Series(np.r_[0.1, values], index=steps, dtype=float)
    diverged = int(np.argmax(~np.isfinite(history.to_numpy()))) if np.isnan(values).any() else None
    return RunRecord(
        run_id=f"{group}-{seed}", name=f"{group}-{seed}", experiment_id="0", status="FINISHED",
        pruned=False, tags={}, params={"seed": str(seed)}, histories={VAL_ACC: history.dropna()},
        latest={"test_acc": test, "test_epoch": float(EPOCHS), VAL_ACC: float(values[-1])},
        group=group, diverged_at=diverged,
    )  # fmt: skip


def diverged(rng) -> bool:
    curves = _curves(rng, 3, 5)
    final = np.clip(curves[..., -1] + rng.normal(0, 0.005, curves.shape[:2]), 0, 1)
    curves[1, 4, 1:] = math.nan  # v1, seed 4 diverges at epoch 2
    final[1, 4] = math.nan
    runs = [_record(f"v{g}", s, curves[g, s], final[g, s]) for g in range(3) for s in range(5)]
    m = measure(Selection("simulated", runs, {}), SPEC, None, "mean")
    table = summarize(m.units, spec=SPEC, order=["v0", "v1", "v2"], baseline="v0",
                      power=False, lost=m.lost)  # fmt: skip
    return bool(table["significant"].any() or table["auc_significant"].any())


def _dose(rng, n: int, grows: bool) -> bool:
    alphas = np.array([0.0, 0.25, 0.5, 1.0])
    xs, seeds = np.tile(alphas, n), np.repeat(np.arange(n), alphas.size)
    noise_sd = 0.5 + 1.5 * xs if grows else 1.0
    ys = rng.normal(0, 1, n)[seeds] + rng.normal(0, 1, n)[seeds] * xs + rng.normal(0, noise_sd)
    return trend(xs, ys, list(seeds))[0].p_value < 0.05


SCENARIOS = {
    "continuous": continuous, "ties 10/9/9": ties, "ties 5/4/3": ties_small,
    "ties 5/4/3 at 99.9%": ties_saturated, "ties, baseline flat": ties_given_flat,
    "repeated": repeated,
    "failed seed": failed_seed, "diverged": diverged,
    **{f"dose, seed slopes, n={n}": (lambda rng, n=n: _dose(rng, n, False)) for n in (3, 5, 10)},
    **{f"dose, noise grows, n={n}": (lambda rng, n=n: _dose(rng, n, True)) for n in (3, 5, 10)},
}  # fmt: skip


def power(rng, sims: int, seed_sd: float) -> tuple[float, float]:
    """(paired on 4 of 5 seeds, Welch over 5 vs 4): power for a 1-point effect."""
    paired = welch = 0
    for _ in range(sims):
        shift = rng.normal(0, seed_sd, 5)
        base = 90 + shift + rng.normal(0, 0.5, 5)
        other = 91 + shift[:4] + rng.normal(0, 0.5, 4)
        args = (other, list(range(4)), base, list(range(5)))
        paired += compare_to_baseline(*args, level=None).p_value < 0.05
        welch += compare_to_baseline(*args, pairing="welch", level=None).p_value < 0.05
    return paired / sims, welch / sims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=2000, help="studies per scenario")
    parser.add_argument("--seed", type=int, default=16, help="generator seed")
    args = parser.parse_args()
    print(f"null studies per scenario: {args.sims}; a false positive: any starred cell")
    print(f"{'scenario':<24} {'false positives':>20} {'time':>7}")
    for name, simulate in SCENARIOS.items():
        rng = np.random.default_rng([args.seed, len(name)])
        start = time.perf_counter()
        sims = args.sims // 2 if name == "diverged" else args.sims
        rate = sum(simulate(rng) for _ in range(sims)) / sims
        se = math.sqrt(rate * (1 - rate) / sims)
        print(f"{name:<24} {100 * rate:>12.1f}% ± {100 * se:.1f}% "
              f"{time.perf_counter() - start:>6.0f}s", flush=True)  # fmt: skip
    print("\npower, 1-point effect, one of 5 seeds failed (run noise 0.5 points):")
    for seed_sd in (0.5, 1.0, 2.0):
        paired, welch = power(np.random.default_rng([args.seed, 7]), args.sims, seed_sd)
        print(f"  seed SD {seed_sd:.1f} points: paired on 4 of 5 {100 * paired:.0f}%, "
              f"Welch 5 vs 4 {100 * welch:.0f}%")  # fmt: skip


if __name__ == "__main__":
    main()
