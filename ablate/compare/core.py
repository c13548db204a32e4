"""`ablate compare` end to end: select, group, measure, test, and write.

Data flow: :func:`~ablate.compare.select.select_runs` (MLflow) -> ``RunRecord`` per run
(lost runs kept aside) -> :func:`~ablate.compare.grouping.assign_groups` (refuses to pool
different configs) -> :func:`~ablate.compare.endpoints.per_run_frame` (the end point, the
model it came from, the AUC over the epochs every run has, epochs to target) ->
:func:`~ablate.compare.units.collapse_repeats` (one unit per seed) ->
:func:`~ablate.compare.summary.summarize` (per-group statistics, one Holm family) and
:mod:`~ablate.compare.curves` (mean curves, differences per epoch with pointwise and
simultaneous bands) -> :mod:`~ablate.compare.render` (tables, figures; for a study, logged
to its parent run). ``--x`` adds :mod:`~ablate.compare.dose` (end point against a number).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ablate.compare.curves import (
    CURVE_METRICS,
    aggregate_curves,
    common_epoch,
    default_target,
    diff_curves,
)
from ablate.compare.endpoints import (
    SELECTION_METRIC,
    MetricSpec,
    parse_metric,
    per_run_frame,
    resolve_source,
)
from ablate.compare.grouping import assign_groups, following_keys, parse_keys
from ablate.compare.notes import data_description, family_count, group_trials, notes_for
from ablate.compare.result import ComparisonResult
from ablate.compare.select import RunRecord, Selection, join_names, log_files, select_runs
from ablate.compare.stats import PAIRING_CHOICES
from ablate.compare.summary import resolve_baseline, summarize
from ablate.compare.units import REPEATS, collapse_repeats, lost_counts
from ablate.exceptions import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ComparisonResult", "compare_runs", "FORMATS"]

FORMATS = ("png", "pdf", "svg")


def _check_metric(runs: Sequence[RunRecord], spec: MetricSpec) -> None:
    keys = {k for r in runs for k in r.latest}
    wanted = (
        [spec.requested]
        if spec.base is None
        else [f"val_{spec.base}", f"test_{spec.base}", f"best_test_{spec.base}"]
    )
    if not keys & set(wanted):
        raise ConfigError(
            f"metric {spec.requested!r} was not logged by any selected run; "
            f"metrics: {join_names(keys)} (or acc, loss, f1, precision, recall)"
        )


def _resolve_target(target: float | str | None) -> tuple[float | str | None, bool]:
    """A number, ``"auto"`` (computed once the runs are known) or None."""
    if target is None or (isinstance(target, str) and target.lower() == "none"):
        return None, False
    if isinstance(target, str) and target.lower() == "auto":
        return "auto", True
    try:
        value = float(target)
    except (TypeError, ValueError):
        raise ConfigError(f"--target: give a number, auto or none, got {target!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"--target: must be a finite number, got {target}")
    return value, False


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"png,pdf"`` -> ``("png", "pdf")``; an unknown format is a one-line error."""
    parts = formats.split(",") if isinstance(formats, str) else list(formats)
    out = tuple(dict.fromkeys(p.strip().lower() for p in parts if p.strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise ConfigError(
            f"--format: {', '.join(bad) or 'nothing given'} not valid; choose from "
            f"{', '.join(FORMATS)} (comma-separated)"
        )
    return out


def _validate(pairing: str, n_boot: int, repeats: str, group_by, pool_over):
    if n_boot < 0:
        raise ConfigError(f"--bootstrap: must be >= 0 resamples, got {n_boot}")
    if pairing not in PAIRING_CHOICES:
        raise ConfigError(
            f"--pairing: {pairing!r} is not valid; choose one of {', '.join(PAIRING_CHOICES)}"
        )
    if repeats not in REPEATS:
        raise ConfigError(f"--repeats: {repeats!r} is not valid; choose one of mean, latest")
    keys = parse_keys(group_by, "--group-by") if group_by is not None else None
    if keys == ():
        raise ConfigError("--group-by: give at least one tag or param name, e.g. variant")
    return keys, parse_keys(pool_over, "--pool-over")


@dataclass
class _Measured:
    """The runs measured: one source, one end point epoch rule, the frames."""

    source: str
    runs: list[RunRecord]
    notes: list[str]
    at_epoch: int | None
    auc_epochs: int | None
    per_run: "pd.DataFrame"
    units: "pd.DataFrame"
    lost: dict[str, dict[str, int]]
    target: float | None


def _measure(
    selection: Selection, spec: MetricSpec, keys: tuple[str, ...], target, repeats: str
) -> _Measured:
    """End points per run and per unit; a partial look when unfinished runs are included."""
    source, runs, notes = resolve_source(selection.runs, spec)
    partial = source != "test" and any(r.status == "RUNNING" or r.pruned for r in runs)
    at_epoch = common_epoch(runs, spec.curve) if partial else None
    if partial and spec.checkpoint == "best":
        raise ConfigError(
            "--checkpoint best needs finished runs; drop --include-running/--include-pruned "
            "or use --checkpoint final"
        )
    auc_epochs = common_epoch(runs, spec.curve)
    if target == "auto":
        target = default_target(runs, spec.curve, spec.mode, auc_epochs)
    per_run = per_run_frame(
        runs, spec, source, target, auc_epochs=auc_epochs, at_epoch=at_epoch
    )
    if per_run.empty:
        raise DataError(
            f"metric {spec.requested!r} has no finite values in the selected runs "
            f"on the {spec.checkpoint} checkpoint"
        )
    valued = set(per_run["run_id"])
    no_value = [r for r in runs if r.run_id not in valued]
    lost = lost_counts(selection.lost, no_value, keys)
    units = collapse_repeats(per_run, repeats)
    return _Measured(
        source, runs, notes, at_epoch, auc_epochs, per_run, units, lost, target
    )


def _order(units: "pd.DataFrame", spec: MetricSpec, baseline: str | None) -> list[str]:
    """Baseline first, then best-first by the tested mean: the table reads as a ranking."""
    groups = sorted(units["group"].unique())
    means = units.groupby("group")[spec.checkpoint].mean()
    sign = -1.0 if spec.mode == "max" else 1.0
    order = sorted((g for g in groups if g != baseline), key=lambda g: (sign * means[g], g))
    return ([baseline] if baseline is not None else []) + order


def compare_runs(
    *,
    experiment: str | None = None,
    study: str | None = None,
    filter_string: str | None = None,
    group_by: str | Sequence[str] | None = None,
    pool_over: str | Sequence[str] | None = None,
    metric: str = "acc",
    checkpoint: str | None = None,
    baseline: str | None = None,
    target: float | str | None = "auto",
    pairing: str = "auto",
    out_dir: str | Path | None = "./compare",
    tracking_uri: str | None = None,
    mode: str | None = None,
    include_pruned: bool = False,
    include_running: bool = False,
    repeats: str = "mean",
    x: str | None = None,
    baseline_x: float | str | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
    plots: bool = True,
    formats: str | Sequence[str] = "png",
    log_to_parent: bool = True,
) -> ComparisonResult:
    """Compare groups of runs: statistics, learning curves, and (with ``out_dir``) files.

    Args:
        experiment / study: MLflow experiment name (default ``ablate``), or the trial runs
            of an Optuna study across experiments; filter_string: extra MLflow filter.
        group_by: tag/param names defining a group (None: every config key that varies);
            pool_over: config keys allowed to vary inside a group (besides the seed).
        metric: ``acc`` (the final model's test accuracy, else the last validation epoch),
            ``val_acc``, ``test_f1``, ``best_test_acc``, ... or any logged key; checkpoint:
            ``final`` or ``best``; mode: ``max`` / ``min`` (inferred when None).
        baseline: group the others are tested against (default ``softmax`` when present).
        target: epochs-to-target level: a number, ``"auto"`` or None (not reported).
        pairing: ``auto`` (paired by seed when the seeds match), ``paired`` or ``welch``.
        out_dir: where figures and tables are written (None: nothing); tracking_uri: see
            :func:`ablate.compare.resolve_tracking_uri`.
        include_pruned / include_running: a partial look: pruned trials / RUNNING runs join,
            and every end point becomes the curve at the last epoch all reached.
        repeats: ``mean`` or ``latest``: a seed run more than once is one unit.
        x / baseline_x: dose-response against a numeric variant parameter or config key
            (e.g. ``alpha``), compared with the level ``baseline_x`` (default: the lowest).
        n_boot: BCa resamples, shown only where it covers (0: none); seed: their seed.
        plots / formats: draw the figures, e.g. in ``"png,pdf,svg"`` (with ``out_dir``).
        log_to_parent: for a study, log the written files to its parent run (``compare/``).
    """
    spec = parse_metric(metric, checkpoint, mode)
    keys, pooled = _validate(pairing, n_boot, repeats, group_by, pool_over)
    formats = parse_formats(formats)
    target, target_auto = _resolve_target(target)
    selection = select_runs(
        experiment=experiment, study=study, filter_string=filter_string,
        metrics=[*CURVE_METRICS, spec.curve, SELECTION_METRIC], tracking_uri=tracking_uri,
        include_pruned=include_pruned, include_running=include_running,
    )  # fmt: skip
    _check_metric(selection.runs, spec)
    keys = assign_groups(selection.runs, _with_x(selection.runs, x, keys), pooled)
    measured = _measure(selection, spec, keys, target, repeats)
    groups = sorted(measured.units["group"].unique())
    resolved, note = (None, None) if x is not None else resolve_baseline(baseline, groups)
    order = _order(measured.units, spec, resolved)
    result = _analyse(selection, spec, measured, order, resolved, pairing, n_boot, seed, repeats)
    result.group_by, result.pool_over = keys, pooled
    result.following = following_keys(selection.runs, keys, pooled)
    result.target_auto, result.include_running = target_auto, include_running
    result.filter_string, result.formats = filter_string, formats
    result.notes += [note] if note else []
    if x is not None:
        result.dose = _dose(result, x, baseline_x, pairing)
    result.notes.extend(notes_for(selection, result))
    if out_dir is not None:
        log = study is not None and log_to_parent
        _write(result, Path(out_dir), order, plots, tracking_uri if log else False)
    return result


def _with_x(
    runs: Sequence[RunRecord], x: str | None, keys: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """With ``--x``, its level comes first among the group-by keys."""
    if x is None:
        return keys
    from ablate.compare.dose import x_key

    return (x_key(runs, x), *(keys or ()))


def _dose(result: ComparisonResult, x: str, baseline_x, pairing: str):
    from ablate.compare.dose import dose_response

    return dose_response(result, x, baseline_x, pairing=pairing)


def _write(
    result: ComparisonResult, out: Path, order: list[str], plots: bool, log: str | None | bool
) -> None:
    """Files under ``out``; unless ``log`` is False (then: the tracking URI), logged to the
    study's parent run under ``compare/``."""
    from ablate.compare.files import write_outputs

    result.files = write_outputs(result, out, order, plots=plots)
    if log is not False and result.parent_run_id:
        result.logged_artifacts = log_files(result.parent_run_id, result.files, log)


def _analyse(
    selection: Selection, spec: MetricSpec, measured: _Measured, order: list[str],
    baseline: str | None, pairing: str, n_boot: int, seed: int, repeats: str,
) -> ComparisonResult:
    """The group table, the curves and the differences per epoch."""
    trials = group_trials(measured.runs, measured.source)
    table = summarize(
        measured.units, spec=spec, order=order, baseline=baseline,
        target=measured.target, pairing=pairing, n_boot=n_boot, seed=seed,
        trials=trials, lost=measured.lost,
    )  # fmt: skip
    runs = measured.runs
    wanted = dict.fromkeys([*CURVE_METRICS, spec.curve])
    curve_metrics = [m for m in wanted if any(m in r.histories for r in runs)]
    bounds = {m: (0.0, 1.0) for m in curve_metrics if parse_metric(m, mode="max").bounds}
    curves = aggregate_curves(runs, curve_metrics, order, bounds=bounds, repeats=repeats)
    diffs = diff_curves(runs, spec.curve, order, baseline, bounds=spec.bounds, repeats=repeats)
    return ComparisonResult(
        spec=spec, endpoint_source=measured.source, group_by=(), pool_over=(), following=(),
        baseline=baseline, target=measured.target, target_auto=False,
        source=selection.source, filter_string=None, runs=runs, per_run=measured.per_run,
        table=table, curves=curves, diffs=diffs, notes=list(selection.notes + measured.notes),
        units=measured.units, at_epoch=measured.at_epoch, auc_epochs=measured.auc_epochs,
        repeats=repeats, data=data_description(runs), parent_run_id=selection.parent_run_id,
        family=family_count(table) if baseline is not None else 0,
    )  # fmt: skip
