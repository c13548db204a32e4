"""Optuna's own plots of a study, as figures on its MLflow parent run.

``figures/optuna_history.png`` (optimization history), ``figures/optuna_intermediate.png``
(the learning curves the pruner saw) and, when the study samples a search space,
``figures/optuna_importances.png`` (fANOVA parameter importances), drawn with
``optuna.visualization.matplotlib``, with the study's metric on the axes and each curve
labelled by its trial's cell (``#3 variant=softmax_v seed=1``), not "Objective Value" and
"Trial3". A plot that needs more trials than the study has is skipped, never an error: the
summary must always reach the parent run.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ablate.study.spec import StudyPlan

__all__ = ["study_figures", "figures_of"]


def study_figures(study: Any, plan: "StudyPlan") -> dict[str, Any]:
    """The study's plots: artifact name -> matplotlib figure (none before a trial completes).

    Args:
        study: the ``optuna.Study`` (loaded from its storage).
        plan: its study file (the metric, the cells, whether it samples a search space).
    """
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    from ablate.study.state import trial_label

    trials = study.get_trials(deepcopy=False)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        return {}
    metric = plan.metric
    plots = {
        "figures/optuna_history.png": lambda: vis.plot_optimization_history(
            study, target_name=metric
        ),
        "figures/optuna_intermediate.png": lambda: vis.plot_intermediate_values(study),
    }
    if plan.search_space:  # importances need distributions
        plots["figures/optuna_importances.png"] = lambda: vis.plot_param_importances(
            study, target_name=metric
        )
    labels = {f"Trial{t.number}": trial_label(plan, t) for t in trials}
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


def figures_of(plan: "StudyPlan", storage_url: str) -> dict[str, Any]:
    """:func:`study_figures` of the plan's study in a storage; a failure is a one-line warning."""
    import sys

    import optuna

    from ablate.study.storage import open_storage

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
