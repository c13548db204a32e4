"""End points: the one number per run a comparison tests, the model it came from, and the
unit it counts as.

What a run logs (:mod:`ablate.tracking.conventions`, step = epoch): curves
``<quantity>/val`` at epochs 0..E (0: the untrained or pretrained model); at the end
``test_<q>`` of the final weights (with ``test_epoch``, ``test_alpha``) and ``best_test_<q>``
of the best-validation checkpoint (with ``best_epoch``, ``best_test_alpha``).

``--metric acc`` (or loss, f1, precision, recall) is the final model's test number when
every run has one, else the last validation epoch: never a mix of the two, which are
different data. ``acc/val``, ``test_acc`` and ``best_test_acc`` pin the source; any other
logged key is read as logged. ``--checkpoint best`` is the best-validation checkpoint,
chosen as the trainer chooses it: on ``acc/val`` over epochs >= 1, never epoch 0.

A seed is one unit (:func:`collapse_repeats`): a cell re-run with the same seed has the same
split, init and data order, so counting it twice inflates n and the false-positive rate of
every test (9.4% instead of 5%, simulated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from ablate.compare.curves import auc, epochs_to_target
from ablate.compare.select import RunRecord, join_names
from ablate.exceptions import ConfigError
from ablate.tracking import conventions as cv

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BASE_METRICS", "CHECKPOINTS", "REPEATS", "MetricSpec", "Endpoint", "parse_metric",
           "resolve_source", "best_val_epoch", "run_endpoint", "per_run_frame",
           "collapse_repeats"]  # fmt: skip

BASE_METRICS = ("acc", "loss", "f1", "precision", "recall")
CHECKPOINTS = ("final", "best")
REPEATS = ("mean", "latest")
_FRACTIONS = ("acc", "f1", "precision", "recall")  # in [0, 1]
_MAX_WORDS = ("acc", "f1", "precision", "recall", "auc", "score", "samples_per_s")
_MIN_WORDS = ("loss", "error", "perplexity", "ppl", "seconds")
# Names before the <quantity>/<split> records: a one-line pointer to the new name.
RENAMED = {
    **{f"val_{q}": cv.curve(q, "val") for q in BASE_METRICS},
    "train_loss": cv.TRAIN_LOSS, "train_acc": cv.TRAIN_ACC, "alpha": cv.ALPHA, "lr": cv.LR,
    "samples_per_s": cv.SAMPLES_PER_S, "epoch_seconds": cv.EPOCH_SECONDS,
}  # fmt: skip


def _quantity(name: str) -> str:
    """``acc/val`` -> acc, ``best_test_f1`` -> f1, ``loss/train`` -> loss."""
    return name.split("/")[0].split("_")[-1]


def infer_mode(metric: str, mode: str | None = None) -> str:
    """``max`` or ``min``: given, or from the metric's name (losses first: a loss of
    accuracy is a loss)."""
    if mode is not None:
        if mode not in ("max", "min"):
            raise ConfigError(f"--mode: {mode!r} is not valid; choose one of max, min")
        return mode
    for words, direction in ((_MIN_WORDS, "min"), (_MAX_WORDS, "max")):
        if any(word in metric.lower() for word in words):
            return direction
    raise ConfigError(f"cannot tell whether higher or lower {metric!r} is better; pass --mode max "
                      "or --mode min")  # fmt: skip


@dataclass(frozen=True)
class MetricSpec:
    """A parsed ``--metric``: ``base`` (acc, loss, ...; None for any other key), ``source``
    (auto, test, val, or raw: read as logged), ``checkpoint`` (final, best), ``mode``."""

    requested: str
    base: str | None
    source: str
    checkpoint: str
    mode: str

    @property
    def curve(self) -> str:
        """The per-epoch metric behind this end point (drawn, and averaged for the AUC)."""
        return cv.curve(self.base, "val") if self.base else self.requested

    @property
    def test_key(self) -> str:
        return f"best_test_{self.base}" if self.checkpoint == "best" else f"test_{self.base}"

    @property
    def bounds(self) -> tuple[float, float] | None:
        """(0, 1) for a fraction (accuracy, F1, ...), else None."""
        return (0.0, 1.0) if _quantity(self.base or self.requested) in _FRACTIONS else None

    @property
    def counts(self) -> bool:
        """An accuracy: a count of correct items out of the evaluated set's N."""
        return self.base == "acc"

    def label(self, source: str) -> str:
        """The key the tested numbers are: ``test_acc``, ``acc/val``, or as requested."""
        if self.base is None:
            return self.requested
        return self.test_key if source == "test" else self.curve


def parse_metric(
    metric: str, checkpoint: str | None = None, mode: str | None = None
) -> MetricSpec:
    """Parse ``--metric`` and ``--checkpoint`` (None: final; best for ``best_test_*``)."""
    metric = metric.strip()
    if metric in RENAMED:
        raise ConfigError(f"--metric {metric}: the curve is now named {RENAMED[metric]} "
                          f"(<quantity>/<split>); use --metric {RENAMED[metric]}")  # fmt: skip
    if checkpoint is not None and checkpoint not in CHECKPOINTS:
        raise ConfigError(f"--checkpoint: {checkpoint!r} is not valid; choose one of "
                          f"{', '.join(CHECKPOINTS)}")  # fmt: skip
    base, source = None, "raw"
    quantity, _, split = metric.partition("/")
    if metric in BASE_METRICS:
        base, source = metric, "auto"
    elif metric.startswith("best_test_") and metric[len("best_test_") :] in BASE_METRICS:
        if checkpoint == "final":
            raise ConfigError(f"--metric {metric} is measured on the best-validation checkpoint; "
                              "drop --checkpoint final or use --metric "
                              f"{metric.removeprefix('best_')}")  # fmt: skip
        base, source, checkpoint = metric[len("best_test_") :], "test", "best"
    elif metric.startswith("test_") and metric[len("test_") :] in BASE_METRICS:
        base, source = metric[len("test_") :], "test"
    elif split == "val" and quantity in BASE_METRICS:
        base, source = quantity, "val"
    return MetricSpec(metric, base, source, checkpoint or "final", infer_mode(metric, mode))


def resolve_source(
    runs: Sequence[RunRecord], spec: MetricSpec
) -> tuple[str, list[RunRecord], list[str]]:
    """The one source every end point is read from, the runs that have it, and notes.

    ``auto`` is ``test`` when every run has the test number, else ``val``; an explicit
    ``test`` leaves out the runs without it, and says so.
    """
    if spec.source in ("raw", "val"):
        return spec.source, list(runs), []
    have = [r for r in runs if spec.test_key in r.latest]
    if len(have) == len(runs):
        return "test", list(runs), []
    lacking = [r for r in runs if r not in have]
    why = f"{len(lacking)} run(s) have no {spec.test_key}"
    if spec.source == "auto":
        return "val", list(runs), [f"{why}: every run is compared on {spec.curve} instead"]
    if not have:
        raise ConfigError(f"--metric {spec.requested}: no selected run has {spec.test_key}; "
                          f"use --metric {spec.curve}")  # fmt: skip
    names = join_names(r.name for r in lacking[:5]) + (" ..." if len(lacking) > 5 else "")
    return "test", have, [f"{why}; left out: {names}"]


def _at_schedule_end(run: RunRecord, steps: "pd.Index") -> "pd.Index":
    """The epochs validated at the alpha schedule's end value, when the run chooses its best
    checkpoint among those (``best_from=schedule_end``, the trainer's default)."""
    alpha, params = run.histories.get(cv.ALPHA), run.params
    if alpha is None or params.get("best_from", "any") == "any" or "alpha_end" not in params:
        return steps
    end = float(params["alpha_end"])
    at_end = steps.intersection(alpha[(alpha - end).abs() <= 1e-6 * max(1.0, abs(end))].index)
    return at_end if len(at_end) else steps  # before the end is reached: every epoch


def best_val_epoch(run: RunRecord, spec: MetricSpec) -> float:
    """The best-validation checkpoint's epoch: the trainer's ``best_epoch`` once finished;
    for a run still training, its rule (the first epoch >= 1 with the highest ``acc/val``,
    among the epochs at the schedule's end alpha when it chooses from those), or the best of
    the curve itself without ``acc/val``."""
    if "best_epoch" in run.latest and run.status != cv.RUNNING:
        return float(run.latest["best_epoch"])
    key, mode = (cv.VAL_ACC, "max") if cv.VAL_ACC in run.histories else (spec.curve, spec.mode)
    history = run.histories.get(key)
    if history is None:
        return math.nan
    trained = history[history.index >= 1]
    trained = trained.loc[_at_schedule_end(run, trained.index)]
    if trained.empty:
        return math.nan
    return float(trained.idxmax() if mode == "max" else trained.idxmin())


@dataclass(frozen=True)
class Endpoint:
    """One number of one run: its value, the epoch of the weights measured, their alpha."""

    value: float
    epoch: float = math.nan
    alpha: float = math.nan


_NONE = Endpoint(math.nan)


def _at(run: RunRecord, key: str, epoch: float) -> Endpoint:
    history = run.histories.get(key)
    if history is None or not math.isfinite(epoch) or int(epoch) not in history.index:
        return _NONE
    alpha = run.histories.get(cv.ALPHA)
    at = alpha.get(int(epoch), math.nan) if alpha is not None else math.nan
    return Endpoint(float(history.loc[int(epoch)]), epoch, float(at))


def run_endpoint(
    run: RunRecord, spec: MetricSpec, source: str, checkpoint: str, at_epoch: int | None = None
) -> Endpoint:
    """The run's number from ``source`` on the ``final`` weights or the ``best``-validation
    checkpoint (NaN value when it has none); with ``at_epoch`` (a partial look at unfinished
    runs), the curve at that epoch. A best checkpoint at epoch 0 (the untrained or
    pretrained model) is never one: NaN."""
    if at_epoch is not None:
        return _at(run, spec.curve, float(at_epoch))
    latest = run.latest
    if source == "test" and checkpoint == "final":
        if f"test_{spec.base}" not in latest:
            return _NONE
        return Endpoint(latest[f"test_{spec.base}"], latest.get("test_epoch", math.nan),
                        latest.get("test_alpha", math.nan))  # fmt: skip
    if checkpoint == "final":
        history = run.histories.get(spec.curve)
        if history is None or history.empty:  # a key logged once, not per epoch
            return Endpoint(latest.get(spec.curve, math.nan))
        return _at(run, spec.curve, float(history.index[-1]))
    epoch = best_val_epoch(run, spec)
    if not epoch >= 1:
        return _NONE
    if source == "test":
        if f"best_test_{spec.base}" not in latest:
            return _NONE
        alpha = latest.get("best_test_alpha", _at(run, cv.ALPHA, epoch).value)
        return Endpoint(latest[f"best_test_{spec.base}"], epoch, alpha)
    return _at(run, spec.curve, epoch)


def _alpha_range(run: RunRecord, last: int | None) -> tuple[float, float]:
    """Lowest and highest alpha over epochs 1..last (NaN without an alpha curve)."""
    history = run.histories.get(cv.ALPHA)
    if history is None:
        return math.nan, math.nan
    part = history[(history.index >= 1) & (history.index <= (math.inf if last is None else last))]
    return (float(part.min()), float(part.max())) if len(part) else (math.nan, math.nan)


PER_RUN_COLUMNS = [
    "group", "run_id", "run_name", "status", "pruned", "seed", "start_time", "final",
    "final_epoch", "final_alpha", "best", "best_epoch", "best_alpha", "last_epoch", "auc",
    "auc_alpha_low", "auc_alpha_high", "epochs_to_target",
]  # fmt: skip


def per_run_frame(
    runs: Sequence[RunRecord], spec: MetricSpec, source: str, target: float | None = None,
    *, auc_epochs: int | None = None, at_epoch: int | None = None,
) -> "pd.DataFrame":  # fmt: skip
    """One row per run with a number for the tested checkpoint (:data:`PER_RUN_COLUMNS`):
    the final weights' and the best checkpoint's numbers, epochs and alphas; ``auc`` of the
    validation curve over epochs 1..``auc_epochs`` with the alpha range those epochs cover;
    ``epochs_to_target`` (first epoch >= 1 reaching it within those epochs; inf if never).
    With ``at_epoch`` every end point is the curve at that epoch (a partial look)."""
    import pandas as pd

    rows = []
    for run in runs:
        final = run_endpoint(run, spec, source, "final", at_epoch)
        best = run_endpoint(run, spec, source, "best") if at_epoch is None else final
        if not math.isfinite((final if spec.checkpoint == "final" else best).value):
            continue
        curve = run.histories.get(spec.curve)
        last = int(curve.index[-1]) if curve is not None and len(curve) else math.nan
        whole = auc_epochs is not None and auc_epochs >= 1 and last >= auc_epochs
        reach = whole and target is not None
        rows.append([
            run.group, run.run_id, run.name, run.status, run.pruned, run.seed, run.start_time,
            final.value, final.epoch, final.alpha, best.value, best.epoch, best.alpha, last,
            auc(curve, auc_epochs) if whole else math.nan, *_alpha_range(run, auc_epochs),
            epochs_to_target(curve, target, spec.mode, auc_epochs) if reach else math.nan,
        ])  # fmt: skip
    return pd.DataFrame(rows, columns=PER_RUN_COLUMNS)


def collapse_repeats(per_run: "pd.DataFrame", repeats: str = "mean") -> "pd.DataFrame":
    """One row per (group, seed): the mean of the seed's runs, or its latest run; runs
    without a seed are their own unit. ``n_runs``: the runs a unit stands for."""
    import pandas as pd

    units = per_run["seed"].where(per_run["seed"].notna(), "run:" + per_run["run_id"])
    if not pd.concat([per_run["group"], units], axis=1).duplicated().any():
        return per_run.assign(n_runs=1)  # every seed once: nothing to collapse
    frame = per_run.assign(_unit=units.astype(str)).sort_values("start_time", kind="stable")
    rows = []
    for _, sub in frame.groupby(["group", "_unit"], sort=False):
        row = sub.iloc[-1].copy()  # the latest run
        if repeats == "mean":
            for column in ("final", "best", "auc", "epochs_to_target", "final_alpha",
                           "best_alpha", "final_epoch", "best_epoch"):  # fmt: skip
                values = sub[column].dropna()  # inf (never reached) stays inf
                row[column] = float(values.mean()) if len(values) else math.nan
        row["n_runs"] = len(sub)
        rows.append(row)
    return pd.DataFrame(rows).drop(columns="_unit").reset_index(drop=True).astype({"n_runs": int})
