"""ablate.compare.plots: what each figure draws and how its axes are labelled."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablate.compare import plots


def _curves(metric: str) -> pd.DataFrame:
    rows = []
    for group, level in (("softmax", 1.0), ("softmax_v", 0.8)):
        for step in range(1, 6):
            mean = level / step
            rows.append([metric, group, step, 3 if step < 5 else 1, mean, 0.1, mean - 0.1,
                         math.nan if step == 5 else mean + 0.1])  # fmt: skip
    return pd.DataFrame(
        rows, columns=["metric", "group", "step", "n", "mean", "std", "ci_low", "ci_high"]
    )


def test_train_objective_is_labelled_and_alone(tmp_path):
    colors = plots.group_colors(["softmax", "softmax_v"])
    fig = plots.plot_learning_curves(
        _curves("train_loss"), "train_loss", tmp_path / "t.png", colors=colors
    )
    (ax,) = fig.axes
    assert ax.get_ylabel() == "train objective (smoothed / mixed)"
    assert "train objective" in ax.get_title()
    assert [line.get_label() for line in ax.lines] == ["softmax (n=3)", "softmax_v (n=3)"]
    assert (tmp_path / "t.png").stat().st_size > 5_000
    val = plots.plot_learning_curves(_curves("val_loss"), "val_loss", None, colors=colors)
    assert val.axes[0].get_ylabel() == "validation loss (cross-entropy, nats)"
    assert plots.axis_label("val_acc") == "validation accuracy (fraction correct)"
    assert plots.axis_label("my_metric") == "my_metric"  # unknown keys as logged
    # groups differ by line style too (grey-scale print), and get a band each
    styles = [line.get_linestyle() for line in val.axes[0].lines]
    assert len(set(styles)) == 2 and len(val.axes[0].collections) == 2


def test_alpha_has_no_band_and_print_formats(tmp_path):
    colors = plots.group_colors(["softmax", "softmax_v"])
    fig = plots.plot_learning_curves(_curves("alpha"), "alpha", None, colors=colors)
    (ax,) = fig.axes
    assert not ax.collections and "CI" not in ax.get_title()  # deterministic: no band
    paths = plots.save(fig, tmp_path / "alpha", ("png", "pdf", "svg"))
    assert [p.suffix for p in paths] == [".png", ".pdf", ".svg"]
    assert paths[1].read_bytes()[:4] == b"%PDF" and b"<svg" in paths[2].read_bytes()[:2000]
    from matplotlib.image import imread

    height, width = imread(paths[0]).shape[:2]
    # 300 dpi: the 6.4 x 4 inch figure is 1920 x 1200 pixels
    assert (width, height) == (round(6.4 * plots.DPI), round(4.0 * plots.DPI))


def test_differences_plot_has_zero_line_and_bands():
    diffs = pd.DataFrame(
        {
            "metric": "val_acc", "group": "softmax_v", "step": [0, 1, 2], "n": 3,
            "test": "paired t", "diff": [0.0, 0.02, 0.03], "ci_low": [-0.01, 0.0, 0.01],
            "ci_high": [0.01, 0.04, 0.05], "band_low": [-0.02, -0.01, 0.0],
            "band_high": [0.02, 0.05, 0.06], "band": "sup-t over 3 epochs",
        }
    )  # fmt: skip
    fig = plots.plot_differences(
        diffs, "val_acc", None, colors=plots.group_colors(["softmax_v"]), order=["softmax_v"],
        baseline="softmax",
    )  # fmt: skip
    (ax,) = fig.axes
    zero, curve = ax.lines
    assert list(zero.get_ydata()) == [0.0, 0.0] and zero.get_label() == "softmax (zero)"
    assert curve.get_label() == "softmax_v (paired t, n=3)"
    assert list(curve.get_ydata()) == [0.0, 0.02, 0.03]
    assert len(ax.collections) == 1
    assert ax.get_ylabel() == "validation accuracy (fraction correct)\nminus softmax"
    # the shaded band is the simultaneous one, and the title says so
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == -0.02 and band.max() == 0.06
    assert "simultaneous 95% band (sup-t over 3 epochs)" in ax.get_title()


def test_final_best_skips_missing_values():
    per_run = pd.DataFrame(
        {"group": ["a", "a", "b"], "final": [0.9, 0.92, 0.8], "best": [0.91, np.nan, 0.85]}
    )
    summary = pd.DataFrame(
        {
            "group": ["a", "b"], "final_mean": [0.91, 0.8], "final_ci_low": [0.8, math.nan],
            "final_ci_high": [1.0, math.nan], "best_mean": [0.91, 0.85],
            "best_ci_low": [math.nan, math.nan], "best_ci_high": [math.nan, math.nan],
        }
    )  # fmt: skip
    fig = plots.plot_final_best(
        per_run, summary, "test_acc", None, colors=plots.group_colors(["a", "b"]),
        order=["a", "b"], baseline="a",
    )  # fmt: skip
    final_ax, best_ax = fig.axes
    assert "final weights" in final_ax.get_title() and "best-val checkpoint" in best_ax.get_title()
    from matplotlib.collections import PathCollection

    def points(ax):
        return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))

    assert points(final_ax) == 3 and points(best_ax) == 2  # the NaN best value is not drawn
