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

__all__ = ["DATA_KEYS", "data_description", "evaluated_sizes", "family_count", "notes_for"]

# what a number was measured on: run param / tag -> label in the header
DATA_KEYS = {
    "dataset": "dataset", "split": "split", "val_split": "validation from",
    "data.train_size": "train", "data.val_size": "val", "data.test_size": "test",
}  # fmt: skip
GIT_COMMIT = "mlflow.source.git.commit"


def _value(run: RunRecord, key: str) -> str | None:
    return run.params.get(key, run.tags.get(key))


def data_description(runs: Sequence[RunRecord]) -> dict[str, list[str]]:
    """Key -> the distinct values among ``runs`` of :data:`DATA_KEYS` (logged ones only)."""
    values = {key: sorted({v for r in runs if (v := _value(r, key)) is not None})
              for key in DATA_KEYS}  # fmt: skip
    return {key: v for key, v in values.items() if v}


def evaluated_sizes(runs: Sequence[RunRecord], source: str) -> dict[str, int | None]:
    """group -> the size of the set its end point was measured on (test or validation),
    when all its runs agree; None otherwise (and for a metric read as logged)."""
    key = {"test": "data.test_size", "val": "data.val_size"}.get(source)
    sizes: dict[str, set[str | None]] = {}
    for run in runs:
        sizes.setdefault(run.group, set()).add(_value(run, key) if key else None)
    out: dict[str, int | None] = {}
    for group, values in sizes.items():
        value = values.pop() if len(values) == 1 else None
        numeric = value is not None and value.replace(".", "", 1).isdigit()
        out[group] = int(float(value)) if numeric else None
    return out


def family_count(table) -> int:
    """Comparisons with a p-value in the one Holm family (end point and AUC together)."""
    return sum(int(table[c].notna().sum()) for c in ("p_value", "auc_p_value") if c in table)


def _per_group(pairs, noun: str) -> str:
    """``'1': 1 seed, 'softmax': 2 seeds``: quoted, so a group named 1 reads as a name."""
    return ", ".join(f"{g!r}: {n} {noun}{'s' * (n != 1)}" for g, n in pairs)


def notes_for(selection: Selection, result: "ComparisonResult") -> list[str]:
    """Plain-language caveats printed under the tables."""
    notes = _selection_notes(selection, result)
    if result.confounders:
        by = ", ".join(result.group_by) or "nothing"
        notes.append(f"no star: the groups also differ in {', '.join(result.confounders)} "
                     f"(grouped by {by}), so a difference measures the combination; group or "
                     "filter by them")  # fmt: skip
    if result.dose is not None:
        tested = int(result.dose.levels["p_value"].notna().sum()) + len(result.dose.trends)
        notes.append(f"p (Holm): one family of {tested} test(s): each level against its series' "
                     "baseline level (paired by seed where the seeds match) and the trend (the "
                     "mean of per-seed least-squares slopes, t-test over seeds), family-wise "
                     f"level {LEVEL:g}")  # fmt: skip
    if result.baseline is not None:
        notes += _test_notes(result)
    return notes + _curve_notes(result)


def _selection_notes(selection: Selection, result: "ComparisonResult") -> list[str]:
    table, notes = result.table, []
    if selection.excluded:
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(selection.excluded.items()))
        notes.append(f"not compared: {parts}; counted per group in the n column")
    lost = [(g, f"{int(f)} of {int(f + n)}") for g, f, n in
            zip(table["group"], table["failed"], table["n_runs"]) if f]  # fmt: skip
    if lost:
        notes.append(
            "runs lost to failure or divergence (FAILED/KILLED, a NaN end point or curve): "
            + ", ".join(f"{g!r}: {text}" for g, text in lost)
            + "; diverging more often is "
            "itself a result, and the statistics describe the runs that finished"
        )
    if result.at_epoch is not None:
        notes.append("partial look: unfinished runs included, so every end point is "
                     f"{result.spec.curve} at epoch {result.at_epoch}, the last epoch every run "
                     "reached")  # fmt: skip
    if (table["repeated"] > 0).any():
        how = "averaged" if result.repeats == "mean" else "the latest run kept"
        notes.append(f"a seed run more than once counts once ({how}; --repeats mean|latest): "
                     + _per_group(zip(table["group"], table["repeated"]), "seed"))  # fmt: skip
    small = table[(table["n"] < 3) & (table["n"] > 0)]
    if len(small):
        notes.append("too few seeds to conclude anything for "
                     + ", ".join(f"{g!r} (n={n})" for g, n in zip(small["group"], small["n"]))
                     + ": intervals and tests need n>=2 per group, unreliable below 3"
                     )  # fmt: skip
    methods = {m for c in ("final_ci_method", "best_ci_method") for m in table[c]}
    if any("binomial" in m for m in methods):
        notes.append("binomial (N=...): an interval for the mean over seeds of the accuracy on "
                     "these N test images, like the t-interval: the exact (Clopper-Pearson) "
                     "interval of the seeds' pooled answers (n x N), used where it is wider (near "
                     "100% a seed errs on a handful of images, or the seeds all scored the same); "
                     "the accuracy on the population of images is less certain: the N images' own "
                     "sampling error is shared by every seed")  # fmt: skip
    for group in table["group"]:
        commits = {r.tags.get(GIT_COMMIT) for r in result.runs if r.group == group} - {None}
        if len(commits) > 1:
            notes.append(f"group {group!r} pools runs of {len(commits)} code versions")
    if result.endpoint_source == "val" and result.checkpoint == "best":
        notes.append("validation values at the best-validation checkpoint are optimistic: the "
                     "checkpoint was chosen on the same data")  # fmt: skip
    return notes


def _test_notes(result: "ComparisonResult") -> list[str]:
    others = result.table[result.table["group"] != result.baseline]
    notes: list[str] = []
    k = family_count(others)
    if k:
        notes.append(f"p (Holm): one family of {k} comparison(s) across the end-point and "
                     f"learning-curve tables, family-wise level {LEVEL:g}; * = significant; "
                     "paired = same seeds, hence same split, init and data order")  # fmt: skip
    partial = [(g, f"{p} of {u}") for g, p, u in zip(others["group"], others["n_pairs"],
                                                    others["n_units"]) if 0 < p < u]  # fmt: skip
    if partial:
        notes.append("paired on the seeds both groups have (a seed lost in one group drops its "
                     "pair): " + ", ".join(f"{g!r} {t}" for g, t in partial))  # fmt: skip
    if others["mde"].notna().any():
        notes.append("MDE: the smallest true difference the t-test would detect with 80% power at "
                     f"these seeds (two-sided, level {LEVEL:g}/{max(result.family, 1)}, what Holm "
                     "asks of a lone real effect)")  # fmt: skip
    if others["p_improve"].notna().any():
        notes.append("P(better): paired = share of seeds whose run beats the baseline's run of "
                     "the same seed, with its exact (Clopper-Pearson) interval; unpaired = the "
                     "Mann-Whitney estimate, no interval (its bootstrap under-covers at these "
                     "sizes)")  # fmt: skip
    if others["boot_ci_low"].isna().all() and len(others):
        notes.append("no bootstrap interval: BCa is shown for unpaired groups from "
                     f"{BOOTSTRAP_MIN_N} seeds each and never paired; below that it covers less "
                     "than 94% (simulated)")  # fmt: skip
    reasons = sorted({r for c in ("reason", "auc_reason") for r in others[c] if r})
    if reasons:
        notes.append("not tested or no interval: " + "; ".join(reasons))
    return notes


def _curve_notes(result: "ComparisonResult") -> list[str]:
    notes: list[str] = []
    if not result.diffs.empty:
        notes.append(
            "difference per epoch (diff_curves.csv, difference figure): ci_* is pointwise "
            "(each epoch alone), the shaded band is simultaneous over all epochs shown ("
            + "; ".join(sorted(set(result.diffs["band"])))
            + ")"
        )
    if result.auc_epochs is not None and result.auc_epochs < 1:
        run = result.auc_set_by
        notes.append(f"no AUC: {run.name if run else 'a run'} has no trained epoch")
    drops = []
    curves = result.curves[result.curves["metric"] == result.spec.curve]
    for group, sub in curves.groupby("group", sort=False):
        n, steps = sub["n"].to_numpy(), sub["step"].to_numpy()
        drops += [f"{group!r} n={n[i - 1]}->{n[i]} at epoch {steps[i]}"
                  for i in range(1, len(n)) if n[i] < n[i - 1]]  # fmt: skip
    if drops:
        notes.append("curves use fewer seeds at later epochs: " + "; ".join(drops))
    return notes
