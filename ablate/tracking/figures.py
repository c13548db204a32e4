"""Figures logged with every run: the test confusion matrix and the run's learning curves."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ablate.compare.plots import TRAIN_OBJECTIVE_LABEL

__all__ = ["confusion_matrix_figure", "learning_curve_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_figure(
    true: np.ndarray, pred: np.ndarray, class_names: Sequence[str], title: str
):
    """Row-normalised confusion matrix (scikit-learn's display), counts in the cells."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _plt()
    n = len(class_names)
    size = min(4 + 0.45 * n, 14)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    ConfusionMatrixDisplay.from_predictions(
        true,
        pred,
        labels=np.arange(n),
        display_labels=list(class_names),
        ax=ax,
        colorbar=False,
        include_values=n <= 20,
        xticks_rotation="vertical" if n > 10 else "horizontal",
    )
    ax.set_title(title)
    fig.tight_layout()
    return fig


def learning_curve_figure(tracker: Any, title: str, alpha_keys: Sequence[str] = ()):
    """The run's curves per epoch: validation loss, the training objective, accuracy, and
    alpha when the run has one (a fixed or scheduled ``alpha``, or learned ones).

    ``train_loss`` is the training objective (label-smoothed, on MixUp/CutMix targets), not
    a loss comparable with ``val_loss``, so it gets its own panel and label; ``train_acc``
    is measured on the augmented training batches.

    Args:
        tracker: anything with ``metric_history(key) -> [(step, value), ...]`` (a Tracker).
        title: figure title.
        alpha_keys: the run's learned-alpha metrics (``alpha/layer0``, ...; see
            :func:`ablate.models.learned_alpha.alpha_metric_keys`), drawn in one panel.
    """
    plt = _plt()
    keys = ("val_loss", "train_loss", "train_acc", "val_acc", "alpha", *alpha_keys)
    hist = {k: tracker.metric_history(k) for k in keys}
    labels = {"train_loss": TRAIN_OBJECTIVE_LABEL, "train_acc": "train_acc (augmented batches)"}
    panels = [
        ("validation loss", ("val_loss",)),
        (TRAIN_OBJECTIVE_LABEL, ("train_loss",)),
        ("accuracy", ("train_acc", "val_acc")),
    ]
    if hist["alpha"]:
        panels.append(("alpha", ("alpha",)))
    if any(hist[k] for k in alpha_keys):
        panels.append(("learned alpha", tuple(alpha_keys)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), dpi=110)
    for ax, (label, panel_keys) in zip(np.atleast_1d(axes), panels):
        for key in panel_keys:
            pts = sorted(hist[key])
            if pts:
                ax.plot(
                    [s for s, _ in pts],
                    [v for _, v in pts],
                    marker="o",
                    ms=3,
                    label=labels.get(key, key),
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            many = len(ax.lines) > 8  # per-head alphas: a compact two-column legend
            ax.legend(fontsize=6 if many else 8, ncol=2 if many else 1)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
