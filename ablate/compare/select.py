"""Selecting the runs `ablate compare` reads from MLflow: one :class:`RunRecord` per run.

An experiment or a study (its trial runs across experiments), narrowed by an MLflow
``--filter``; study parent runs, failed and killed runs are left out (pruned trials and
RUNNING runs too, unless asked for) and kept aside so the table counts them per group.
For each kept run: tags, params, the latest value of every
metric (the end-of-training numbers are logged once) and the full per-epoch history
(step = epoch) of the metrics asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ablate.exceptions import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = [
    "DEFAULT_EXPERIMENT",
    "RunRecord",
    "Selection",
    "resolve_tracking_uri",
    "open_client",
    "select_runs",
    "log_files",
    "one_line",
    "join_names",
]

DEFAULT_EXPERIMENT = "ablate"


@dataclass
class RunRecord:
    """One selected run and what was read for it.

    ``latest`` holds the last value of every metric the run logged (end-of-training
    numbers such as ``test_acc`` are logged once). ``histories[key]`` is a float Series
    indexed by step (= epoch), sorted, one value per step (the last one logged for that
    step), non-finite values removed. ``group`` and ``group_values`` are filled in by
    :func:`ablate.compare.grouping.assign_groups`.
    """

    run_id: str
    name: str
    experiment_id: str
    status: str
    pruned: bool
    tags: dict[str, str]
    params: dict[str, str]
    latest: dict[str, float]
    histories: dict[str, "pd.Series"] = field(default_factory=dict)
    group: str = ""
    group_values: dict[str, str] = field(default_factory=dict)
    start_time: int = 0  # ms since the epoch: the latest of repeated runs is the newest

    @property
    def metric_keys(self) -> frozenset[str]:
        return frozenset(self.latest)

    @property
    def seed(self) -> str | None:
        """The run's seed (tag, else param): runs of two groups with one seed are paired."""
        return self.tags.get("seed", self.params.get("seed"))


@dataclass
class Selection:
    """The runs a comparison reads, and what was left out and why."""

    source: str  # human-readable: "experiment 'ablate'" / "study 'lr-sweep'"
    runs: list[RunRecord]
    excluded: dict[str, int]  # reason -> count
    # FAILED, KILLED, pruned and (by default) RUNNING runs: not compared, but counted per
    # group (a variant that diverges more often is a result), without their histories
    lost: list[RunRecord] = field(default_factory=list)
    parent_run_id: str | None = None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def one_line(text: str, limit: int = 220) -> str:
    """First line of an (MLflow) error message, shortened, so errors stay one line."""
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def join_names(names: Iterable[str], empty: str = "none") -> str:
    """Sorted, de-duplicated, comma-separated: for 'valid choices' in error messages."""
    names = sorted({str(n) for n in names})
    return ", ".join(names) if names else empty


def _quote(value: str, what: str) -> str:
    """Quote a value for an MLflow filter string (which has no escape sequences)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ConfigError(
        f"{what} {value!r} contains both quote characters; rename it to search for it"
    )


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


def open_client(tracking_uri: str | None) -> "MlflowClient":
    """A client on the resolved store; an unusable URI is one line, not a traceback."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.get_experiment_by_name(DEFAULT_EXPERIMENT)  # touches the store once
    except MlflowException as err:
        raise DataError(f"cannot open MLflow store {uri}: {one_line(err.message)}") from None
    return client


# --------------------------------------------------------------------------------------
# searching
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
                    f"{one_line(err.message)}"
                ) from None
            raise DataError(f"cannot search MLflow runs: {one_line(err.message)}") from None
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


def _raise_empty(
    client: "MlflowClient",
    experiment_ids: list[str],
    study: str | None,
    filter_string: str | None,
    source: str,
) -> None:
    """Say precisely why nothing matched: unknown study, no trials yet, or the filter."""
    if study is not None:
        quoted = _quote(study, "study name")
        if not _search_runs(client, experiment_ids, f"tags.study = {quoted}", None):
            parents = _search_runs(client, experiment_ids, "tags.role = 'study'", None)
            studies = [r.data.tags.get("study", "") for r in parents]
            listed = join_names(s for s in studies if s)
            raise ConfigError(f"unknown study {study!r}; existing studies: {listed}")
        if not filter_string:
            raise DataError(f"study {study!r} has no trial runs yet")
    if filter_string:
        raise DataError(f"no runs in {source} match --filter {filter_string!r}")
    raise DataError(f"{source} has no runs")


def select_runs(
    *,
    experiment: str | None = None,
    study: str | None = None,
    filter_string: str | None = None,
    metrics: Iterable[str] = (),
    tracking_uri: str | None = None,
    include_pruned: bool = False,
    include_running: bool = False,
    client: "MlflowClient | None" = None,
) -> Selection:
    """Find the trial runs to compare and read their metrics.

    Args:
        experiment: MLflow experiment name (default ``ablate`` when no study is given).
        study: Optuna study name: its trial runs across all experiments instead.
        filter_string: extra MLflow search filter, e.g. ``tags.dataset = 'digits'``.
        metrics: metric keys whose full per-epoch histories are read (when a run has them).
        tracking_uri: MLflow tracking URI (see :func:`resolve_tracking_uri`).
        include_pruned: also keep pruned trials (``trial_state=PRUNED``).
        include_running: also keep RUNNING runs (partial curves); counted otherwise.
        client: an existing client (tracking_uri is then ignored).
    """
    if experiment is not None and study is not None:
        raise ConfigError("give --experiment or --study, not both")
    filter_string = (filter_string or "").strip() or None
    if client is None:
        client = open_client(tracking_uri)

    if study is None:
        name = experiment or DEFAULT_EXPERIMENT
        exp = client.get_experiment_by_name(name)
        if exp is None or exp.lifecycle_stage != "active":
            names = [e.name for e in _active_experiments(client)]
            raise ConfigError(
                f"unknown experiment {name!r}; existing experiments: {join_names(names)}"
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
        _raise_empty(client, experiment_ids, study, filter_string, source)

    kept, lost, excluded = _sort_out(raw, include_pruned, include_running)
    if not kept:
        what = ", ".join(f"{n} {reason}" for reason, n in excluded.items())
        way_out = ""
        if any(r.info.status == "RUNNING" for r in lost) and not include_running:
            way_out = "; wait for them to finish or look at partial curves with --include-running"
        raise DataError(
            f"no usable runs in {source}: all {len(raw)} matching runs are left out "
            f"({what}){way_out}"
        )

    wanted = list(dict.fromkeys(metrics))
    records: list[RunRecord] = []
    for run in kept:
        record = _record(run)
        for key in wanted:
            if key in record.latest:
                record.histories[key] = _history(client, record.run_id, key)
        records.append(record)

    selection = Selection(
        source=source, runs=records, excluded=excluded, lost=[_record(r) for r in lost]
    )
    if filter_string:
        selection.source = f"{source} with filter {filter_string!r}"
    if study is not None:
        selection.parent_run_id, note = _study_parent(client, study, raw, experiment_ids)
        if note:
            selection.notes.append(note)
    return selection


def _record(run: "Run") -> RunRecord:
    tags = dict(run.data.tags)
    return RunRecord(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id[:8],
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        pruned=tags.get("trial_state") == "PRUNED",
        tags=tags,
        params=dict(run.data.params),
        latest={k: float(v) for k, v in run.data.metrics.items()},
        start_time=int(run.info.start_time or 0),
    )


def _sort_out(
    raw: list["Run"], include_pruned: bool, include_running: bool
) -> tuple[list["Run"], list["Run"], dict[str, int]]:
    """(compared runs, lost runs counted per group, excluded reason -> count)."""
    excluded: dict[str, int] = {}
    kept: list[Run] = []
    lost: list[Run] = []
    for run in raw:
        tags = run.data.tags
        status = run.info.status
        pruned = tags.get("trial_state") == "PRUNED"
        if tags.get("role") == "study":
            reason = "study parent run"  # holds the study summary, not a learning curve
        elif pruned and not include_pruned:
            reason = "pruned (add them with --include-pruned)"
            lost.append(run)
        elif status == "RUNNING" and not pruned and not include_running:
            reason = "RUNNING (add their partial curves with --include-running)"
            lost.append(run)
        elif pruned or status in ("FINISHED", "RUNNING"):
            kept.append(run)
            continue
        else:
            reason = status  # FAILED, KILLED (interrupted), SCHEDULED
            lost.append(run)
        excluded[reason] = excluded.get(reason, 0) + 1
    return kept, lost, excluded


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


def log_files(parent_run_id: str, files: Iterable[Path], tracking_uri: str | None) -> list[str]:
    """Log written files to a run (the study's parent) under ``compare/``."""
    from mlflow.exceptions import MlflowException

    client = open_client(tracking_uri)
    logged = []
    for path in files:
        try:
            client.log_artifact(parent_run_id, str(path), artifact_path="compare")
        except (MlflowException, OSError) as err:
            raise DataError(
                f"cannot log {path.name} to study parent run {parent_run_id}: {one_line(str(err))}"
            ) from None
        logged.append(f"compare/{path.name}")
    return logged
