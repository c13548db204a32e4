"""What a comparison was measured on, and the plain-language notes under its tables.

Every note states what the numbers in the table are; none contradicts them: the family
size, the level the MDE is computed at and the tests named are read from the table itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ablate.compare.intervals import BOOTSTRAP_MIN_N
from ablate.compare.select import RunRecord, Selection
from ablate.compare.stats import LEVEL

if TYPE_CHECKING:
    from ablate.compare.result import ComparisonResult

__all__ = ["data_description", "group_trials", "notes_for", "family_count"]

# what a number was measured on: run tag / param -> label in the header
DATA_KEYS = {
    "dataset": "dataset",
    "split": "split",
    "val_split": "validation from",
    "data.train_size": "train",
    "data.val_size": "val",
    "data.test_size": "test",
}


def _value(run: RunRecord, key: str) -> str | None:
    return run.tags.get(key, run.params.get(key))


def data_description(runs: Sequence[RunRecord]) -> dict[str, list[str]]:
    """Key -> the distinct values among ``runs`` of :data:`DATA_KEYS` (logged ones only)."""
    out: dict[str, list[str]] = {}
    for key in DATA_KEYS:
        values = sorted({v for r in runs if (v := _value(r, key)) is not None})
        if values:
            out[key] = values
    return out


def group_trials(runs: Sequence[RunRecord], source: str) -> dict[str, int | None]:
    """group -> the size of the set its end point was measured on (test or validation),
    when all its runs agree; None otherwise."""
    key = "data.test_size" if source == "test" else "data.val_size"
    sizes: dict[str, set[str | None]] = {}
    for run in runs:
        sizes.setdefault(run.group, set()).add(_value(run, key))
    out: dict[str, int | None] = {}
    for group, values in sizes.items():
        value = next(iter(values)) if len(values) == 1 else None
        try:
            out[group] = int(float(value)) if value is not None else None
        except ValueError:
            out[group] = None
    return out


def family_count(table) -> int:
    """Comparisons with a p-value in the one Holm family (end point and AUC together)."""
    count = 0
    for prefix in ("", "auc_"):
        column = f"{prefix}p_value"
        if column in table:
            count += int(table[column].notna().sum())
    return count


def notes_for(selection: Selection, result: "ComparisonResult") -> list[str]:
    """Plain-language caveats printed under the tables."""
    notes = _selection_notes(selection, result)
    if result.dose is not None:
        tested = int(result.dose.levels["p_value"].notna().sum()) + len(result.dose.trends)
        notes.append(
            f"p (Holm): one family of {tested} test(s): each level against {result.dose.x} = "
            f"{result.dose.baseline_x:g} (paired by seed when the seeds match) and the trend "
            "(least-squares slope with one intercept per seed), family-wise level "
            f"{LEVEL:g}; * = significant"
        )
    if result.baseline is not None and "test" in result.table.columns:
        notes += _test_notes(result)
    notes += _curve_notes(result)
    return notes


def _selection_notes(selection: Selection, result: "ComparisonResult") -> list[str]:
    table = result.table
    notes: list[str] = []
    if selection.excluded:
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(selection.excluded.items()))
        notes.append(f"not compared: {parts}; counted per group in the n column")
    lost = [
        f"{g} {int(f)} of {int(f + n)}"
        for g, f, n in zip(table["group"], table["failed"], table["n_runs"])
        if f
    ]
    if lost:
        notes.append(
            "runs lost to failure or divergence (FAILED/KILLED, or a NaN end point): "
            + ", ".join(lost)
            + "; diverging more often is itself a result, and the statistics describe the "
            "runs that finished"
        )
    if result.at_epoch is not None:
        notes.append(
            f"partial look: unfinished runs included, so every end point is "
            f"{result.spec.curve} at epoch {result.at_epoch}, the last epoch every run reached"
        )
    if (table["repeated"] > 0).any():
        how = "averaged" if result.repeats == "mean" else "the latest run kept"
        notes.append(
            f"a seed run more than once counts once ({how}; --repeats mean|latest): "
            + ", ".join(
                f"{g} {int(r)} seed(s)" for g, r in zip(table["group"], table["repeated"]) if r
            )
        )
    small = table[table["n"] < 3]
    if len(small):
        listed = ", ".join(f"{g} (n={n})" for g, n in zip(small["group"], small["n"]))
        notes.append(
            f"too few seeds to conclude anything for {listed}: intervals and tests need n>=2 "
            "per group and are unreliable below 3 seeds"
        )
    methods = {m for c in ("final_ci_method", "best_ci_method") for m in table[c]}
    if any(m.startswith("binomial") for m in methods):
        notes.append(
            "binomial: a group whose seeds all scored the same has no spread to build a "
            "t-interval from; its interval is the exact (Clopper-Pearson) one for that "
            "accuracy on the test-set size N, the test-sampling uncertainty alone"
        )
    if any("binomial floor" in m for m in methods):
        notes.append(
            "binomial floor: seeds that spread less than a binomial count on N test items "
            "can (ties on a small test set) get the t-interval with the binomial variance "
            "p(1-p)/N instead of their own, so the interval does not under-cover"
        )
    for group in table["group"]:
        commits = {r.tags.get("git_commit") for r in result.runs if r.group == group} - {None}
        if len(commits) > 1:
            notes.append(
                f"group {group!r} pools runs of {len(commits)} code versions (git_commit)"
            )
    if result.endpoint_source == "val" and result.checkpoint == "best":
        notes.append(
            "validation values at the best-validation checkpoint are optimistic: the "
            "checkpoint was chosen on the same data"
        )
    return notes


def _test_notes(result: "ComparisonResult") -> list[str]:
    table = result.table
    others = table[table["group"] != result.baseline]
    notes: list[str] = []
    k = family_count(others)
    if k:
        notes.append(
            f"p (Holm): one family of {k} comparison(s) across the end-point and "
            f"learning-curve tables, family-wise level {LEVEL:g}; * = significant; paired = "
            "same seeds, hence same split, init and data order"
        )
    if others["mde"].notna().any():
        notes.append(
            f"MDE: the smallest true difference the test would detect with 80% power at "
            f"these seeds (two-sided, level {LEVEL:g}/{max(result.family, 1)}, what Holm asks "
            "of a lone real effect); seeds for Δ: seeds per group that would detect the "
            "observed Δ"
        )
    if others["p_improve"].notna().any():
        notes.append(
            "P(better): paired = share of seeds whose run beats the baseline's run of the "
            "same seed, with its exact (Clopper-Pearson) interval; unpaired = the "
            "Mann-Whitney estimate, no interval (its bootstrap under-covers at these sizes)"
        )
    if others["boot_ci_low"].isna().all() and len(others):
        notes.append(
            f"no bootstrap interval: BCa is shown for unpaired groups from {BOOTSTRAP_MIN_N} "
            "seeds each and never paired; below that it covers less than 94% (simulated)"
        )
    reasons = sorted({r for c in ("reason", "auc_reason") if c in others for r in others[c] if r})
    if reasons:
        notes.append("not tested or no interval: " + "; ".join(reasons))
    return notes


def _curve_notes(result: "ComparisonResult") -> list[str]:
    notes: list[str] = []
    if not result.diffs.empty:
        methods = sorted(set(result.diffs["band"]))
        notes.append(
            "difference per epoch (diff_curves.csv, difference figure): ci_* is pointwise "
            "(each epoch alone), the shaded band is simultaneous over all epochs shown ("
            + "; ".join(methods)
            + ")"
        )
    drops = []
    curves = result.curves
    shown = result.spec.curve if result.spec.curve in set(curves["metric"]) else "val_acc"
    for group, sub in curves[curves["metric"] == shown].groupby("group", sort=False):
        n, steps = sub["n"].to_numpy(), sub["step"].to_numpy()
        drops += [
            f"{group} n={n[i - 1]}->{n[i]} at epoch {steps[i]}"
            for i in range(1, len(n))
            if n[i] < n[i - 1]
        ]
    if drops:
        notes.append("curves use fewer seeds at later epochs: " + "; ".join(drops))
    return notes

