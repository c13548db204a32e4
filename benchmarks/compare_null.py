"""Family-wise error of `ablate compare` under the null, over both tables at once.

Simulates studies with no true difference between variants and runs the statistics
`ablate compare` prints (``ablate.compare.summary.summarize``: the end-point table and
the learning-curve (AUC) table, one Holm family) on them. A study counts as a false
positive when *any* cell of either table is starred. Printed with its Monte-Carlo standard
error, next to the rule before issue 16 (two Holm families, one per table).

Scenarios:

* ``continuous``: 6 variants x 5 seeds, 20-epoch curves; a seed shifts every variant's
  curve alike (shared split, init and data order), epochs are autocorrelated (AR(1), 0.8);
  the end point is the last epoch plus test noise.
* ``ties``: 3 variants x 3 seeds, test accuracy on 360 images at ~99.7%: most groups tie,
  many have no spread at all (the exact sign test and binomial intervals take over).
* ``repeated``: 2 variants x 3 seeds, one seed re-run in every group (the re-run is one unit,
  averaged; before, it was a second "independent" run and the test switched to Welch).

    python benchmarks/compare_null.py            # ~5 min of one core (11 on a loaded 2-core VM)
    python benchmarks/compare_null.py --sims 500 # a third of that, wider Monte-Carlo error
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd

from ablate.compare.endpoints import parse_metric
from ablate.compare.stats import holm, welch_test
from ablate.compare.summary import summarize
from ablate.compare.units import collapse_repeats

SPEC = parse_metric("test_acc")
EPOCHS = 20


def _curves(rng, variants: int, seeds: int, seed_sd: float = 0.02) -> np.ndarray:
    """(variants, seeds, epochs) validation curves with no variant effect."""
    epochs = EPOCHS
    e = np.arange(1, epochs + 1)
    level = 0.95 - 0.85 * np.exp(-e / 4.0)  # (epochs,)
    seed_shift = rng.normal(0, seed_sd, (1, seeds, 1))  # shared by every variant
    noise = np.empty((variants, seeds, epochs))
    noise[..., 0] = rng.normal(0, 0.01, (variants, seeds))
    for t in range(1, epochs):  # AR(1) over epochs, stationary sd 0.01
        noise[..., t] = 0.8 * noise[..., t - 1] + rng.normal(0, 0.006, (variants, seeds))
    return np.clip(level + seed_shift + noise, 0, 1)


def _frame(final: np.ndarray, auc: np.ndarray, seeds: list[list[str]]) -> pd.DataFrame:
    rows = []
    for g in range(final.shape[0]):
        for i, seed in enumerate(seeds[g]):
            rows.append(
                {
                    "group": f"v{g}", "run_id": f"{g}-{i}", "status": "FINISHED",
                    "seed": seed, "start_time": i, "final": final[g, i], "final_epoch": 20.0,
                    "final_alpha": math.nan, "best": final[g, i], "best_epoch": 20.0,
                    "best_alpha": math.nan, "last_epoch": EPOCHS, "auc": auc[g, i],
                    "auc_alpha_low": math.nan, "auc_alpha_high": math.nan,
                    "epochs_to_target": math.nan,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def _study(frame: pd.DataFrame, groups: int, trials: int | None = None) -> tuple[bool, bool]:
    """(any star now: one family; any star before: a Holm family per table)."""
    order = [f"v{g}" for g in range(groups)]
    table = summarize(
        collapse_repeats(frame, "mean"), spec=SPEC, order=order, baseline="v0", n_boot=0,
        power=False, trials=dict.fromkeys(order, trials),
    )  # fmt: skip
    now = bool(table["significant"].any() or table["auc_significant"].any())
    others = table.iloc[1:]
    before = any(p < 0.05 for p in holm(list(others["p_value"]))) or any(
        p < 0.05 for p in holm(list(others["auc_p_value"]))
    )
    return now, before


def continuous(rng) -> tuple[bool, bool]:
    curves = _curves(rng, 6, 5)
    final = np.clip(curves[..., -1] + rng.normal(0, 0.005, curves.shape[:2]), 0, 1)
    seeds = [[str(s) for s in range(5)]] * 6
    return _study(_frame(final, curves.mean(axis=-1), seeds), 6)


def ties(rng) -> tuple[bool, bool]:
    curves = _curves(rng, 3, 3) * 0 + 0.997  # the validation curve is flat at the top
    p = np.clip(0.997 + rng.normal(0, 0.001, (1, 3)), 0, 1) * np.ones((3, 1))
    final = rng.binomial(360, p) / 360  # (variants, seeds): few errors, many ties
    auc = np.clip(curves[..., -1] + rng.binomial(144, p) / 144 - 0.997, 0, 1)
    return _study(_frame(final, auc, [["0", "1", "2"]] * 3), 3, trials=360)


def repeated(rng) -> tuple[bool, bool]:
    curves = _curves(rng, 2, 4, seed_sd=0.002)
    # index 3 re-runs seed 1: same split, init and data order, a little run-to-run noise
    curves[:, 3] = np.clip(curves[:, 1] + rng.normal(0, 0.002, curves[:, 1].shape), 0, 1)
    final = np.clip(curves[..., -1] + rng.normal(0, 0.005, curves.shape[:2]), 0, 1)
    seeds = [["0", "1", "2", "1"]] * 2
    now, _ = _study(_frame(final, curves.mean(axis=-1), seeds), 2)
    # before: the re-run counted as a fourth independent run (Welch, n=4 vs 4)
    p_end = welch_test(final[1], final[0])[1]
    p_auc = welch_test(curves[1].mean(-1), curves[0].mean(-1))[1]
    return now, bool(p_end < 0.05 or p_auc < 0.05)


SCENARIOS = {"continuous": continuous, "ties": ties, "repeated": repeated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=1500, help="studies per scenario")
    parser.add_argument("--seed", type=int, default=16, help="generator seed")
    args = parser.parse_args()
    print(f"null studies per scenario: {args.sims}; a study is a false positive when any "
          "cell of the end-point or curve table is starred")  # fmt: skip
    print(f"{'scenario':<11} {'FWER now (one family)':>24} {'before':>18} {'time':>7}")
    for name, simulate in SCENARIOS.items():
        rng = np.random.default_rng(args.seed)
        start = time.perf_counter()
        now = before = 0
        for _ in range(args.sims):
            a, b = simulate(rng)
            now += a
            before += b
        rate, old = now / args.sims, before / args.sims
        se, se_old = (math.sqrt(r * (1 - r) / args.sims) for r in (rate, old))
        print(f"{name:<11} {100 * rate:>14.1f}% ± {100 * se:.1f}% {100 * old:>9.1f}% ± "
              f"{100 * se_old:.1f}% {time.perf_counter() - start:>6.0f}s")  # fmt: skip


if __name__ == "__main__":
    main()
