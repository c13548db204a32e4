"""`ablate compare` end to end: select, group, measure, test, and write.

Data flow: :func:`~ablate.compare.select.select_runs` (MLflow) -> ``RunRecord`` per run ->
:func:`~ablate.compare.grouping.assign_groups` (refuses to pool different configs) ->
:func:`~ablate.compare.endpoints.per_run_frame` (final / best-val checkpoint value, the
model it came from, curve AUC, epochs to target) -> :func:`~ablate.compare.summary.summarize`
(per-group statistics and tests against the baseline) and
:mod:`~ablate.compare.curves` (mean curves, differences from the baseline per epoch) ->
:mod:`~ablate.compare.render` (tables, figures; for a study, logged to its parent run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ablate.compare import render
from ablate.compare.curves import CURVE_METRICS, aggregate_curves, default_target, diff_curves
from ablate.compare.endpoints import (
    SELECTION_METRIC,
    MetricSpec,
    parse_metric,
    per_run_frame,
    resolve_source,
)
from ablate.compare.grouping import assign_groups, following_keys, parse_keys
from ablate.compare.select import RunRecord, Selection, join_names, log_files, select_runs
from ablate.compare.stats import BOOTSTRAP_MIN_N, BOOTSTRAP_MIN_PAIRS, LEVEL, PAIRING_CHOICES
from ablate.compare.summary import resolve_baseline, summarize
from ablate.exceptions import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ComparisonResult", "compare_runs"]


@dataclass
class ComparisonResult:
    """Everything `ablate compare` computed; ``table`` is numeric, ``format_table`` renders it.

    ``per_run``: one row per run (see :func:`ablate.compare.endpoints.per_run_frame`).
    ``table``: one row per group (see :func:`ablate.compare.summary.summarize`). ``curves``:
    long format (metric, group, step, n, mean, std, ci_low, ci_high). ``diffs``: each group
    minus the baseline per epoch (metric, group, step, n, test, diff, ci_low, ci_high).
    ``endpoint_source``: where the tested numbers came from, ``test``, ``val`` or ``raw``.
    ``following``: config keys that differ between groups along with the group-by keys.
    """

    spec: MetricSpec
    endpoint_source: str
    group_by: tuple[str, ...]
    pool_over: tuple[str, ...]
    following: tuple[str, ...]
    baseline: str | None
    target: float | None
    target_auto: bool
    source: str
    filter_string: str | None
    runs: list[RunRecord]
    per_run: "pd.DataFrame"
    table: "pd.DataFrame"
    curves: "pd.DataFrame"
    diffs: "pd.DataFrame"
    notes: list[str]
    files: list[Path] = field(default_factory=list)
    parent_run_id: str | None = None
    logged_artifacts: list[str] = field(default_factory=list)

    @property
    def metric(self) -> str:
        """The metric key the tested numbers are, e.g. ``test_acc`` or ``val_acc``."""
        return self.spec.label(self.endpoint_source)

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def checkpoint(self) -> str:
        return self.spec.checkpoint

    def format_table(self) -> str:
        """The summary tables with aligned columns, as printed by the command."""
        return render.format_table(self)

    def to_markdown(self) -> str:
        """The summary tables as GitHub-flavoured Markdown."""
        return render.format_table(self, markdown=True)


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


def _resolve_target(
    target: float | str | None, runs: Sequence[RunRecord], spec: MetricSpec
) -> tuple[float | None, bool]:
    if target is None or (isinstance(target, str) and target.lower() == "none"):
        return None, False
    if isinstance(target, str) and target.lower() == "auto":
        return default_target(runs, spec.curve, spec.mode), True
    try:
        value = float(target)
    except (TypeError, ValueError):
        raise ConfigError(f"--target: give a number, auto or none, got {target!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"--target: must be a finite number, got {target}")
    return value, False


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
    n_boot: int = 10_000,
    seed: int = 0,
    plots: bool = True,
    log_to_parent: bool = True,
) -> ComparisonResult:
    """Compare groups of runs: statistics, learning curves, and (with ``out_dir``) files.

    Args:
        experiment: MLflow experiment name (default ``ablate``); exclusive with ``study``.
        study: compare the trial runs of this Optuna study, across experiments.
        filter_string: extra MLflow filter, e.g. ``tags.dataset = 'digits'``.
        group_by: tag/param names defining a group, e.g. ``"variant,apply_to"``; None: every
            config key that varies across the runs (seed excepted).
        pool_over: config keys allowed to vary inside a group (besides the seed).
        metric: ``acc`` (default: the final model's test accuracy, else the last validation
            epoch), ``val_acc``, ``test_f1``, ``best_test_acc``, ... or any logged key.
        checkpoint: ``final`` (default) or ``best`` (best-validation checkpoint).
        baseline: group the others are tested against (default ``softmax`` when present).
        target: epochs-to-target level: a number, ``"auto"`` (the worst group's mean final
            validation value) or None (not reported).
        pairing: ``auto`` (paired by seed when the seeds match), ``paired`` or ``welch``.
        out_dir: where figures and tables are written; None writes nothing.
        tracking_uri: MLflow tracking URI (see :func:`ablate.compare.resolve_tracking_uri`).
        mode: ``max`` / ``min``; inferred from the metric name when None.
        include_pruned: keep pruned study trials.
        n_boot: bootstrap resamples (0: no bootstrap intervals); seed: their RNG seed.
        plots: draw the PNG figures (only with ``out_dir``).
        log_to_parent: for a study, log the written files to its parent run under ``compare/``.
    """
    spec = parse_metric(metric, checkpoint, mode)
    if n_boot < 0:
        raise ConfigError(f"--bootstrap: must be >= 0 resamples, got {n_boot}")
    if pairing not in PAIRING_CHOICES:
        raise ConfigError(
            f"--pairing: {pairing!r} is not valid; choose one of {', '.join(PAIRING_CHOICES)}"
        )
    keys = parse_keys(group_by, "--group-by") if group_by is not None else None
    if keys == ():
        raise ConfigError("--group-by: give at least one tag or param name, e.g. variant")
    pooled = parse_keys(pool_over, "--pool-over")
    histories = [*CURVE_METRICS, spec.curve, SELECTION_METRIC]
    selection = select_runs(
        experiment=experiment,
        study=study,
        filter_string=filter_string,
        metrics=histories,
        tracking_uri=tracking_uri,
        include_pruned=include_pruned,
    )
    _check_metric(selection.runs, spec)
    keys = assign_groups(selection.runs, keys, pooled)
    following = following_keys(selection.runs, keys, pooled)
    endpoint_source, runs, notes = resolve_source(selection.runs, spec)
    notes = [*selection.notes, *notes]
    target_value, target_auto = _resolve_target(target, runs, spec)

    per_run = per_run_frame(runs, spec, endpoint_source, target_value)
    if per_run.empty:
        raise DataError(
            f"metric {spec.requested!r} has no finite values in the selected runs "
            f"on the {spec.checkpoint} checkpoint"
        )
    missing = [r.name for r in runs if r.run_id not in set(per_run["run_id"])]
    if missing:
        notes.append(
            f"{len(missing)} run(s) have no {spec.label(endpoint_source)!r} yet and are left "
            "out of the table: " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        )

    groups = sorted(per_run["group"].unique())
    resolved, baseline_note = resolve_baseline(baseline, groups)
    if baseline_note:
        notes.append(baseline_note)
    # Baseline first, then best-first by the tested mean: the table reads as a ranking.
    means = per_run.groupby("group")[spec.checkpoint].mean()
    sign = -1.0 if spec.mode == "max" else 1.0
    order = sorted((g for g in groups if g != resolved), key=lambda g: (sign * means[g], g))
    if resolved is not None:
        order.insert(0, resolved)

    table = summarize(
        per_run,
        spec=spec,
        order=order,
        baseline=resolved,
        target=target_value,
        pairing=pairing,
        n_boot=n_boot,
        seed=seed,
    )
    curve_metrics = [
        m
        for m in dict.fromkeys([*CURVE_METRICS, spec.curve])
        if any(m in r.histories for r in runs)
    ]
    bounds = {m: (0.0, 1.0) for m in curve_metrics if parse_metric(m, mode="max").bounds}
    curves = aggregate_curves(runs, curve_metrics, order, bounds=bounds)
    diffs = diff_curves(runs, spec.curve, order, resolved, bounds=spec.bounds)

    result = ComparisonResult(
        spec=spec,
        endpoint_source=endpoint_source,
        group_by=keys,
        pool_over=pooled,
        following=following,
        baseline=resolved,
        target=target_value,
        target_auto=target_auto,
        source=selection.source,
        filter_string=filter_string,
        runs=runs,
        per_run=per_run,
        table=table,
        curves=curves,
        diffs=diffs,
        notes=notes,
        parent_run_id=selection.parent_run_id,
    )
    result.notes.extend(_notes(selection, result))
    if out_dir is not None:
        result.files = render.write_outputs(result, Path(out_dir), order, plots=plots)
        if study is not None and log_to_parent and selection.parent_run_id:
            result.logged_artifacts = log_files(
                selection.parent_run_id, result.files, tracking_uri
            )
    return result


def _notes(selection: Selection, result: ComparisonResult) -> list[str]:
    """Plain-language caveats printed under the tables."""
    per_run, table, metric = result.per_run, result.table, result.metric
    notes: list[str] = []
    if selection.excluded:
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(selection.excluded.items()))
        notes.append(f"left out: {parts}")
    running = per_run[per_run["status"] == "RUNNING"]
    if len(running):
        notes.append(
            f"{len(running)} run(s) still RUNNING contribute the epochs logged so far "
            f"(final = last logged {metric})"
        )
    if per_run["pruned"].any():
        notes.append(
            f"{int(per_run['pruned'].sum())} pruned run(s) included: their final value is at "
            "the pruned epoch"
        )
    small = table[table["n"] < 3]
    if len(small):
        listed = ", ".join(f"{g} (n={n})" for g, n in zip(small["group"], small["n"]))
        notes.append(
            f"too few runs to conclude anything for {listed}: CIs and p-values need n>=2 "
            "per group and are unreliable below 3 seeds"
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
    if result.baseline is not None and "test" in table.columns:
        others = table[table["group"] != result.baseline]
        tests = {t: [g for g, tt in zip(others["group"], others["test"]) if tt == t]
                 for t in ("paired t", "Welch t")}  # fmt: skip
        used = "; ".join(f"{t} for {', '.join(gs)}" for t, gs in tests.items() if gs)
        k = int(others["p_value"].notna().sum())
        if used:
            notes.append(
                f"tests against {result.baseline}: {used} (paired = same seeds, hence same "
                f"split, init and data order); p (Holm) corrects over the {k} comparison(s), "
                f"family-wise level {LEVEL:g}; the AUC comparisons are a second family"
            )
        if others["boot_ci_low"].isna().all() and len(others):
            notes.append(
                f"no bootstrap interval: BCa needs >= {BOOTSTRAP_MIN_N} runs per group "
                f"(>= {BOOTSTRAP_MIN_PAIRS} paired seeds) to cover its 95%; the t-interval is "
                "exact for normal noise"
            )
        if others["mde"].notna().any():
            notes.append(
                f"MDE: the smallest true difference the test would detect with 80% power at "
                f"these seeds (two-sided, level {LEVEL:g}/{max(k, 1)}); seeds for Δ: seeds "
                "per group that would detect the observed Δ"
            )
        reasons = {r for r in others["reason"] if r}
        if reasons:
            notes.append("not tested: " + "; ".join(sorted(reasons)))
    # Curves averaged over fewer runs at later epochs (runs of different lengths).
    drops = []
    curves = result.curves
    shown = result.spec.curve if result.spec.curve in set(curves["metric"]) else "val_acc"
    for group, sub in curves[curves["metric"] == shown].groupby("group", sort=False):
        n = sub["n"].to_numpy()
        steps = sub["step"].to_numpy()
        for i in range(1, len(n)):
            if n[i] < n[i - 1]:
                drops.append(f"{group} n={n[i - 1]}->{n[i]} at epoch {steps[i]}")
    if drops:
        notes.append("curves use fewer runs at later epochs: " + "; ".join(drops))
    return notes
