"""Figures logged with every run."""

from __future__ import annotations

import numpy as np

from ablate.tracking import conventions as cv
from ablate.tracking.recorder import confusion_matrix_figure, learning_curve_figure


def test_learning_curves_never_share_the_train_objective_axis():
    import matplotlib.pyplot as plt

    history = []
    for epoch in range(4):
        row = {cv.VAL_LOSS: 1.0 / (epoch + 1), cv.VAL_ACC: 0.5 + 0.1 * epoch, cv.ALPHA: epoch / 3}
        if epoch:
            row.update({cv.TRAIN_LOSS: 1.5 / epoch + 0.6, cv.TRAIN_ACC: 0.6 + 0.1 * epoch})
        history.append(row)
    fig = learning_curve_figure(history, "cct / softmax_v")
    labels = {ax.get_ylabel(): [line.get_label() for line in ax.lines] for ax in fig.axes}
    points = {line.get_label(): list(line.get_xdata()) for ax in fig.axes for line in ax.lines}
    plt.close(fig)
    assert labels == {
        "validation loss": ["loss/val"],
        "train objective (smoothed / mixed)": ["train objective (smoothed / mixed)"],
        "accuracy": ["acc/train (augmented)", "acc/val"],
        "alpha": ["alpha/value"],
    }
    assert points["acc/val"] == [0, 1, 2, 3] and points["acc/train (augmented)"] == [1, 2, 3]


def test_confusion_matrix_figure():
    import matplotlib.pyplot as plt

    true = np.array([0, 1, 2, 2])
    fig = confusion_matrix_figure(true, np.array([0, 2, 2, 2]), ["a", "b", "c"], title="t")
    assert fig.axes[0].get_title() == "t"
    plt.close(fig)
