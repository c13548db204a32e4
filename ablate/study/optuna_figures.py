"""Optuna's own plots of a study, as figures on its MLflow parent run.

``figures/optuna_history.png`` (optimization history), ``figures/optuna_intermediate.png``
(the learning curves the pruner saw) and, when the study samples a search space,
``figures/optuna_importances.png`` (fANOVA parameter importances), drawn with
``optuna.visualization.matplotlib``. A plot that needs more trials than the study has is
skipped, never an error: the summary must always reach the parent run.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

__all__ = ["log_study_figures", "log_figures_of"]


def _plots(has_search_space: bool) -> list[tuple[str, Callable[[Any], Any]]]:
    from optuna.visualization import matplotlib as vis

    plots = [
        ("figures/optuna_history.png", vis.plot_optimization_history),
        ("figures/optuna_intermediate.png", vis.plot_intermediate_values),
    ]
    if has_search_space:
        plots.append(("figures/optuna_importances.png", vis.plot_param_importances))
    return plots


def log_study_figures(parent: Any, study: Any, has_search_space: bool) -> list[str]:
    """Draw the study's plots and log them on ``parent`` (a Tracker); returns what was logged.

    Args:
        parent: the study's parent run.
        study: the ``optuna.Study`` (loaded from its storage).
        has_search_space: the study samples parameters (importances need distributions).
    """
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    logged = []
    for name, plot in _plots(has_search_space):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)  # "importances will be equal"
                ax = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances of a single completed trial
        fig = getattr(ax, "figure", None) or ax.flat[0].figure  # an Axes or an array of them
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        parent.log_figure(fig, name)
        plt.close(fig)
        logged.append(name)
    return logged


def log_figures_of(parent: Any, study_name: str, storage_url: str, has_search_space: bool) -> None:
    """:func:`log_study_figures` for a study in a storage; a failure is a one-line warning."""
    import sys

    import optuna

    from ablate.study.storage import open_storage

    storage = open_storage(storage_url)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        log_study_figures(parent, study, has_search_space)
    except Exception as err:  # noqa: BLE001 - figures are a bonus; the summary is not
        first = " ".join(str(err).split())[:200]
        print(f"ablate study: warning: no Optuna figures: {first}", file=sys.stderr)
    finally:
        engine = getattr(storage, "engine", None)
        if engine is not None:
            engine.dispose()
