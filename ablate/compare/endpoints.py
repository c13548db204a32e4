"""End points: the one number per run a comparison tests, and the model it came from.

What the trainer logs (step = epoch): validation metrics every epoch 0..E (epoch 0 is the
untrained or pretrained model), and at the end ``test_*`` on the final weights (with
``test_epoch``, ``test_alpha``) and ``best_test_*`` on the best-validation checkpoint (with
``best_epoch``, ``best_test_alpha``). Runs logged before that contract have only ``test_*``,
measured on the best-validation checkpoint, and no ``test_epoch``.

``--metric acc`` (or f1, loss, precision, recall) asks for the final model's test number
when every selected run has one, and the last validation epoch otherwise (never a mix of
the two, which are different data). ``val_acc`` / ``test_acc`` / ``best_test_acc`` pin the
source; any other metric key is read as logged (last value). ``--checkpoint best`` takes
the best-validation checkpoint instead of the final weights; like the training loop it is
chosen by ``val_acc`` over epochs 1..E, never epoch 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from ablate.compare.curves import auc, epochs_to_target
from ablate.compare.select import RunRecord, join_names
from ablate.exceptions import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BASE_METRICS",
    "CHECKPOINTS",
    "SELECTION_METRIC",
    "MetricSpec",
    "Endpoint",
    "infer_mode",
    "parse_metric",
    "resolve_source",
    "best_val_epoch",
    "run_endpoint",
    "per_run_frame",
    "PER_RUN_COLUMNS",
]

BASE_METRICS = ("acc", "loss", "f1", "precision", "recall")
_BOUNDED = ("acc", "f1", "precision", "recall")  # fractions in [0, 1]
CHECKPOINTS = ("final", "best")
# The training loop keeps its "best" checkpoint by validation accuracy (epochs >= 1).
SELECTION_METRIC = "val_acc"
_MAX_WORDS = ("acc", "f1", "precision", "recall", "auc", "score")
_MIN_WORDS = ("loss", "error", "perplexity", "ppl")


def infer_mode(metric: str, mode: str | None = None) -> str:
    """'max' or 'min': given explicitly, or inferred from the metric's name.

    Args:
        metric: metric key, e.g. ``val_acc`` (max) or ``val_loss`` (min).
        mode: explicit choice, returned after validation.
    """
    if mode is not None:
        if mode not in ("max", "min"):
            raise ConfigError(f"--mode: {mode!r} is not valid; choose one of max, min")
        return mode
    name = metric.lower()
    if any(word in name for word in _MIN_WORDS):  # losses first: "acc_loss" is a loss
        return "min"
    if any(word in name for word in _MAX_WORDS):
        return "max"
    raise ConfigError(
        f"cannot tell whether higher or lower {metric!r} is better; pass --mode max or --mode min"
    )


@dataclass(frozen=True)
class MetricSpec:
    """A parsed ``--metric``.

    Attributes:
        requested: the string given.
        base: ``acc``, ``loss``, ... for the trainer's metric families; None for any other.
        source: ``auto``, ``test``, ``val`` or ``raw`` (a metric read as logged).
        checkpoint: ``final`` (end-of-schedule weights) or ``best`` (best-val checkpoint).
        mode: ``max`` or ``min``.
    """

    requested: str
    base: str | None
    source: str
    checkpoint: str
    mode: str

    @property
    def curve(self) -> str:
        """The per-epoch metric behind this end point (drawn, and averaged for the AUC)."""
        return f"val_{self.base}" if self.base else self.requested

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The metric's range when it is a fraction (accuracy, F1, ...), else None."""
        name = self.base or self.requested
        if "loss" in name:
            return None
        return (0.0, 1.0) if name.split("_")[-1] in _BOUNDED else None

    def label(self, source: str) -> str:
        """The metric key the numbers come from, for headers: ``test_acc``, ``val_acc``."""
        if self.base is None:
            return self.requested
        if source == "test":
            return f"test_{self.base}"
        return f"val_{self.base}"


def parse_metric(
    metric: str, checkpoint: str | None = None, mode: str | None = None
) -> MetricSpec:
    """Parse ``--metric`` and ``--checkpoint`` (see the module docstring).

    Args:
        metric: ``acc``, ``val_acc``, ``test_f1``, ``best_test_loss``, or any logged key.
        checkpoint: ``final``, ``best``, or None (``final``; ``best`` for ``best_test_*``).
        mode: ``max`` / ``min``; inferred from the name when None.
    """
    metric = metric.strip()
    if checkpoint is not None and checkpoint not in CHECKPOINTS:
        raise ConfigError(
            f"--checkpoint: {checkpoint!r} is not valid; choose one of {', '.join(CHECKPOINTS)}"
        )
    base, source = None, "raw"
    if metric in BASE_METRICS:
        base, source = metric, "auto"
    elif metric.startswith("best_test_") and metric[len("best_test_") :] in BASE_METRICS:
        if checkpoint == "final":
            raise ConfigError(
                f"--metric {metric} is measured on the best-validation checkpoint; "
                f"drop --checkpoint final or use --metric test_{metric[len('best_test_') :]}"
            )
        base, source, checkpoint = metric[len("best_test_") :], "test", "best"
    else:
        prefix, _, rest = metric.partition("_")
        if prefix in ("val", "test") and rest in BASE_METRICS:
            base, source = rest, prefix
    return MetricSpec(metric, base, source, checkpoint or "final", infer_mode(metric, mode))


# --------------------------------------------------------------------------------------
# per run
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    """One number of one run: value, the epoch of the weights it measured, their alpha."""

    value: float
    epoch: float = math.nan
    alpha: float = math.nan


_NONE = Endpoint(math.nan)


def _new_contract(run: RunRecord) -> bool:
    """``test_*`` measured on the final weights (``test_epoch`` is logged with them)."""
    return "test_epoch" in run.latest


def _has_test(run: RunRecord, base: str, checkpoint: str) -> bool:
    if checkpoint == "final":
        return _new_contract(run) and f"test_{base}" in run.latest
    if f"best_test_{base}" in run.latest:
        return True
    return f"test_{base}" in run.latest and not _new_contract(run)


def resolve_source(
    runs: Sequence[RunRecord], spec: MetricSpec
) -> tuple[str, list[RunRecord], list[str]]:
    """The one source every run's end point is read from, the runs that have it, and notes.

    ``auto`` becomes ``test`` when every run has test numbers for the chosen checkpoint,
    else ``val`` (mixing test and validation numbers would compare different data). An
    explicit ``test`` leaves out the runs without test numbers, with a note.
    """
    if spec.source in ("raw", "val"):
        return spec.source, list(runs), []
    base = str(spec.base)  # test/auto are only set for the base metrics
    have = [r for r in runs if _has_test(r, base, spec.checkpoint)]
    lacking = [r for r in runs if r not in have]
    model = "final weights" if spec.checkpoint == "final" else "best-validation checkpoint"
    if not lacking:
        return "test", list(runs), []
    old = sum(1 for r in lacking if f"test_{spec.base}" in r.latest)
    why = f"{len(lacking)} run(s) have no test_{spec.base} on the {model}"
    if old:
        why += f" ({old} logged before test numbers on the final weights existed)"
    if spec.source == "auto":
        note = f"{why}: every run is compared on val_{spec.base} instead"
        return "val", list(runs), [note]
    if not have:
        raise ConfigError(
            f"--metric {spec.requested}: no selected run has test_{spec.base} on the {model}; "
            f"use --metric val_{spec.base}"
            + (" or --checkpoint best" if spec.checkpoint == "final" and old else "")
        )
    names = join_names(r.name for r in lacking[:5])
    return "test", have, [f"{why}; left out: {names}" + (" ..." if len(lacking) > 5 else "")]


def _at_schedule_end(run: RunRecord, steps: "pd.Index") -> "pd.Index":
    """The epochs validated at the alpha schedule's end value, when the run chose its best
    checkpoint among those only (``best_from=schedule_end``, the trainer's default)."""
    alpha = run.histories.get("alpha")
    params = run.params
    if (
        alpha is None
        or params.get("best_from", "any") == "any"
        or params.get("alpha_schedule", "none") == "none"
        or "alpha_end" not in params
    ):
        return steps
    try:
        end = float(params["alpha_end"])
    except ValueError:
        return steps
    near = alpha[(alpha - end).abs() <= 1e-6 * max(1.0, abs(end))].index
    at_end = steps.intersection(near)
    return at_end if len(at_end) else steps  # before the end is reached: every epoch


def best_val_epoch(run: RunRecord, spec: MetricSpec) -> float:
    """Epoch of the best-validation checkpoint, never epoch 0 (the untrained or pretrained
    model): the trainer's ``best_epoch`` when logged; for a run still training, its rule
    (first epoch >= 1 with the highest ``val_acc``, among the epochs at the schedule's end
    alpha when it chooses from those), or the best of the curve itself without val_acc."""
    if "best_epoch" in run.latest and run.status != "RUNNING":
        return float(run.latest["best_epoch"])
    key, mode = SELECTION_METRIC, "max"
    if SELECTION_METRIC not in run.histories:
        key, mode = spec.curve, spec.mode
    history = run.histories.get(key)
    if history is None:
        return math.nan
    trained = history[history.index >= 1]
    trained = trained.loc[_at_schedule_end(run, trained.index)]
    if trained.empty:
        return math.nan
    return float(trained.idxmax() if mode == "max" else trained.idxmin())


def _alpha_at(run: RunRecord, epoch: float) -> float:
    history = run.histories.get("alpha")
    if history is None or not math.isfinite(epoch) or int(epoch) not in history.index:
        return math.nan
    return float(history.loc[int(epoch)])


def _at(run: RunRecord, key: str, epoch: float) -> Endpoint:
    history = run.histories.get(key)
    if history is None or not math.isfinite(epoch) or int(epoch) not in history.index:
        return _NONE
    return Endpoint(float(history.loc[int(epoch)]), epoch, _alpha_at(run, epoch))


def _last(run: RunRecord, key: str) -> Endpoint:
    history = run.histories.get(key)
    if history is None or history.empty:
        if key in run.latest:  # logged once, not per epoch
            return Endpoint(run.latest[key])
        return _NONE
    epoch = float(history.index[-1])
    return Endpoint(float(history.iloc[-1]), epoch, _alpha_at(run, epoch))


def run_endpoint(
    run: RunRecord, spec: MetricSpec, source: str, checkpoint: str, at_epoch: int | None = None
) -> Endpoint:
    """The run's value for ``spec`` from ``source`` (see :func:`resolve_source`) on the
    ``final`` weights or the ``best``-validation checkpoint; NaN value when it has none.
    With ``at_epoch`` (a partial look at unfinished runs): the curve at that epoch."""
    if at_epoch is not None:
        return _at(run, spec.curve, float(at_epoch))
    latest = run.latest
    if source == "test":
        base = spec.base
        if checkpoint == "final":
            if not _has_test(run, base, "final"):
                return _NONE
            epoch = latest["test_epoch"]
            return Endpoint(latest[f"test_{base}"], epoch, latest.get("test_alpha", math.nan))
        key = f"best_test_{base}" if f"best_test_{base}" in latest else f"test_{base}"
        if not _has_test(run, base, "best"):
            return _NONE
        epoch = best_val_epoch(run, spec)
        alpha = latest.get("best_test_alpha", _alpha_at(run, epoch))
        return Endpoint(latest[key], epoch, alpha)
    key = spec.curve
    if checkpoint == "final":
        return _last(run, key)
    return _at(run, key, best_val_epoch(run, spec))


def _alpha_range(run: RunRecord, last: int | None) -> tuple[float, float]:
    """Lowest and highest alpha over epochs 1..last (NaN without an alpha curve)."""
    history = run.histories.get("alpha")
    if history is None:
        return math.nan, math.nan
    part = history[history.index >= 1]
    if last is not None:
        part = part[part.index <= last]
    if part.empty:
        return math.nan, math.nan
    return float(part.min()), float(part.max())


PER_RUN_COLUMNS = [
    "group", "run_id", "run_name", "status", "pruned", "seed", "start_time", "final",
    "final_epoch", "final_alpha", "best", "best_epoch", "best_alpha", "last_epoch", "auc",
    "auc_alpha_low", "auc_alpha_high", "epochs_to_target",
]  # fmt: skip


def per_run_frame(
    runs: Sequence[RunRecord],
    spec: MetricSpec,
    source: str,
    target: float | None = None,
    *,
    auc_epochs: int | None = None,
    at_epoch: int | None = None,
) -> "pd.DataFrame":
    """One row per run with a value for the chosen checkpoint.

    Columns (:data:`PER_RUN_COLUMNS`): group, run_id, run_name, status, pruned, seed,
    start_time, final, final_epoch, final_alpha (final weights), best, best_epoch,
    best_alpha (best-validation checkpoint), last_epoch; auc (of the validation curve over
    epochs 1..``auc_epochs``, default 1..last) with the alpha range those epochs cover;
    epochs_to_target (first epoch >= 1 reaching it, within the same epochs; inf if never).
    ``at_epoch``: every end point is the curve at that epoch (partial look).
    """
    import pandas as pd

    rows = []
    for run in runs:
        final = run_endpoint(run, spec, source, "final", at_epoch)
        best = run_endpoint(run, spec, source, "best") if at_epoch is None else final
        tested = final if spec.checkpoint == "final" else best
        if not math.isfinite(tested.value):
            continue
        curve = run.histories.get(spec.curve)
        has_curve = curve is not None and not curve.empty
        reaches = has_curve and (auc_epochs is None or int(curve.index[-1]) >= auc_epochs)
        alpha_low, alpha_high = _alpha_range(run, auc_epochs)
        rows.append(
            [
                run.group, run.run_id, run.name, run.status, run.pruned, run.seed,
                run.start_time, final.value, final.epoch, final.alpha, best.value, best.epoch,
                best.alpha, int(curve.index[-1]) if has_curve else math.nan,
                auc(curve, auc_epochs) if reaches else math.nan, alpha_low, alpha_high,
                epochs_to_target(curve, target, spec.mode, auc_epochs)
                if reaches and target is not None
                else math.nan,
            ]
        )  # fmt: skip
    return pd.DataFrame(rows, columns=PER_RUN_COLUMNS)
