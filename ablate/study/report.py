"""What a study shows: the dry-run listing, the progress bar, ``--status``, the summary table
and the figures on the parent run.

The progress bar runs in the command's main process and reads the storage once a second,
so it shows every worker's trials (this machine's and others') the same way: finished
cells or trials out of the total, the running trials' current epochs, and one line per
trial as it finishes. ``--status`` reads the same storage for a study running anywhere (a
job array, other machines) and writes nothing.

Optuna's own plots go to the parent run: ``figures/optuna_history.png``,
``figures/optuna_intermediate.png`` (the learning curves the pruner saw) and, when the
study samples a search space, ``figures/optuna_importances.png`` (fANOVA), with the study's
metric on the axes and each curve labelled by its trial's cell (``#3 variant=softmax_v
seed=1``), not "Objective Value" and "Trial3". A plot that needs more trials than the study
has is skipped, never an error: the summary must always reach the parent run.
"""

from __future__ import annotations

import math
import statistics
import sys
import threading
import warnings
from collections import Counter
from typing import Any

from ablate.exceptions import AblateError
from ablate.study import state as st
from ablate.study.common import RunSettings, StudyOutcome
from ablate.study.spec import StudyPlan
from ablate.study.storage import database_errors, display_url, open_storage, read_trials

__all__ = ["format_plan", "Progress", "status_text", "summarize", "summary_rows", "format_table",
           "epoch_of", "study_figures", "figures_of"]  # fmt: skip


def epoch_of(plan: StudyPlan, trial: Any) -> str:
    """``epoch 2/20``: where a running trial is."""
    total = st.trial_params(plan, trial).get("epochs", plan.base.get("epochs", _default("epochs")))
    return f"epoch {trial.last_step or 0}/{total}"


def format_plan(
    plan: StudyPlan, *, storage: str, tracking_uri: str, max_trials: int | None = None,
    timeout: float | None = None, workers: int = 1,
) -> str:  # fmt: skip
    """The resolved study for ``--dry-run``: settings, then one line per trial."""
    spec = plan.spec
    if plan.is_grid:
        dims = " x ".join(f"{len(v)} {k}" for k, v in plan.grid.items())
        excluded = math.prod(len(v) for v in plan.grid.values()) - len(plan.cells)
        shape = f"grid {dims}" + (f" minus {excluded} excluded" if excluded else "")
        if plan.search_space:
            shape += f", {', '.join(plan.search_space)} sampled by {plan.sampler}"
    else:
        shape = f"sampled by {plan.sampler}"
    total = plan.total_trials
    lines = [f"study {plan.name!r} ({plan.path}): "
             f"{total if total is not None else 'open-ended'} trials, {shape}",
             f"objective: {spec.objective} {plan.metric} per trial, {plan.direction}; "
             f"pruner {spec.pruner.type}; max_retries {spec.max_retries}",
             f"storage: {display_url(storage)}; MLflow: {tracking_uri}, experiment "
             f"{plan.experiment!r}"]  # fmt: skip
    limits = [text for given, text in (
        (max_trials is not None, f"at most {max_trials} trials"),
        (timeout is not None, f"no new trial after {timeout or 0:g} s"),
        (workers > 1, f"{workers} worker processes"),
    ) if given]  # fmt: skip
    if limits:
        lines.append("this command: " + ", ".join(limits))
    lines.append("base: " + (st.params_text(plan.base) if plan.base else "(run-config defaults)"))
    lines += [f"sampled: {name} ~ {param.describe()}" for name, param in plan.search_space.items()]
    if plan.is_grid:
        width = len(str(len(plan.cells)))
        sampled = f" + sampled {', '.join(plan.search_space)}" if plan.search_space else ""
        lines += [f"trial {cell.index + 1:>{width}}/{len(plan.cells)}: {cell.describe()}{sampled}"
                  for cell in plan.cells]  # fmt: skip
    else:
        until = f"trials 1-{spec.n_trials}" if spec.n_trials else "trials until the timeout"
        lines.append(f"{until}: {', '.join(plan.search_space)} sampled by {plan.sampler}")
    return "\n".join(lines)


class Progress:
    """Study-level progress bar (finished / total) fed by polling the storage."""

    def __init__(self, plan: StudyPlan, settings: RunSettings, enabled: bool = True,
                 interval: float = 1.0):  # fmt: skip
        self.plan, self.settings, self.enabled, self.interval = plan, settings, enabled, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = self._storage = self._study_id = None  # set by start()
        self._seen: set[int] | None = None  # trials finished before this command are not listed

    def start(self) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        self._storage = open_storage(self.settings.storage_url)
        self._study_id = self._storage.get_study_id_from_name(self.plan.name)
        # disable=None: no bar when stdout is not a terminal (logs, CI); the finished-trial
        # lines still print.
        self._bar = tqdm(total=self.plan.total_trials, desc=self.plan.name, unit="trial",
                         dynamic_ncols=True, disable=None)  # fmt: skip
        self._refresh()
        self._thread = threading.Thread(target=self._loop, name="study-progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with database_errors():  # a busy database only delays the bar
                self._refresh()

    def _refresh(self) -> None:
        from optuna.trial import TrialState

        trials = self._storage.get_all_trials(self._study_id, deepcopy=False)
        finished = [t for t in trials if t.state.is_finished()]
        if self._seen is None:
            self._seen = {t.number for t in finished}
        for t in finished:
            if t.number not in self._seen:
                self._seen.add(t.number)
                self._bar.write(self._line(t))
        self._bar.n = st.finished_count(self.plan, trials)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        parts = [f"#{t.number} {epoch_of(self.plan, t)}" for t in running[:4]]
        if len(running) > 4:
            parts.append(f"+{len(running) - 4} more")
        self._bar.set_postfix_str(", ".join(parts), refresh=False)
        self._bar.refresh()

    def _line(self, trial: Any) -> str:
        from optuna.trial import TrialState

        label = st.trial_label(self.plan, trial)
        took = ""
        if trial.datetime_start and trial.datetime_complete:
            took = f" ({(trial.datetime_complete - trial.datetime_start).total_seconds():.0f} s)"
        if trial.state == TrialState.COMPLETE:
            return f"{label}{took}: COMPLETE {self.plan.metric} {trial.value:.4f}"
        if trial.state == TrialState.PRUNED:
            at = f" at epoch {trial.last_step}" if trial.last_step is not None else ""
            return f"{label}{took}: PRUNED{at}"
        error = trial.user_attrs.get(st.ERROR_ATTR) or "its worker died (it runs again)"
        state = "STOPPED" if st.was_handed_over(trial) else trial.state.name
        return f"{label}{took}: {state}: {error}"

    def stop(self) -> None:
        if not self.enabled or self._bar is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with database_errors():
            self._refresh()
        self._bar.close()
        self._storage.engine.dispose()


def status_text(plan: StudyPlan, storage_url: str) -> str:
    """``--status``: trials per state, what runs where (epoch), and the summary table."""
    from optuna.trial import TrialState

    try:
        trials = read_trials(storage_url, plan.name)
    except KeyError:
        raise AblateError(f"study {plan.name!r} does not exist in {display_url(storage_url)} "
                          "yet") from None  # fmt: skip
    states = sorted(Counter(t.state.name for t in trials).items())
    counts = ", ".join(f"{n} {k}" for k, n in states)
    lines = [f"study {plan.name!r} in {display_url(storage_url)}: "
             f"{st.finished_count(plan, trials)}/{plan.total_trials} finished"
             + (f" ({counts})" if counts else "")
             + ("; complete" if st.is_complete(plan, trials) else "")]  # fmt: skip
    for t in (t for t in trials if t.state == TrialState.RUNNING):
        worker = t.system_attrs.get(st.WORKER_ATTR) or {}
        where = f"{worker.get('host', '?')} (pid {worker.get('pid', '?')})"
        lines.append(f"  #{t.number} running: {epoch_of(plan, t)} on {where}")
    lines.append(format_table(summary_rows(plan, trials), plan.metric))
    return "\n".join(lines)


# -- summary ------------------------------------------------------------------------------------
def summary_rows(plan: StudyPlan, trials: list[Any]) -> list[dict[str, Any]]:
    """One row per variant (and per other non-seed grid key): counts and objective stats."""
    from optuna.trial import TrialState

    keys = plan.group_keys()
    groups: dict[tuple, dict[str, Any]] = {}

    def group(params: dict[str, Any]) -> dict[str, Any]:
        values = plan.config_values(params)
        label = tuple(values.get(k, _default(k)) for k in keys)
        if label not in groups:
            counts = ("cells", "trials", "complete", "pruned", "failed", "pending")
            groups[label] = {**dict(zip(keys, label)), **dict.fromkeys(counts, 0), "_values": []}
        return groups[label]

    if plan.is_grid:
        cells = st.cell_states(plan, trials)
        for cell in plan.cells:
            row = group(cell.params)
            state = cells[cell.key]
            row["cells"] += 1
            _count(row, state.trials)
            if not state.done and not state.exhausted(plan.spec.max_retries):
                row["pending"] += 1
    else:
        for t in trials:
            row = group(st.trial_params(plan, t))
            _count(row, [t])
            if t.state in (TrialState.RUNNING, TrialState.WAITING):
                row["pending"] += 1
    maximize = plan.direction == "maximize"
    rows = []
    for row in groups.values():
        values = row.pop("_values")
        row["best"] = (max(values) if maximize else min(values)) if values else None
        row["mean"] = statistics.fmean(values) if values else None
        row["std"] = statistics.stdev(values) if len(values) > 1 else None
        if not plan.is_grid:
            row.pop("cells")
        rows.append(row)
    return rows


def _default(key: str) -> Any:
    from ablate.config import RunConfig

    return getattr(RunConfig(), key)


def _count(row: dict[str, Any], trials: list[Any]) -> None:
    from optuna.trial import TrialState

    for t in trials:
        if t.state == TrialState.WAITING or st.was_handed_over(t):
            continue  # a stopped trial's training goes on in its retry
        row["trials"] += 1
        if t.state == TrialState.COMPLETE:
            row["complete"] += 1
            row["_values"].append(t.value)
        elif t.state == TrialState.PRUNED:
            row["pruned"] += 1
        elif t.state == TrialState.FAIL:
            row["failed"] += 1


def format_table(rows: list[dict[str, Any]], metric: str, markdown: bool = False) -> str:
    """Aligned text (or Markdown) table; objective columns are named after the metric."""
    if not rows:
        return "(no trials yet)"
    rename = {"best": f"best {metric}", "mean": f"mean {metric}", "std": "std"}
    cols = list(rows[0])

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    header = [rename.get(c, c) for c in cols]
    body = [[cell(r[c]) for c in cols] for r in rows]
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        out += ["| " + " | ".join(line) + " |" for line in body]
        return "\n".join(out)
    width = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, width)).rstrip()]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, width)).rstrip() for line in body]
    return "\n".join(out)


def summarize(
    plan: StudyPlan, settings: RunSettings, parent_run_id: str, trials_run: int, errors: list[str]
) -> StudyOutcome:
    """Read the study's final state, log the summary to the parent run, set its status."""
    from optuna.trial import TrialState

    try:
        trials = read_trials(settings.storage_url, plan.name)
    except AblateError as err:  # the database went away (or never came back)
        resume = plan.resume_command(settings.storage_url)
        raise AblateError(f"{err}; once it is back, continue with: {resume}") from None
    rows = summary_rows(plan, trials)
    table = format_table(rows, plan.metric)
    complete = st.is_complete(plan, trials)
    exhausted = st.exhausted_cells(plan, trials) if plan.is_grid else []
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pick = max if plan.direction == "maximize" else min
    best = pick(done, key=lambda t: t.value, default=None)
    text = table
    if best is not None:
        text += (f"\nbest: #{best.number} {plan.metric} {best.value:.4f} "
                 f"({st.params_text(st.trial_params(plan, best))}), "
                 f"MLflow run {best.user_attrs.get(st.RUN_ATTR, '-')}")  # fmt: skip
    _log_to_parent(plan, settings, parent_run_id, rows, trials, complete, bool(exhausted), best)
    return StudyOutcome(
        name=plan.name, storage=display_url(settings.storage_url),
        tracking_uri=settings.tracking_uri, parent_run_id=parent_run_id, complete=complete,
        trials_run=trials_run, rows=rows, table=text, exhausted=exhausted, errors=list(errors),
    )  # fmt: skip


def _log_to_parent(
    plan: StudyPlan, settings: RunSettings, run_id: str, rows: list[dict[str, Any]],
    trials: list[Any], complete: bool, failures: bool, best: Any,
) -> None:  # fmt: skip
    from optuna.trial import TrialState

    from ablate.tracking import Tracker

    parent = Tracker(settings.tracking_uri, run_id)
    try:
        files = {"summary.md": format_table(rows, plan.metric, markdown=True) + "\n",
                 "trials.csv": _trials_csv(plan, trials)}  # fmt: skip
        parent.publish_summary(
            files, figures_of(plan, settings.storage_url),
            {"best_objective": float(best.value)} if best is not None else {},  # metric: a param
        )  # fmt: skip
        running = any(t.state == TrialState.RUNNING for t in trials)
        parent.close_study(complete, failures, trials_running=running)
    except Exception as err:  # noqa: BLE001 - the study ran; its summary is a report on it
        first = " ".join(str(err).split())[:200]
        print(f"ablate study: warning: could not log the summary to MLflow run {run_id}: "
              f"{first}", file=sys.stderr)  # fmt: skip


def _trials_csv(plan: StudyPlan, trials: list[Any]) -> str:
    import csv
    import io

    def when(moment: Any) -> str:
        return moment.isoformat() if moment else ""

    rows = [
        {"number": t.number, "state": t.state.name, "value": "" if t.value is None else t.value,
         **st.trial_params(plan, t), "mlflow_run_id": t.user_attrs.get(st.RUN_ATTR, ""),
         "start": when(t.datetime_start), "complete": when(t.datetime_complete),
         "error": t.user_attrs.get(st.ERROR_ATTR, "")}
        for t in trials
    ]  # fmt: skip
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def study_figures(study: Any, plan: StudyPlan) -> dict[str, Any]:
    """Optuna's plots of ``study`` (an ``optuna.Study``): artifact name -> matplotlib figure
    (none before a trial completes; see the module docstring)."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    trials = study.get_trials(deepcopy=False)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        return {}
    metric = plan.metric
    plots = {
        "figures/optuna_history.png": lambda: vis.plot_optimization_history(
            study, target_name=metric),
        "figures/optuna_intermediate.png": lambda: vis.plot_intermediate_values(study),
    }  # fmt: skip
    if plan.search_space:  # importances need distributions
        plots["figures/optuna_importances.png"] = lambda: vis.plot_param_importances(
            study, target_name=metric)  # fmt: skip
    labels = {f"Trial{t.number}": st.trial_label(plan, t) for t in trials}
    figures = {}
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)  # "importances will be equal"
                ax = plot()
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances of a single completed trial
        if name.endswith("intermediate.png"):
            ax.set_ylabel(f"{metric} (reported each epoch)")
            ax.set_xlabel("epoch")
            for line in ax.get_lines():
                line.set_label(labels.get(line.get_label(), line.get_label()))
            if ax.get_legend() is not None:  # redrawn with the new labels, where Optuna had it
                ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize="small")
        fig = getattr(ax, "figure", None) or ax.flat[0].figure  # an Axes or an array of them
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        figures[name] = fig
    return figures


def figures_of(plan: StudyPlan, storage_url: str) -> dict[str, Any]:
    """:func:`study_figures` of the plan's study in a storage; a failure is a one-line warning."""
    import optuna

    storage = None
    try:
        storage = open_storage(storage_url)
        return study_figures(optuna.load_study(study_name=plan.name, storage=storage), plan)
    except Exception as err:  # noqa: BLE001 - figures are a bonus; the summary is not
        first = " ".join(str(err).split())[:200]
        print(f"ablate study: warning: no Optuna figures: {first}", file=sys.stderr)
        return {}
    finally:
        if storage is not None:
            storage.engine.dispose()
