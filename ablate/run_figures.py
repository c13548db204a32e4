"""Figures logged with every run: the test confusion matrix and the run's learning curves."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["confusion_matrix_figure", "learning_curve_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_figure(true: np.ndarray, pred: np.ndarray, class_names: Sequence[str], title: str):
    """Row-normalised confusion matrix (scikit-learn's display), counts in the cells."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _plt()
    n = len(class_names)
    size = min(4 + 0.45 * n, 14)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    ConfusionMatrixDisplay.from_predictions(
        true, pred, labels=np.arange(n), display_labels=list(class_names), ax=ax,
        colorbar=False, include_values=n <= 20, xticks_rotation="vertical" if n > 10 else "horizontal",
    )
    ax.set_title(title)
    fig.tight_layout()
    return fig


def learning_curve_figure(tracker: Any, title: str):
    """Loss and accuracy per epoch (train and validation), and alpha when the run has one."""
    plt = _plt()
    hist = {k: tracker.metric_history(k) for k in ("train_loss", "val_loss", "train_acc", "val_acc", "alpha")}
    panels = [("loss", ("train_loss", "val_loss")), ("accuracy", ("train_acc", "val_acc"))]
    if hist["alpha"]:
        panels.append(("alpha", ("alpha",)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), dpi=110)
    for ax, (label, keys) in zip(np.atleast_1d(axes), panels):
        for key in keys:
            pts = sorted(hist[key])
            if pts:
                ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", ms=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig
