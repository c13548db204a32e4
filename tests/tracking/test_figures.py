"""Figures logged with every run, drawn from a real Tracker on a SQLite store."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mlflow")

from ablate.tracking import Tracker  # noqa: E402
from ablate.tracking.figures import confusion_matrix_figure, learning_curve_figure  # noqa: E402


def test_learning_curves_never_share_the_train_objective_axis(tmp_path):
    import matplotlib.pyplot as plt

    tracker = Tracker.start(f"sqlite:///{tmp_path}/mlflow.db", "figures", run_name="r")
    for epoch in range(4):
        row = {"val_loss": 1.0 / (epoch + 1), "val_acc": 0.5 + 0.1 * epoch, "alpha": epoch / 3}
        if epoch:
            row.update(train_loss=1.5 / epoch + 0.6, train_acc=0.6 + 0.1 * epoch)
        tracker.log_metrics(row, step=epoch)
    fig = learning_curve_figure(tracker, "cct / softmax_v")
    labels = {ax.get_ylabel(): [line.get_label() for line in ax.lines] for ax in fig.axes}
    plt.close(fig)
    assert labels == {
        "validation loss": ["val_loss"],
        "train objective (smoothed / mixed)": ["train objective (smoothed / mixed)"],
        "accuracy": ["train_acc (augmented batches)", "val_acc"],
        "alpha": ["alpha"],
    }


def test_confusion_matrix_figure():
    import matplotlib.pyplot as plt

    true = np.array([0, 1, 2, 2])
    fig = confusion_matrix_figure(true, np.array([0, 2, 2, 2]), ["a", "b", "c"], title="t")
    assert fig.axes[0].get_title() == "t"
    plt.close(fig)
