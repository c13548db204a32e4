"""`ablate compare` end to end: select, group, measure, test, and write.

Data flow: :func:`~.select.select_runs` (MLflow; lost runs kept aside) ->
:func:`~.grouping.assign_groups` (every run, lost ones included; refuses to pool different
configs) -> :func:`measure` (the compared runs: a finite end point, not diverged; the AUC
window, the target and every curve come from them only) -> :func:`~.endpoints.per_run_frame`
and :func:`~.endpoints.collapse_repeats` (one unit per seed) -> :func:`~.summary.summarize`
(one Holm family) and :mod:`~.curves` -> :mod:`~.render` and :mod:`~.files` (for a study,
also attached to its parent run). ``--x`` adds :mod:`~.dose`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ablate.cli_options import option
from ablate.compare import curves, endpoints, grouping
from ablate.compare.curves import CURVE_METRICS
from ablate.compare.endpoints import CHECKPOINTS, REPEATS, MetricSpec
from ablate.compare.intervals import BOOTSTRAP_MIN_N
from ablate.compare.notes import data_description, evaluated_sizes, family_count, notes_for
from ablate.compare.result import ComparisonResult
from ablate.compare.select import DEFAULT_EXPERIMENT, RunRecord, join_names, select_runs
from ablate.compare.stats import PAIRING_CHOICES
from ablate.compare.summary import DEFAULT_BASELINE, resolve_baseline, summarize
from ablate.exceptions import ConfigError, DataError
from ablate.tracking import conventions as cv

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FORMATS", "CompareOptions", "compare_runs", "measure"]

FORMATS = ("png", "pdf", "svg")


@dataclass(frozen=True)
class CompareOptions:
    """The options of `ablate compare`, one field per flag (``--group-by`` is ``group_by``);
    :func:`compare_runs` takes them as keyword arguments."""

    experiment: str | None = option(None, "MLflow experiment whose runs are compared (default: "
                                    f"{DEFAULT_EXPERIMENT})", metavar="NAME")  # fmt: skip
    study: str | None = option(None, "compare the trial runs of this Optuna study (across "
                               "experiments); the files are also attached to the study's "
                               "parent run under compare/", metavar="NAME")  # fmt: skip
    filter: str | None = option(None, "MLflow search filter, e.g. \"params.dataset = 'digits' "
                                "and params.epochs = '30'\"", metavar="EXPR")  # fmt: skip
    group_by: str | None = option(None, "comma-separated params (or tags) that define a group "
                                  "(default: every config key that varies, seed excepted); runs "
                                  "of a group may differ only by seed and --pool-over keys",
                                  metavar="KEYS")  # fmt: skip
    pool_over: str | None = option(None, "config keys allowed to vary inside a group, e.g. "
                                   "lr,epochs (default: only seed)", metavar="KEYS")  # fmt: skip
    metric: str = option("acc", "end point: acc, loss, f1, precision or recall (the final "
                         "model's test number when every run has one, else the validation "
                         "curve's last epoch), acc/val, test_f1, best_test_acc, ... or any "
                         "logged metric")  # fmt: skip
    checkpoint: str | None = option(None, "the weights the end point measures: final (the "
                                    "default) or best (the best-validation checkpoint, chosen "
                                    "on acc/val over epochs >= 1)",
                                    choices=CHECKPOINTS)  # fmt: skip
    baseline: str | None = option(None, "the group the others are compared with (default: "
                                  f"{DEFAULT_BASELINE} when present)",
                                  metavar="GROUP")  # fmt: skip
    pairing: str = option("auto", "auto: paired t-test on the seeds a group shares with the "
                          "baseline (same split, init and data order) when they have the same "
                          "seeds or share 3 and at least half, Welch's t-test otherwise; "
                          "paired: on the shared seeds; welch: never pair",
                          choices=PAIRING_CHOICES)  # fmt: skip
    target: str = option("auto", "report the epochs (>= 1) runs needed to reach this "
                         "validation value; auto: the worst group's mean at the last common "
                         "epoch, rounded down; none: off", metavar="VALUE")  # fmt: skip
    x: str | None = option(None, "dose-response: the end point against this numeric variant "
                           "parameter (param variant.X) or config key, e.g. alpha: a row per "
                           "level and a trend test over per-seed slopes",
                           metavar="PARAM")  # fmt: skip
    baseline_x: str | None = option(None, "with --x: the level the others are compared with "
                                    "(default: the lowest)", metavar="VALUE")  # fmt: skip
    mode: str | None = option(None, "higher (max) or lower (min) is better (default: max for "
                              "accuracy, f1, precision, recall; min for losses)",
                              choices=("max", "min"))  # fmt: skip
    include_pruned: bool = option(False, "partial look: also pruned trials; every end point is "
                                  "then the validation value at the last epoch all runs "
                                  "reached")  # fmt: skip
    include_running: bool = option(False, "partial look: also RUNNING runs (left out and counted "
                                   "by default), labelled as for --include-pruned")  # fmt: skip
    repeats: str = option("mean", "a seed run more than once in a group is one unit: the mean "
                          "of its runs, or its latest run", choices=REPEATS)  # fmt: skip
    bootstrap: int = option(10_000, "BCa bootstrap resamples of the difference's interval, "
                            f"shown for unpaired groups from {BOOTSTRAP_MIN_N} seeds each, where "
                            "it covers its 95%%; 0: none", metavar="N")  # fmt: skip
    bootstrap_seed: int = option(0, "seed of the bootstrap and permutation generators",
                                 metavar="SEED")  # fmt: skip
    out: str | None = option("./compare", "directory for the figures and tables (CSV, "
                             "Markdown)", metavar="DIR")  # fmt: skip
    format: str = option("png", f"figure formats, comma-separated from {', '.join(FORMATS)}; "
                         "PNG at 300 dpi, PDF with TrueType fonts, SVG with text as text",
                         metavar="LIST")  # fmt: skip
    plots: bool = option(True, "draw the figures (--no-plots: the tables only)")
    titles: bool = option(True, "title the figures (--no-titles: for a caption instead)")
    tracking_uri: str | None = None  # declared once for every command: ablate.cli_options


def _resolve_target(target: Any) -> tuple[float | str | None, bool]:
    """A number, ``auto`` (computed once the runs are known) or None; and whether auto."""
    text = str(target).strip().lower() if target is not None else "none"
    if text in ("none", "auto"):
        return (None, False) if text == "none" else ("auto", True)
    try:
        value = float(target)
    except (TypeError, ValueError):
        raise ConfigError(f"--target: give a number, auto or none, got {target!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"--target: must be a finite number, got {target}")
    return value, False


def parse_formats(formats: str) -> tuple[str, ...]:
    """``"png,pdf"`` -> ``("png", "pdf")``; an unknown format is a one-line error."""
    out = tuple(dict.fromkeys(p.strip().lower() for p in str(formats).split(",") if p.strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise ConfigError(f"--format: {', '.join(bad) or 'nothing given'} not valid; choose from "
                          f"{', '.join(FORMATS)} (comma-separated)")  # fmt: skip
    return out


def _check(opts: CompareOptions, spec: MetricSpec, runs: Sequence[RunRecord]) -> None:
    for value, name, choices in ((opts.pairing, "pairing", PAIRING_CHOICES),
                                 (opts.repeats, "repeats", REPEATS)):  # fmt: skip
        if value not in choices:
            raise ConfigError(f"--{name}: {value!r} is not valid; choose one of "
                              f"{', '.join(choices)}")  # fmt: skip
    if opts.bootstrap < 0:
        raise ConfigError(f"--bootstrap: must be >= 0 resamples, got {opts.bootstrap}")
    keys = {k for r in runs for k in r.latest}
    wanted = {spec.requested} if spec.base is None else {spec.curve, f"test_{spec.base}",
                                                         f"best_test_{spec.base}"}  # fmt: skip
    if runs and not keys & wanted:
        raise ConfigError(f"metric {spec.requested!r} was not logged by any selected run; "
                          f"metrics: {join_names(keys)} (or acc, loss, f1, precision, recall)")


@dataclass
class Measured:
    """What :func:`measure` found: where the end points come from (test, val, raw), the
    compared runs, the partial look's epoch, the AUC window and the run that set it, one
    row per run and per unit, runs lost per group, the epochs-to-target level."""

    source: str
    runs: list[RunRecord]  # the compared runs
    notes: list[str]
    at_epoch: int | None
    auc_epochs: int | None
    auc_set_by: RunRecord | None
    per_run: "pd.DataFrame"
    units: "pd.DataFrame"
    lost: dict[str, dict[str, int]]
    target: float | None


def measure(selection, spec: MetricSpec, target: Any, repeats: str) -> Measured:
    """The compared runs and their numbers; windows, targets and curves come from them only,
    never from a run the tables leave out."""
    source, runs, notes = endpoints.resolve_source(selection.runs, spec)
    partial = source != "test" and any(r.status == cv.RUNNING or r.pruned for r in runs)
    if partial and spec.checkpoint == "best":
        raise ConfigError("--checkpoint best needs finished runs; drop --include-running/"
                          "--include-pruned or use --checkpoint final")  # fmt: skip
    zero = [r.name for r in runs if r.latest.get("best_epoch", 1) < 1]
    if spec.checkpoint == "best" and zero:
        raise ConfigError(f"--checkpoint best: {join_names(zero[:5])} logged best_epoch 0, the "
                          "untrained or pretrained model, which is never a best checkpoint; use "
                          "--checkpoint final")  # fmt: skip
    healthy = [r for r in runs if r.diverged_at is None]
    at_epoch = None
    if partial:
        at_epoch, short = curves.shortest_curve(healthy, spec.curve)
        if not (at_epoch or 0) >= 1:
            who = f"run {short.name} has {spec.curve} at epoch 0 only" if short else (
                f"no run has {spec.curve}")  # fmt: skip
            raise ConfigError(f"partial look: the runs share no trained epoch ({who}); wait for "
                              "an epoch or leave out --include-running/--include-pruned")
    point = endpoints.run_endpoint
    compared = [r for r in healthy
                if math.isfinite(point(r, spec, source, spec.checkpoint, at_epoch).value)]
    if not compared:
        raise DataError(f"metric {spec.requested!r} has no finite values in the selected runs "
                        f"on the {spec.checkpoint} checkpoint")  # fmt: skip
    window, short = curves.shortest_curve(compared, spec.curve)
    longest = max((int(r.histories[spec.curve].index[-1]) for r in compared
                   if len(r.histories.get(spec.curve, ()))), default=-1)  # fmt: skip
    if target == "auto":
        target = curves.default_target(compared, spec.curve, spec.mode, window)
    per_run = endpoints.per_run_frame(compared, spec, source, target, auc_epochs=window,
                                      at_epoch=at_epoch)  # fmt: skip
    lost = grouping.lost_counts([*selection.lost, *(r for r in runs if r not in compared)])
    return Measured(source, compared, notes, at_epoch, window,
                     short if window is not None and window < longest else None, per_run,
                     endpoints.collapse_repeats(per_run, repeats), lost, target)  # fmt: skip


def _order(units: "pd.DataFrame", spec: MetricSpec, baseline: str | None, groups) -> list[str]:
    """Baseline first, then best-first by the tested mean (the table reads as a ranking),
    then the groups without a finished run."""
    means = units.groupby("group")[spec.checkpoint].mean()
    sign = -1.0 if spec.mode == "max" else 1.0
    ranked = sorted((g for g in means.index if g != baseline), key=lambda g: (sign * means[g], g))
    rest = sorted(set(groups) - set(means.index))
    return [g for g in [baseline] if g is not None] + ranked + rest


def compare_runs(**options: Any) -> ComparisonResult:
    """Compare groups of runs; the keyword arguments are the fields of
    :class:`CompareOptions` (``out=None``: write no files)."""
    opts = CompareOptions(**options)
    spec = endpoints.parse_metric(opts.metric, opts.checkpoint, opts.mode)
    group_by = None if opts.group_by is None else grouping.parse_keys(opts.group_by, "--group-by")
    if group_by == ():
        raise ConfigError("--group-by: give at least one param name, e.g. variant")
    pool_over = grouping.parse_keys(opts.pool_over, "--pool-over")
    formats = parse_formats(opts.format)
    target, target_auto = _resolve_target(opts.target)
    _check(opts, spec, [])
    selection = select_runs(
        experiment=opts.experiment, study=opts.study, filter_string=opts.filter,
        metrics=[*CURVE_METRICS, spec.curve, cv.VAL_ACC], tracking_uri=opts.tracking_uri,
        include_pruned=opts.include_pruned, include_running=opts.include_running,
    )  # fmt: skip
    _check(opts, spec, selection.runs)
    everyone = [*selection.runs, *selection.lost]
    if opts.x is not None:
        from ablate.compare.dose import x_key

        group_by = (x_key(selection.runs, opts.x), *(group_by or ()))
    keys = grouping.assign_groups(everyone, group_by, pool_over)
    measured = measure(selection, spec, target, opts.repeats)
    groups = sorted({r.group for r in everyone})
    finished = sorted(set(measured.units["group"]))
    baseline, note = (None, None) if opts.x else resolve_baseline(opts.baseline, groups, finished)
    order = _order(measured.units, spec, baseline, groups)
    result = _analyse(selection, spec, measured, order, baseline, opts)
    following = grouping.following_keys(everyone, keys, pool_over)
    result = replace(result, group_by=keys, pool_over=pool_over, following=following,
                     confounders=grouping.confounders(following, keys),
                     target_auto=target_auto)  # fmt: skip
    result.notes += [note] if note else []
    if opts.x is not None:
        from ablate.compare.dose import dose_response

        result.dose = dose_response(result, opts.x, opts.baseline_x, pairing=opts.pairing)
    if result.confounders:
        _withhold_stars(result)
    result.notes += notes_for(selection, result)
    if opts.out is not None:
        from ablate.compare.files import write_outputs
        from ablate.compare.select import attach_to_parent

        result.files = write_outputs(result, Path(opts.out), order, draw=opts.plots,
                                     formats=formats, titles=opts.titles)  # fmt: skip
        if opts.study is not None and result.parent_run_id:
            result.logged_artifacts = attach_to_parent(result.parent_run_id, result.files,
                                                       opts.tracking_uri)  # fmt: skip
    return result


def _withhold_stars(result: ComparisonResult) -> None:
    """Groups that also differ in a confounder (lr, epochs) measure the combination: no star."""
    for column in ("significant", "auc_significant"):
        if column in result.table:
            result.table[column] = False
    if result.dose is not None:
        result.dose.levels["significant"] = False
        for t in result.dose.trends:
            t["significant"] = False


def _analyse(
    selection, spec: MetricSpec, measured: Measured, order: list[str], baseline: str | None,
    opts: CompareOptions,
) -> ComparisonResult:  # fmt: skip
    """The group table, the curves and the differences per epoch, of the compared runs."""
    runs = measured.runs
    table = summarize(
        measured.units, spec=spec, order=order, baseline=baseline, target=measured.target,
        pairing=opts.pairing, n_boot=opts.bootstrap, seed=opts.bootstrap_seed,
        n_items=evaluated_sizes(runs, measured.source), lost=measured.lost,
    )  # fmt: skip
    metrics = [m for m in dict.fromkeys([*CURVE_METRICS, spec.curve])
               if any(m in r.histories for r in runs)]
    bounds = {m: (0.0, 1.0) for m in metrics if endpoints.parse_metric(m, mode="max").bounds}
    return ComparisonResult(
        spec=spec, endpoint_source=measured.source, source=selection.source, runs=runs,
        per_run=measured.per_run, units=measured.units, table=table,
        curves=curves.aggregate_curves(runs, metrics, order, bounds=bounds, repeats=opts.repeats),
        diffs=curves.diff_curves(runs, spec.curve, order, baseline, bounds=spec.bounds,
                          repeats=opts.repeats),
        notes=list(selection.notes + measured.notes), baseline=baseline,
        target=measured.target, at_epoch=measured.at_epoch, auc_epochs=measured.auc_epochs,
        auc_set_by=measured.auc_set_by, repeats=opts.repeats, data=data_description(runs),
        parent_run_id=selection.parent_run_id,
        family=family_count(table) if baseline is not None else 0,
    )  # fmt: skip
