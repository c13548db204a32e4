"""Reading the runs `ablate compare` compares from MLflow: one :class:`RunRecord` per run.

An experiment or a study (its trial runs across experiments), narrowed by an MLflow
``--filter``. Study parent runs are skipped; FAILED, KILLED, pruned and (by default) RUNNING
runs are kept aside in :attr:`Selection.lost`, so the table counts them per group. For each
compared run: tags, params (the run's effective configuration), the latest value of every
metric and the per-epoch history (step = epoch) of the curves asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ablate.exceptions import ConfigError, DataError, first_line
from ablate.tracking import conventions as cv

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = ["DEFAULT_EXPERIMENT", "RunRecord", "Selection", "resolve_tracking_uri", "select_runs",
           "attach_to_parent", "join_names"]  # fmt: skip

DEFAULT_EXPERIMENT = "ablate"


@dataclass
class RunRecord:
    """One run. ``latest``: the last value of every metric; ``histories[key]``: a float
    Series indexed by step (= epoch), the last value logged per step (a resumed run may log
    an epoch twice). ``diverged_at``: the first epoch a curve read was NaN or infinite (the
    run diverged; the history keeps the finite epochs before it). ``group`` and
    ``group_values`` are set by :func:`ablate.compare.grouping.assign_groups`."""

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
    diverged_at: int | None = None

    @property
    def seed(self) -> str | None:
        """Runs of two groups with one seed share split, init and data order: paired."""
        return self.params.get("seed")


@dataclass
class Selection:
    """The runs read, and what was left out: ``excluded`` (reason -> count) and ``lost``
    (FAILED, KILLED, pruned, RUNNING runs: counted per group, without histories)."""

    source: str  # "experiment 'ablate'" / "study 'lr-sweep'"
    runs: list[RunRecord]
    excluded: dict[str, int]
    lost: list[RunRecord] = field(default_factory=list)
    parent_run_id: str | None = None
    notes: list[str] = field(default_factory=list)


def join_names(names: Iterable[str], empty: str = "none") -> str:
    """Sorted, de-duplicated, comma-separated: the valid choices in error messages."""
    return ", ".join(sorted({str(n) for n in names})) or empty


def _quote(value: str, what: str) -> str:
    """Quote a value for an MLflow filter string (which has no escape sequences)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ConfigError(f"{what} {value!r} contains both quote characters; rename it to search "
                      "for it")  # fmt: skip


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The writer's rule (flag, $MLFLOW_TRACKING_URI, ``sqlite:///mlflow.db``), except that a
    SQLite store that does not exist is an error: comparing must not create an empty one."""
    from ablate.tracking import resolve_tracking_uri as precedence

    uri = precedence(tracking_uri)
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        path = Path(uri[len("sqlite:///") :])
        if not path.is_file():
            raise DataError(f"no MLflow store at {path.resolve()}; pass --tracking-uri or set "
                            "MLFLOW_TRACKING_URI")  # fmt: skip
    return uri


def _open_client(tracking_uri: str | None) -> "MlflowClient":
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.get_experiment_by_name(DEFAULT_EXPERIMENT)  # touches the store once
    except MlflowException as err:
        raise DataError(f"cannot open MLflow store {uri}: "
                        f"{first_line(err.message, 220)}") from None
    return client


def _all_pages(search: Callable[..., Any], **kwargs: Any) -> list[Any]:
    """Every page of an MLflow search (``search_runs``, ``search_experiments``)."""
    items: list[Any] = []
    token = None
    while True:
        page = search(max_results=1000, page_token=token, **kwargs)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _search_runs(
    client: "MlflowClient", experiment_ids: list[str], filter_string: str, user_filter: str | None
) -> list["Run"]:
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    try:
        return _all_pages(
            client.search_runs, experiment_ids=experiment_ids, filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY, order_by=["attributes.start_time ASC"],
        )  # fmt: skip
    except MlflowException as err:
        if err.error_code == "INVALID_PARAMETER_VALUE" and user_filter:
            raise ConfigError(f"--filter {user_filter!r} is not a valid MLflow filter: "
                              f"{first_line(err.message, 220)}") from None  # fmt: skip
        raise DataError(f"cannot search MLflow runs: {first_line(err.message, 220)}") from None


def _active_experiments(client: "MlflowClient") -> list[Any]:
    from mlflow.entities import ViewType

    return _all_pages(client.search_experiments, view_type=ViewType.ACTIVE_ONLY)


def _history(client: "MlflowClient", run: RunRecord, key: str) -> "pd.Series":
    """A curve by step, the last value logged per step; a NaN or infinite value marks the
    run diverged from that epoch on (``run.diverged_at``) and ends the curve there."""
    import pandas as pd

    history = client.get_metric_history(run.run_id, key)
    points = sorted(history, key=lambda m: (m.step, m.timestamp))
    values = {int(p.step): float(p.value) for p in points}
    # MLflow stores an infinite value as the largest float
    bad = [step for step, value in values.items() if not abs(value) < 1.7e308]
    if bad:
        run.diverged_at = min(bad + ([run.diverged_at] if run.diverged_at is not None else []))
        values = {step: v for step, v in values.items() if step < min(bad)}
    series = pd.Series(values, dtype=float, name=key)
    series.index = series.index.astype(int)
    return series.sort_index()


def _raise_empty(
    client: "MlflowClient", experiment_ids: list[str], study: str | None,
    filter_string: str | None, source: str,
) -> None:  # fmt: skip
    """Say why nothing matched: an unknown study, no trials yet, or the filter."""
    if study is not None:
        if not _search_runs(
            client, experiment_ids, f"tags.study = {_quote(study, 'study')}", None
        ):
            parents = _search_runs(client, experiment_ids, "tags.role = 'study'", None)
            listed = join_names(s for r in parents if (s := r.data.tags.get("study")))
            raise ConfigError(f"unknown study {study!r}; existing studies: {listed}")
        if not filter_string:
            raise DataError(f"study {study!r} has no trial runs yet")
    if filter_string:
        raise DataError(f"no runs in {source} match --filter {filter_string!r}")
    raise DataError(f"{source} has no runs")


def select_runs(
    *, experiment: str | None = None, study: str | None = None, filter_string: str | None = None,
    metrics: Iterable[str] = (), tracking_uri: str | None = None, include_pruned: bool = False,
    include_running: bool = False,
) -> Selection:  # fmt: skip
    """The runs of an experiment (default ``ablate``) or of a study, with the histories of
    ``metrics`` (where a run has them); see :class:`ablate.compare.core.CompareOptions`."""
    if experiment is not None and study is not None:
        raise ConfigError("give --experiment or --study, not both")
    filter_string = (filter_string or "").strip() or None
    client = _open_client(tracking_uri)
    if study is None:
        name = experiment or DEFAULT_EXPERIMENT
        exp = client.get_experiment_by_name(name)
        if exp is None or exp.lifecycle_stage != "active":
            names = [e.name for e in _active_experiments(client)]
            raise ConfigError(f"unknown experiment {name!r}; existing experiments: "
                              f"{join_names(names)}")  # fmt: skip
        experiment_ids, base, source = [exp.experiment_id], "", f"experiment {name!r}"
    else:
        experiment_ids = [e.experiment_id for e in _active_experiments(client)]
        base = f"tags.study = {_quote(study, 'study')} and tags.role = 'trial'"
        source = f"study {study!r}"
    combined = " and ".join(part for part in (base, filter_string) if part)
    raw = _search_runs(client, experiment_ids, combined, filter_string)
    if not raw:
        _raise_empty(client, experiment_ids, study, filter_string, source)
    kept, lost, excluded = _sort_out(raw, include_pruned, include_running)
    if not kept:
        what = ", ".join(f"{n} {reason}" for reason, n in excluded.items())
        running = any(r.status == cv.RUNNING for r in lost) and not include_running
        way_out = "; wait for them or look at partial curves with --include-running" * running
        raise DataError(f"no usable runs in {source}: all {len(raw)} matching runs are left out "
                        f"({what}){way_out}")  # fmt: skip
    for record in kept:
        for key in dict.fromkeys(metrics):
            if key in record.latest:
                record.histories[key] = _history(client, record, key)
    if filter_string:
        source = f"{source} with filter {filter_string!r}"
    selection = Selection(source, kept, excluded, lost)
    if study is not None:
        selection.parent_run_id, note = _study_parent(client, study, raw, experiment_ids)
        selection.notes += [note] if note else []
    return selection


def _record(run: "Run") -> RunRecord:
    tags = dict(run.data.tags)
    return RunRecord(
        run_id=run.info.run_id, name=run.info.run_name or run.info.run_id[:8],
        experiment_id=run.info.experiment_id, status=run.info.status,
        pruned=tags.get(cv.TRIAL_STATE) == "PRUNED", tags=tags, params=dict(run.data.params),
        latest={k: float(v) for k, v in run.data.metrics.items()},
        start_time=int(run.info.start_time or 0),
    )  # fmt: skip


def _sort_out(
    raw: list["Run"], include_pruned: bool, include_running: bool
) -> tuple[list[RunRecord], list[RunRecord], dict[str, int]]:
    """(compared runs, lost runs counted per group, excluded reason -> count)."""
    excluded: dict[str, int] = {}
    kept: list[RunRecord] = []
    lost: list[RunRecord] = []
    for run in map(_record, raw):
        if run.tags.get("role") == "study":
            reason = "study parent run"  # the study's summary, not a learning curve
        elif run.pruned and not include_pruned:
            reason = "pruned (add them with --include-pruned)"
        elif run.status == cv.RUNNING and not run.pruned and not include_running:
            reason = "RUNNING (add their partial curves with --include-running)"
        elif run.pruned or run.status in (cv.FINISHED, cv.RUNNING):
            kept.append(run)
            continue
        else:
            reason = run.status  # FAILED, KILLED (interrupted), SCHEDULED
        if reason != "study parent run":
            lost.append(run)
        excluded[reason] = excluded.get(reason, 0) + 1
    return kept, lost, excluded


def _study_parent(
    client: "MlflowClient", study: str, trials: list["Run"], experiment_ids: list[str]
) -> tuple[str | None, str | None]:
    """The study's parent run: referenced by its trials, else tagged ``role=study``; when a
    study name was reused, the most recently started parent, with a note."""
    from mlflow.exceptions import MlflowException

    candidates: dict[str, Any] = {}
    for run_id in {t.data.tags.get("mlflow.parentRunId") for t in trials} - {None, ""}:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            continue  # a deleted parent is not an error for compare
        if run.info.lifecycle_stage == "active":
            candidates[run_id] = run
    if not candidates:
        tagged = f"tags.study = {_quote(study, 'study')} and tags.role = 'study'"
        candidates = {r.info.run_id: r for r in _search_runs(client, experiment_ids, tagged, None)}
    if not candidates:
        return None, f"study {study!r} has no parent run; figures and tables were not logged"
    chosen = max(candidates.values(), key=lambda r: r.info.start_time or 0)
    note = None
    if len(candidates) > 1:
        note = (f"study {study!r} has {len(candidates)} parent runs (name reused); artifacts go "
                f"to the most recent one, {chosen.info.run_id}")  # fmt: skip
    return chosen.info.run_id, note


def attach_to_parent(
    parent_run_id: str, files: Iterable[Path], tracking_uri: str | None
) -> list[str]:
    """Copy the written files into the study's parent run under ``compare/`` (through the
    one MLflow writer, :class:`ablate.tracking.Tracker`)."""
    from mlflow.exceptions import MlflowException

    from ablate.tracking import Tracker

    files = list(files)
    try:
        Tracker(resolve_tracking_uri(tracking_uri), parent_run_id).attach_files(files, "compare")
    except (MlflowException, OSError) as err:
        raise DataError(f"cannot attach files to study parent run {parent_run_id}: "
                        f"{first_line(str(err), 220)}") from None  # fmt: skip
    return [f"compare/{path.name}" for path in files]
