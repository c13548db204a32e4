"""`ablate compare`: learning curves and significance tables across groups of MLflow runs.

Data flow: ``select_runs`` (MLflow search: experiment or study, --filter, status rules) ->
``RunRecord`` per trial with its full metric histories (step = epoch) -> ``per_run_frame``
(final / best / epochs-to-target per run) -> ``summarize`` (per-group statistics, Welch
test and bootstrap CI against the baseline) and ``aggregate_curves`` (mean and t-interval
per epoch, aligned by epoch) -> figures (``ablate.plots``), CSV / Markdown tables, and for
a study the same files logged to its parent run under ``compare/``.

Everything heavy (mlflow, pandas, scipy, matplotlib) is imported inside functions so that
``import ablate`` stays light.
"""

from __future__ import annotations

import argparse
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ablate.exceptions import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = [
    "CURVE_METRICS",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI",
    "RunRecord",
    "Selection",
    "ComparisonResult",
    "resolve_tracking_uri",
    "infer_mode",
    "select_runs",
    "per_run_frame",
    "t_interval",
    "welch_p_value",
    "bootstrap_diff_ci",
    "epochs_to_target",
    "summarize",
    "aggregate_curves",
    "compare_runs",
    "format_table",
    "format_report",
    "add_arguments",
    "command",
]

# Learning curves drawn for every comparison (a metric no selected run has is skipped).
CURVE_METRICS = ("val_acc", "val_loss", "train_loss", "alpha")
DEFAULT_EXPERIMENT = "ablate"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # same default as ablate.tracking
# Tried as the reference group when --baseline is not given: plain softmax attention is
# what every other attention variant in an ablation is measured against.
DEFAULT_BASELINE = "softmax"
CONFIDENCE = 0.95
MISSING_VALUE = "(none)"

_MAX_WORDS = ("acc", "f1", "precision", "recall", "auc", "score")
_MIN_WORDS = ("loss", "error", "perplexity", "ppl")


# --------------------------------------------------------------------------------------
# data containers
# --------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """One selected trial run and the metric histories read for it.

    ``histories[key]`` is a float Series indexed by step (= epoch), sorted, one value per
    step (the last one logged for that step), non-finite values removed.
    """

    run_id: str
    name: str
    experiment_id: str
    status: str
    pruned: bool
    group: str
    group_values: dict[str, str]
    tags: dict[str, str]
    params: dict[str, str]
    metric_keys: frozenset[str]
    histories: dict[str, "pd.Series"] = field(default_factory=dict)


@dataclass
class Selection:
    """The runs a comparison reads, and what was left out and why."""

    source: str  # human-readable: "experiment 'ablate'" / "study 'lr-sweep'"
    runs: list[RunRecord]
    excluded: dict[str, int]  # reason -> count
    parent_run_id: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ComparisonResult:
    """Everything `ablate compare` computed; ``table`` is numeric, ``format_table`` renders it.

    ``per_run``: one row per run (group, run_id, run_name, status, final, best, last_epoch,
    epochs_to_target). ``table``: one row per group (see :func:`summarize`). ``curves``: long
    format (metric, group, step, n, mean, std, ci_low, ci_high).
    """

    metric: str
    mode: str
    group_by: tuple[str, ...]
    baseline: str | None
    target: float | None
    source: str
    filter_string: str | None
    runs: list[RunRecord]
    per_run: "pd.DataFrame"
    table: "pd.DataFrame"
    curves: "pd.DataFrame"
    notes: list[str]
    files: list[Path] = field(default_factory=list)
    parent_run_id: str | None = None
    logged_artifacts: list[str] = field(default_factory=list)

    def format_table(self) -> str:
        """The summary table with aligned columns, as printed by the command."""
        return format_table(self)

    def to_markdown(self) -> str:
        """The summary table as a GitHub-flavoured Markdown table."""
        return format_table(self, markdown=True)


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def _one_line(text: str, limit: int = 220) -> str:
    """First line of an (MLflow) error message, shortened, so errors stay one line."""
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _quote(value: str, what: str) -> str:
    """Quote a value for an MLflow filter string (which has no escape sequences)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ConfigError(
        f"{what} {value!r} contains both quote characters; rename it to search for it"
    )


def _join_names(names: Iterable[str], empty: str = "none") -> str:
    names = sorted({str(n) for n in names})
    return ", ".join(names) if names else empty


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db`` (working dir).

    A SQLite store that does not exist yet is an error here: comparing must not silently
    create an empty database in the wrong directory.
    """
    from ablate.tracking import resolve_tracking_uri as _precedence  # the writer's rule

    uri = _precedence(tracking_uri)
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        path = Path(uri[len("sqlite:///") :])
        if not path.is_file():
            raise DataError(
                f"no MLflow store at {path.resolve() if not path.is_absolute() else path}; "
                "pass --tracking-uri or set MLFLOW_TRACKING_URI"
            )
    return uri


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
    # Losses first: "acc_loss" style names are losses.
    if any(word in name for word in _MIN_WORDS):
        return "min"
    if any(word in name for word in _MAX_WORDS):
        return "max"
    raise ConfigError(
        f"cannot tell whether higher or lower {metric!r} is better; pass --mode max or --mode min"
    )


def _parse_group_by(group_by: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(group_by, str):
        keys = [k.strip() for k in group_by.split(",")]
    else:
        keys = [str(k).strip() for k in group_by]
    keys = [k for k in keys if k]
    if not keys:
        raise ConfigError("--group-by: give at least one tag or param name, e.g. variant,apply_to")
    return tuple(keys)


def _lookup(key: str, tags: dict[str, str], params: dict[str, str]) -> str | None:
    """Group-by value: tags first, then params; ``tags.x`` / ``params.x`` force one side."""
    if key.startswith("tags."):
        return tags.get(key[len("tags.") :])
    if key.startswith("params."):
        return params.get(key[len("params.") :])
    if key in tags:
        return tags[key]
    return params.get(key)


# --------------------------------------------------------------------------------------
# reading MLflow
# --------------------------------------------------------------------------------------
def _search_runs(
    client: "MlflowClient", experiment_ids: list[str], filter_string: str, user_filter: str | None
) -> list["Run"]:
    """All active runs matching ``filter_string`` (paginated); bad filters become ConfigError."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    runs: list[Run] = []
    token: str | None = None
    while True:
        try:
            page = client.search_runs(
                experiment_ids,
                filter_string=filter_string,
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=1000,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
        except MlflowException as err:
            if err.error_code == "INVALID_PARAMETER_VALUE" and user_filter:
                raise ConfigError(
                    f"--filter {user_filter!r} is not a valid MLflow filter: "
                    f"{_one_line(err.message)}"
                ) from None
            raise DataError(f"cannot search MLflow runs: {_one_line(err.message)}") from None
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _active_experiments(client: "MlflowClient") -> list[Any]:
    from mlflow.entities import ViewType

    experiments: list[Any] = []
    token: str | None = None
    while True:
        page = client.search_experiments(
            view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
        )
        experiments.extend(page)
        token = page.token
        if not token:
            return experiments


def _combine(base: str, user_filter: str | None) -> str:
    return f"{base} and {user_filter}" if base and user_filter else (base or user_filter or "")


def _history(client: "MlflowClient", run_id: str, key: str) -> "pd.Series":
    """A metric's history as a Series indexed by step; the last value logged per step wins
    (a resumed run may log an epoch twice), non-finite values are dropped."""
    import pandas as pd

    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    values: dict[int, float] = {}
    for point in points:
        values[int(point.step)] = float(point.value)
    series = pd.Series(values, dtype=float, name=key)
    series.index = series.index.astype(int)
    series.index.name = "step"
    return series[series.map(math.isfinite)].sort_index()


def _open_client(tracking_uri: str | None) -> "MlflowClient":
    """A client on the resolved store; an unusable URI is one line, not a traceback."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.get_experiment_by_name(DEFAULT_EXPERIMENT)  # touches the store once
    except MlflowException as err:
        raise DataError(f"cannot open MLflow store {uri}: {_one_line(err.message)}") from None
    return client


def select_runs(
    *,
    experiment: str | None = None,
    study: str | None = None,
    filter_string: str | None = None,
    group_by: str | Sequence[str] = "variant",
    metrics: Iterable[str] = CURVE_METRICS,
    tracking_uri: str | None = None,
    include_pruned: bool = False,
    client: "MlflowClient | None" = None,
) -> Selection:
    """Find the trial runs to compare and read their metric histories.

    Args:
        experiment: MLflow experiment name (default ``ablate`` when no study is given).
        study: Optuna study name: its trial runs across all experiments instead.
        filter_string: extra MLflow search filter, e.g. ``tags.dataset = 'digits'``.
        group_by: tag/param names (comma-separated or a sequence) that define a group.
        metrics: metric keys whose full histories are read (when a run has them).
        tracking_uri: MLflow tracking URI (see :func:`resolve_tracking_uri`).
        include_pruned: also keep pruned trials (``trial_state=PRUNED``).
        client: an existing client (tracking_uri is then ignored).
    """
    if experiment is not None and study is not None:
        raise ConfigError("give --experiment or --study, not both")
    keys = _parse_group_by(group_by)
    filter_string = (filter_string or "").strip() or None
    if client is None:
        client = _open_client(tracking_uri)

    if study is None:
        name = experiment or DEFAULT_EXPERIMENT
        exp = client.get_experiment_by_name(name)
        if exp is None or exp.lifecycle_stage != "active":
            names = [e.name for e in _active_experiments(client)]
            raise ConfigError(
                f"unknown experiment {name!r}; existing experiments: {_join_names(names)}"
            )
        experiment_ids = [exp.experiment_id]
        base = ""
        source = f"experiment {name!r}"
    else:
        experiment_ids = [e.experiment_id for e in _active_experiments(client)]
        base = f"tags.study = {_quote(study, 'study name')} and tags.role = 'trial'"
        source = f"study {study!r}"
    raw = _search_runs(client, experiment_ids, _combine(base, filter_string), filter_string)

    if not raw:
        if study is not None:
            anything = _search_runs(
                client, experiment_ids, f"tags.study = {_quote(study, 'study name')}", None
            )
            if not anything:
                parents = _search_runs(client, experiment_ids, "tags.role = 'study'", None)
                studies = [r.data.tags.get("study", "") for r in parents]
                listed = _join_names(s for s in studies if s)
                raise ConfigError(f"unknown study {study!r}; existing studies: {listed}")
            if not filter_string:
                raise DataError(f"study {study!r} has no trial runs yet")
        if filter_string:
            raise DataError(f"no runs in {source} match --filter {filter_string!r}")
        raise DataError(f"{source} has no runs")

    excluded: dict[str, int] = {}
    kept: list[Run] = []
    for run in raw:
        tags = run.data.tags
        status = run.info.status
        pruned = tags.get("trial_state") == "PRUNED"
        if tags.get("role") == "study":
            reason = "study parent run"  # holds the study summary, not a learning curve
        elif pruned and not include_pruned:
            reason = "pruned (add them with --include-pruned)"
        elif pruned or status in ("FINISHED", "RUNNING"):
            kept.append(run)
            continue
        else:
            reason = status  # FAILED, KILLED (interrupted), SCHEDULED
        excluded[reason] = excluded.get(reason, 0) + 1

    if not kept:
        what = ", ".join(f"{n} {reason}" for reason, n in excluded.items())
        raise DataError(
            f"no usable runs in {source}: all {len(raw)} matching runs are left out ({what})"
        )

    # A group-by key that no run knows is a typo, not a group called "(none)".
    for key in keys:
        if all(_lookup(key, r.data.tags, r.data.params) is None for r in kept):
            available = {k for r in kept for k in r.data.tags if not k.startswith("mlflow.")}
            available |= {k for r in kept for k in r.data.params}
            raise ConfigError(
                f"--group-by: no selected run has a tag or param {key!r}; "
                f"available: {_join_names(available)}"
            )

    wanted = list(dict.fromkeys(metrics))
    records: list[RunRecord] = []
    for run in kept:
        tags, params = dict(run.data.tags), dict(run.data.params)
        values = {key: _lookup(key, tags, params) or MISSING_VALUE for key in keys}
        record = RunRecord(
            run_id=run.info.run_id,
            name=run.info.run_name or run.info.run_id[:8],
            experiment_id=run.info.experiment_id,
            status=run.info.status,
            pruned=tags.get("trial_state") == "PRUNED",
            group="/".join(values[k] for k in keys),
            group_values=values,
            tags=tags,
            params=params,
            metric_keys=frozenset(run.data.metrics),
        )
        for key in wanted:
            if key in record.metric_keys:
                record.histories[key] = _history(client, record.run_id, key)
        records.append(record)

    selection = Selection(source=source, runs=records, excluded=excluded)
    if filter_string:
        selection.source = f"{source} with filter {filter_string!r}"
    if study is not None:
        selection.parent_run_id, note = _study_parent(client, study, raw, experiment_ids)
        if note:
            selection.notes.append(note)
    return selection


def _study_parent(
    client: "MlflowClient", study: str, trials: list["Run"], experiment_ids: list[str]
) -> tuple[str | None, str | None]:
    """The study's parent run: referenced by its trials, or tagged ``role=study``.

    When a study name was reused (several parents), the most recently started one gets the
    artifacts and a note says so.
    """
    from mlflow.exceptions import MlflowException

    candidates: dict[str, Any] = {}
    for run_id in {t.data.tags.get("mlflow.parentRunId") for t in trials} - {None, ""}:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            continue  # parent deleted or in an unreadable store: not an error for compare
        if run.info.lifecycle_stage == "active":
            candidates[run_id] = run
    if not candidates:
        tagged = _search_runs(
            client,
            experiment_ids,
            f"tags.study = {_quote(study, 'study name')} and tags.role = 'study'",
            None,
        )
        candidates = {r.info.run_id: r for r in tagged}
    if not candidates:
        return (
            None,
            f"study {study!r} has no parent run; figures and tables were not logged to MLflow",
        )
    chosen = max(candidates.values(), key=lambda r: r.info.start_time or 0)
    note = None
    if len(candidates) > 1:
        note = (
            f"study {study!r} has {len(candidates)} parent runs (name reused); "
            f"artifacts go to the most recent one, {chosen.info.run_id}"
        )
    return chosen.info.run_id, note


# --------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------
def t_interval(
    values: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float, float]:
    """Mean, sample std (ddof=1) and the t-interval on the mean; std/CI are NaN when n < 2."""
    import numpy as np
    from scipy import stats

    x = np.asarray(values, dtype=float)
    n = x.size
    if n == 0:
        return (math.nan,) * 4
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch's t-test p-value; NaN when a group has n < 2 or both have no spread."""
    import numpy as np
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return math.nan
    with warnings.catch_warnings():
        # identical values in both groups: scipy warns and returns NaN, which we report
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.pvalue)


def bootstrap_diff_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a) - mean(b), resampling each group independently.

    A fresh ``default_rng(seed)`` per call makes every comparison reproducible and
    independent of which other groups are in the table.
    """
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return math.nan, math.nan
    if n_boot < 1:
        raise ConfigError(f"--bootstrap: must be >= 1 resamples, got {n_boot}")
    rng = np.random.default_rng(seed)
    # (n_boot, n) index matrices: one resample per row
    mean_a = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
    mean_b = b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(mean_a - mean_b, [tail, 100 - tail])
    return float(low), float(high)


def epochs_to_target(history: "pd.Series", target: float, mode: str) -> float:
    """First epoch whose value reaches ``target`` (>= for max, <= for min); NaN if never."""
    reached = history >= target if mode == "max" else history <= target
    hits = history.index[reached.to_numpy()]
    return float(hits[0]) if len(hits) else math.nan


def per_run_frame(
    runs: Sequence[RunRecord], metric: str, mode: str, target: float | None = None
) -> "pd.DataFrame":
    """One row per run that logged ``metric``: final (last logged), best, last epoch, and
    epochs to ``target``."""
    import pandas as pd

    rows = []
    for run in runs:
        history = run.histories.get(metric)
        if history is None or history.empty:
            continue
        rows.append(
            {
                "group": run.group,
                "run_id": run.run_id,
                "run_name": run.name,
                "status": run.status,
                "pruned": run.pruned,
                "final": float(history.iloc[-1]),
                "best": float(history.max() if mode == "max" else history.min()),
                "last_epoch": int(history.index[-1]),
                "epochs_to_target": (
                    epochs_to_target(history, target, mode) if target is not None else math.nan
                ),
            }
        )
    columns = [
        "group",
        "run_id",
        "run_name",
        "status",
        "pruned",
        "final",
        "best",
        "last_epoch",
        "epochs_to_target",
    ]
    return pd.DataFrame(rows, columns=columns)


def summarize(
    per_run: "pd.DataFrame",
    *,
    mode: str,
    order: Sequence[str],
    baseline: str | None = None,
    target: float | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> "pd.DataFrame":
    """Per-group statistics of the final and best metric, and tests against the baseline.

    Columns: group, n, n_running, final_mean, final_std, final_ci_low, final_ci_high,
    best_mean, best_std, best_ci_low, best_ci_high; with a baseline also diff (group mean
    final - baseline mean final), p_value (Welch), diff_ci_low, diff_ci_high (bootstrap);
    with a target also epochs_to_target (mean over runs that reached it) and n_reached.
    The baseline's own row has NaN in the comparison columns.
    """
    import pandas as pd

    base_final = (
        per_run.loc[per_run["group"] == baseline, "final"].to_numpy(float) if baseline else None
    )
    rows = []
    for group in order:
        sub = per_run[per_run["group"] == group]
        final = sub["final"].to_numpy(float)
        best = sub["best"].to_numpy(float)
        f_mean, f_std, f_low, f_high = t_interval(final, confidence)
        b_mean, b_std, b_low, b_high = t_interval(best, confidence)
        row: dict[str, Any] = {
            "group": group,
            "n": int(final.size),
            "n_running": int((sub["status"] == "RUNNING").sum()),
            "final_mean": f_mean,
            "final_std": f_std,
            "final_ci_low": f_low,
            "final_ci_high": f_high,
            "best_mean": b_mean,
            "best_std": b_std,
            "best_ci_low": b_low,
            "best_ci_high": b_high,
        }
        if base_final is not None:
            if group == baseline or base_final.size == 0:
                row.update(
                    diff=math.nan, p_value=math.nan, diff_ci_low=math.nan, diff_ci_high=math.nan
                )
            else:
                low, high = bootstrap_diff_ci(
                    final, base_final, n_boot=n_boot, seed=seed, confidence=confidence
                )
                row.update(
                    diff=f_mean - float(base_final.mean()),
                    p_value=welch_p_value(final, base_final),
                    diff_ci_low=low,
                    diff_ci_high=high,
                )
        if target is not None:
            reached = sub["epochs_to_target"].dropna().to_numpy(float)
            row["epochs_to_target"] = float(reached.mean()) if reached.size else math.nan
            row["n_reached"] = int(reached.size)
        rows.append(row)
    return pd.DataFrame(rows)


def aggregate_curves(
    runs: Sequence[RunRecord],
    metrics: Iterable[str],
    order: Sequence[str],
    confidence: float = CONFIDENCE,
) -> "pd.DataFrame":
    """Mean curve and t-interval per group and epoch, aligned by epoch: the value at epoch
    ``e`` uses the runs that reached ``e`` (``n`` says how many)."""
    import numpy as np
    import pandas as pd
    from scipy import stats

    frames = []
    for metric in metrics:
        for group in order:
            series = [
                r.histories[metric] for r in runs if r.group == group and metric in r.histories
            ]
            series = [s for s in series if not s.empty]
            if not series:
                continue
            # (steps, runs): union of steps, NaN where a run has not reached the step
            wide = pd.concat(series, axis=1, keys=range(len(series))).sort_index()
            n = wide.count(axis=1).to_numpy()
            mean = wide.mean(axis=1).to_numpy()
            std = wide.std(axis=1, ddof=1).to_numpy()  # NaN where n < 2
            with np.errstate(invalid="ignore", divide="ignore"):
                t_crit = stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1))
                half = np.where(n >= 2, t_crit * std / np.sqrt(n), np.nan)
            frames.append(
                pd.DataFrame(
                    {
                        "metric": metric,
                        "group": group,
                        "step": wide.index.to_numpy(int),
                        "n": n.astype(int),
                        "mean": mean,
                        "std": std,
                        "ci_low": mean - half,
                        "ci_high": mean + half,
                    }
                )
            )
    columns = ["metric", "group", "step", "n", "mean", "std", "ci_low", "ci_high"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def _resolve_baseline(
    requested: str | None, groups: Sequence[str]
) -> tuple[str | None, str | None]:
    """Group label used as baseline, plus a note when there is none.

    Matches the full label (``softmax/attention``) or, when grouping by several keys, a
    single key value (``softmax``) if exactly one group has it.
    """
    wanted = requested or DEFAULT_BASELINE
    if wanted in groups:
        return wanted, None
    partial = [g for g in groups if wanted in g.split("/")]
    if len(partial) == 1:
        return partial[0], None
    listed = ", ".join(groups)
    if len(partial) > 1:
        return None, (
            f"baseline {wanted!r} matches several groups ({', '.join(partial)}); "
            "pass the full group name with --baseline; no differences computed"
        )
    if requested is None:
        return None, f"no baseline group: pass --baseline with one of: {listed}"
    return (
        None,
        f"baseline group {requested!r} not found; groups: {listed}; no differences computed",
    )


# --------------------------------------------------------------------------------------
# the comparison
# --------------------------------------------------------------------------------------
def compare_runs(
    *,
    experiment: str | None = None,
    study: str | None = None,
    filter_string: str | None = None,
    group_by: str | Sequence[str] = "variant",
    metric: str = "val_acc",
    baseline: str | None = None,
    target: float | None = None,
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
        group_by: tag/param names defining a group, e.g. ``"variant,apply_to"``.
        metric: metric compared in the table and the final/best figure.
        baseline: group the others are tested against (default ``softmax`` when present).
        target: report mean epochs to reach this metric value.
        out_dir: where figures and tables are written; None writes nothing.
        tracking_uri: MLflow tracking URI (see :func:`resolve_tracking_uri`).
        mode: ``max`` / ``min``; inferred from the metric name when None.
        include_pruned: keep pruned study trials.
        n_boot: bootstrap resamples; seed: bootstrap RNG seed.
        plots: draw the PNG figures (only with ``out_dir``).
        log_to_parent: for a study, log the written files to its parent run under ``compare/``.
    """
    mode = infer_mode(metric, mode)
    if n_boot < 1:
        raise ConfigError(f"--bootstrap: must be >= 1 resamples, got {n_boot}")
    if target is not None and not math.isfinite(target):
        raise ConfigError(f"--target: must be a finite number, got {target}")
    keys = _parse_group_by(group_by)
    wanted_metrics = list(dict.fromkeys([*CURVE_METRICS, metric]))
    selection = select_runs(
        experiment=experiment,
        study=study,
        filter_string=filter_string,
        group_by=keys,
        metrics=wanted_metrics,
        tracking_uri=tracking_uri,
        include_pruned=include_pruned,
    )
    runs = selection.runs
    notes = list(selection.notes)

    if all(metric not in r.metric_keys for r in runs):
        existing = {k for r in runs for k in r.metric_keys}
        raise ConfigError(
            f"metric {metric!r} was not logged by any selected run; "
            f"metrics: {_join_names(existing)}"
        )
    per_run = per_run_frame(runs, metric, mode, target)
    if per_run.empty:
        raise DataError(
            f"metric {metric!r} has no finite values in the selected runs (all NaN/inf)"
        )
    missing = [r.name for r in runs if r.run_id not in set(per_run["run_id"])]
    if missing:
        notes.append(
            f"{len(missing)} run(s) have no {metric!r} yet and are left out of the table: "
            + ", ".join(missing[:5])
            + (" ..." if len(missing) > 5 else "")
        )

    groups = sorted(per_run["group"].unique())
    resolved, baseline_note = _resolve_baseline(baseline, groups)
    if baseline_note:
        notes.append(baseline_note)
    # Baseline first, then best-first by mean final value: the table reads as a ranking.
    means = per_run.groupby("group")["final"].mean()
    sign = -1.0 if mode == "max" else 1.0
    order = sorted((g for g in groups if g != resolved), key=lambda g: (sign * means[g], g))
    if resolved is not None:
        order.insert(0, resolved)

    table = summarize(
        per_run, mode=mode, order=order, baseline=resolved, target=target, n_boot=n_boot, seed=seed
    )
    curve_metrics = [m for m in CURVE_METRICS if any(m in r.histories for r in runs)]
    # The compared metric gets its own curve when it is logged per epoch (not e.g. test_acc).
    if metric not in curve_metrics and any(len(r.histories.get(metric, ())) > 1 for r in runs):
        curve_metrics.append(metric)
    curves = aggregate_curves(runs, curve_metrics, order)

    notes.extend(_notes(selection, per_run, table, curves, metric, resolved))
    result = ComparisonResult(
        metric=metric,
        mode=mode,
        group_by=keys,
        baseline=resolved,
        target=target,
        source=selection.source,
        filter_string=filter_string,
        runs=runs,
        per_run=per_run,
        table=table,
        curves=curves,
        notes=notes,
        parent_run_id=selection.parent_run_id,
    )
    if out_dir is not None:
        result.files = _write_outputs(result, Path(out_dir), order, plots=plots)
        if study is not None and log_to_parent and selection.parent_run_id:
            result.logged_artifacts = _log_to_parent(
                selection.parent_run_id, result.files, tracking_uri
            )
    return result


def _notes(
    selection: Selection,
    per_run: "pd.DataFrame",
    table: "pd.DataFrame",
    curves: "pd.DataFrame",
    metric: str,
    baseline: str | None,
) -> list[str]:
    """Plain-language caveats printed under the table."""
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
    pruned = per_run[per_run["pruned"]]
    if len(pruned):
        notes.append(
            f"{len(pruned)} pruned run(s) included: their final value is at the pruned epoch"
        )
    small = table[table["n"] < 3]
    if len(small):
        listed = ", ".join(f"{g} (n={n})" for g, n in zip(small["group"], small["n"]))
        notes.append(
            f"too few runs to conclude anything for {listed}: CIs and p-values need n>=2 "
            "per group and are unreliable below 3 seeds"
        )
    if baseline is not None:
        compared = int(table["p_value"].notna().sum())
        if compared > 1:
            notes.append(f"p-values are not corrected for the {compared} comparisons made")
        tested = table[table["diff_ci_low"].notna()]
        base_n = int(table.loc[table["group"] == baseline, "n"].iloc[0])
        smallest = min(int(tested["n"].min()), base_n) if len(tested) else 0
        if 0 < smallest < 10:
            # The percentile bootstrap under-covers badly for tiny samples (n=3 resamples
            # only a handful of distinct means), so its CI is narrower than the t-based one.
            notes.append(
                f"bootstrap CIs from {smallest} runs per group are too narrow; "
                "with fewer than 10 runs trust the Welch p-value more"
            )
    # Curves averaged over fewer runs at late epochs (runs of different lengths).
    drops = []
    shown = metric if metric in set(curves["metric"]) else "val_acc"
    for group, sub in curves[curves["metric"] == shown].groupby("group", sort=False):
        n = sub["n"].to_numpy()
        steps = sub["step"].to_numpy()
        for i in range(1, len(n)):
            if n[i] < n[i - 1]:
                drops.append(f"{group} n={n[i - 1]}->{n[i]} at epoch {steps[i]}")
    if drops:
        notes.append("curves use fewer runs at later epochs: " + "; ".join(drops))
    return notes


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------
def _num(x: float, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "nan"
    digits = 4 if abs(x) < 100 else 1
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "nan"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _display_rows(result: ComparisonResult) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the summary table (shared by text and Markdown)."""
    m = result.metric
    header = ["group", "n", f"final {m} (mean ± std)", "final 95% CI", f"best {m} (mean ± std)"]
    if result.baseline is not None:
        header += [f"Δ final vs {result.baseline}", "p (Welch)", "Δ 95% CI (bootstrap)"]
    if result.target is not None:
        header.append(f"epochs to {result.target:g} (reached)")
    rows = []
    for rec in result.table.to_dict("records"):
        n = rec["n"]
        few = n < 2
        n_text = f"{n}" + (f" ({rec['n_running']} running)" if rec["n_running"] else "")
        final = _num(rec["final_mean"]) + (" ± n<2" if few else f" ± {_num(rec['final_std'])}")
        ci = "n<2" if few else f"[{_num(rec['final_ci_low'])}, {_num(rec['final_ci_high'])}]"
        best = _num(rec["best_mean"]) + (" ± n<2" if few else f" ± {_num(rec['best_std'])}")
        row = [rec["group"], n_text, final, ci, best]
        if result.baseline is not None:
            if rec["group"] == result.baseline:
                row += ["baseline", "", ""]
            else:
                base_n = int(
                    result.table.loc[result.table["group"] == result.baseline, "n"].iloc[0]
                )
                test_ok = n >= 2 and base_n >= 2
                row += [
                    _num(rec["diff"], signed=True),
                    _p(rec["p_value"]) if test_ok else "n<2",
                    f"[{_num(rec['diff_ci_low'], True)}, {_num(rec['diff_ci_high'], True)}]"
                    if test_ok
                    else "n<2",
                ]
        if result.target is not None:
            reached = rec["n_reached"]
            if reached == 0:
                row.append(f"never (0/{n})")
            else:
                row.append(f"{rec['epochs_to_target']:.1f} ({reached}/{n})")
        rows.append(row)
    return header, rows


def format_table(result: ComparisonResult, markdown: bool = False) -> str:
    """Render the summary table: aligned plain text, or Markdown with ``markdown=True``."""
    header, rows = _display_rows(result)
    if markdown:

        def esc(cell: str) -> str:
            return cell.replace("|", "\\|")

        lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
        lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        rest = [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in rows]
    return "\n".join(out)


def _heading(result: ComparisonResult) -> str:
    better = "higher" if result.mode == "max" else "lower"
    return (
        f"{result.source}: {len(result.per_run)} runs, grouped by {','.join(result.group_by)}; "
        f"metric {result.metric} ({better} is better)"
    )


def format_report(result: ComparisonResult) -> str:
    """What the command prints: heading, table, notes, and the files written."""
    parts = [_heading(result), "", format_table(result)]
    if result.notes:
        parts.append("")
        parts += [f"note: {note}" for note in result.notes]
    if result.files:
        parts.append("")
        parts += [f"wrote {path}" for path in result.files]
    if result.logged_artifacts:
        parts.append(
            f"logged {len(result.logged_artifacts)} files to study parent run "
            f"{result.parent_run_id} under compare/"
        )
    return "\n".join(parts)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _write_outputs(
    result: ComparisonResult, out: Path, order: Sequence[str], plots: bool
) -> list[Path]:
    """Tables (CSV + Markdown), per-run and curve CSVs, and the figures."""
    from ablate import plots as plotting

    out.mkdir(parents=True, exist_ok=True)
    m = _safe(result.metric)
    files: list[Path] = []

    table = result.table.copy()
    for i, key in enumerate(result.group_by):
        # one column per group-by key next to the joined label, for spreadsheets
        table.insert(1 + i, key, [_group_value(result, g, key) for g in table["group"]])
    path = out / f"summary_{m}.csv"
    table.to_csv(path, index=False)
    files.append(path)

    path = out / f"summary_{m}.md"
    md = [f"# Comparison: {result.metric}", "", _heading(result), "", result.to_markdown()]
    if result.notes:
        md += [""] + [f"- {note}" for note in result.notes]
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    files.append(path)

    path = out / f"runs_{m}.csv"
    result.per_run.to_csv(path, index=False)
    files.append(path)

    path = out / "curves.csv"
    result.curves.to_csv(path, index=False)
    files.append(path)

    if plots:
        # colours follow sorted labels, so a group keeps its colour across comparisons
        colors = plotting.group_colors(sorted(order))
        for metric in result.curves["metric"].unique():
            path = out / f"curve_{_safe(metric)}.png"
            plotting.plot_learning_curves(
                result.curves[result.curves["metric"] == metric],
                metric,
                path,
                colors=colors,
                order=order,
                title=f"{metric}: mean and 95% CI across seeds ({result.source})",
                target=result.target if metric == result.metric else None,
            )
            files.append(path)
        path = out / f"final_best_{m}.png"
        plotting.plot_final_best(
            result.per_run,
            result.table,
            result.metric,
            path,
            colors=colors,
            order=order,
            baseline=result.baseline,
            xlabel=",".join(result.group_by),
            title=f"{result.metric} per run: final and best, mean and 95% CI ({result.source})",
        )
        files.append(path)
    return files


def _group_value(result: ComparisonResult, group: str, key: str) -> str:
    for run in result.runs:
        if run.group == group:
            return run.group_values[key]
    return MISSING_VALUE


def _log_to_parent(
    parent_run_id: str, files: Sequence[Path], tracking_uri: str | None
) -> list[str]:
    """Log the written files to the study's parent run under ``compare/``."""
    from mlflow.exceptions import MlflowException

    client = _open_client(tracking_uri)
    logged = []
    for path in files:
        try:
            client.log_artifact(parent_run_id, str(path), artifact_path="compare")
        except (MlflowException, OSError) as err:
            raise DataError(
                f"cannot log {path.name} to study parent run {parent_run_id}: "
                f"{_one_line(str(err))}"
            ) from None
        logged.append(f"compare/{path.name}")
    return logged


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `ablate compare`."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--experiment",
        metavar="NAME",
        default=None,
        help=f"MLflow experiment whose runs are compared (default: {DEFAULT_EXPERIMENT})",
    )
    source.add_argument(
        "--study",
        metavar="NAME",
        default=None,
        help="compare the trial runs of this Optuna study (across experiments); figures and "
        "tables are also logged to the study's parent run under compare/",
    )
    parser.add_argument(
        "--filter",
        metavar="EXPR",
        default=None,
        help="MLflow search filter, e.g. \"tags.dataset = 'digits' and params.epochs = '30'\"",
    )
    parser.add_argument(
        "--group-by",
        metavar="KEYS",
        default="variant",
        help="comma-separated tag or param names that define a group, looked up in tags "
        "first, then params (default: variant)",
    )
    parser.add_argument(
        "--metric",
        default="val_acc",
        help="metric compared in the table, e.g. val_acc, val_f1, test_acc, val_loss "
        "(default: val_acc)",
    )
    parser.add_argument(
        "--baseline",
        metavar="GROUP",
        default=None,
        help=f"group the others are compared with (default: {DEFAULT_BASELINE} when present)",
    )
    parser.add_argument(
        "--target",
        type=float,
        metavar="VALUE",
        default=None,
        help="also report the mean number of epochs runs needed to reach this metric value",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="./compare",
        help="directory for figures (PNG) and tables (CSV, Markdown) (default: ./compare)",
    )
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    parser.add_argument(
        "--mode",
        choices=("max", "min"),
        default=None,
        help="whether higher (max) or lower (min) is better; default: max for "
        "accuracy/f1/precision/recall, min for losses",
    )
    parser.add_argument(
        "--include-pruned",
        action="store_true",
        help="also compare pruned study trials (their last value is at the pruned epoch)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        metavar="N",
        default=10_000,
        help="bootstrap resamples for the CI of the difference from the baseline (default: 10000)",
    )
    parser.add_argument(
        "--bootstrap-seed",
        type=int,
        metavar="SEED",
        default=0,
        help="seed of the bootstrap's random generator (default: 0)",
    )


def command(args: argparse.Namespace) -> int:
    """Compare groups of runs: learning curves with 95% CIs, and a significance table.

    Reads runs from MLflow, groups them (by variant by default), prints a table of final
    and best metric per group with Welch's t-test and a bootstrap CI against the baseline,
    and writes figures and tables to --out.
    """
    result = compare_runs(
        experiment=args.experiment,
        study=args.study,
        filter_string=args.filter,
        group_by=args.group_by,
        metric=args.metric,
        baseline=args.baseline,
        target=args.target,
        out_dir=args.out,
        tracking_uri=args.tracking_uri,
        mode=args.mode,
        include_pruned=args.include_pruned,
        n_boot=args.bootstrap,
        seed=args.bootstrap_seed,
    )
    print(format_report(result))
    return 0
