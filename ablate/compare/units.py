"""What counts as one independent observation, and what a group lost on the way.

* A seed is one unit. A cell re-run with the same seed (same split, init and data order) is
  not a second independent run: counting it twice inflates n and the false-positive rate of
  every test (simulated: 9.4% instead of 5%). :func:`collapse_repeats` makes each seed one
  row, the mean of its runs or its latest run (``--repeats``), and says how many runs it
  stood for. Runs without a seed are their own unit.
* Runs that did not give a number are counted per group (:func:`lost_counts`): FAILED or
  KILLED runs and finished runs whose end point is NaN (diverged), pruned trials, and RUNNING
  runs left out. Dropping them silently would hide that a variant diverges more often, and
  would compare the survivors only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from ablate.compare.grouping import ALL_RUNS, MISSING_VALUE, lookup
from ablate.compare.select import RunRecord

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["REPEATS", "collapse_repeats", "lost_counts", "LOST_KINDS"]

REPEATS = ("mean", "latest")
LOST_KINDS = ("failed", "pruned", "running")
_AVERAGED = ("final", "best", "auc", "epochs_to_target")


def _unit_key(frame: "pd.DataFrame") -> "pd.Series":
    return frame["seed"].where(frame["seed"].notna(), "run:" + frame["run_id"]).astype(str)


def collapse_repeats(per_run: "pd.DataFrame", repeats: str = "mean") -> "pd.DataFrame":
    """One row per (group, seed): the mean of the seed's runs, or its latest run.

    Args:
        per_run: see :func:`ablate.compare.endpoints.per_run_frame`.
        repeats: ``mean`` (average the seed's runs) or ``latest`` (the last started).

    Returns:
        The per-run columns, one row per unit, plus ``n_runs`` (runs the unit stands for).
    """
    import pandas as pd

    if per_run.empty:
        return per_run.assign(n_runs=pd.Series(dtype=int))
    units = _unit_key(per_run)
    if not pd.concat([per_run["group"], units], axis=1).duplicated().any():
        return per_run.assign(n_runs=1)  # every seed once: nothing to collapse
    frame = per_run.assign(_unit=units).sort_values("start_time", kind="stable")
    rows = []
    for _, sub in frame.groupby(["group", "_unit"], sort=False):
        row = sub.iloc[-1].copy()  # the latest run
        if repeats == "mean" and len(sub) > 1:
            for column in _AVERAGED:
                row[column] = float(sub[column].mean())  # inf (never reached) stays inf
            for column in ("final_alpha", "best_alpha", "final_epoch", "best_epoch"):
                values = sub[column].dropna()
                row[column] = float(values.mean()) if len(values) else math.nan
        row["n_runs"] = len(sub)
        rows.append(row)
    out = pd.DataFrame(rows).drop(columns="_unit").reset_index(drop=True)
    out["n_runs"] = out["n_runs"].astype(int)
    return out


def _label(run: RunRecord, keys: Sequence[str]) -> str:
    if not keys:
        return ALL_RUNS
    return "/".join(lookup(k, run.tags, run.params) or MISSING_VALUE for k in keys)


def lost_counts(
    lost: Sequence[RunRecord], no_value: Sequence[RunRecord], keys: Sequence[str]
) -> dict[str, dict[str, int]]:
    """group -> {failed, pruned, running} counts.

    Args:
        lost: runs left out by the selection (FAILED, KILLED, pruned, RUNNING).
        no_value: compared runs whose end point is NaN (counted as failed: diverged).
        keys: the group-by keys (the same labels as the compared groups).
    """
    counts: dict[str, dict[str, int]] = {}
    for run in [*lost, *no_value]:
        if run.pruned:
            kind = "pruned"
        elif run.status == "RUNNING":
            kind = "running"
        else:
            kind = "failed"
        group = counts.setdefault(_label(run, keys), dict.fromkeys(LOST_KINDS, 0))
        group[kind] += 1
    return counts
