"""Imported by the forkserver of :mod:`cli_process` after its other preloads: does once what
every command forked from it would otherwise do for the first time (0.7 s each, measured on
a one-trial study): MLflow's map of installed packages (read when a logged model's pip
requirements are checked), matplotlib's first figures, torch.export's first trace."""

from __future__ import annotations

import io

import numpy as np
import torch
from mlflow.utils.requirements_utils import _init_packages_to_modules_map

from ablate.tracking.recorder import confusion_matrix_figure, learning_curve_figure

_init_packages_to_modules_map()  # importlib.metadata over every installed distribution
for figure in (
    confusion_matrix_figure(np.arange(10), np.arange(10), [str(i) for i in range(10)], "warm"),
    learning_curve_figure([{"loss/val": 1.0, "acc/val": 0.5}], "warm"),
):
    figure.savefig(io.BytesIO(), format="png")
    figure.clf()
torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),))
