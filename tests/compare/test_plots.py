"""ablate.compare.plots: what each figure draws, and that it says only that."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablate.compare import plots
from ablate.tracking.conventions import ALPHA, TRAIN_LOSS, VAL_ACC, VAL_LOSS


def _curves(metric: str, n: int = 3) -> pd.DataFrame:
    rows = []
    for group, level in (("softmax", 1.0), ("softmax_v", 0.8)):
        for step in range(1, 6):
            mean, last = level / step, step == 5 or n < 2
            low, high = math.nan if n < 2 else mean - 0.1, math.nan if last else mean + 0.1
            rows.append([metric, group, step, n if step < 5 else 1, mean, 0.1, low, high])
    return pd.DataFrame(
        rows, columns=["metric", "group", "step", "n", "mean", "std", "ci_low", "ci_high"]
    )


COLORS = plots.group_colors(["softmax", "softmax_v"])


def test_train_objective_is_labelled_and_alone():
    fig = plots.plot_learning_curves(_curves(TRAIN_LOSS), TRAIN_LOSS, colors=COLORS)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "train objective (smoothed / mixed)"
    assert "train objective" in ax.get_title()
    assert [line.get_label() for line in ax.lines] == ["softmax (n=3)", "softmax_v (n=3)"]
    val = plots.plot_learning_curves(_curves(VAL_LOSS), VAL_LOSS, colors=COLORS)
    assert val.axes[0].get_ylabel() == "validation loss (cross-entropy, nats)"
    assert plots.axis_label(VAL_ACC) == "validation accuracy (fraction correct)"
    assert plots.axis_label("my_metric") == "my_metric"  # unknown keys as logged
    # groups differ by line style too (grey-scale print), and get a band each
    styles = [line.get_linestyle() for line in val.axes[0].lines]
    assert len(set(styles)) == 2 and len(val.axes[0].collections) == 2
    assert "mean and pointwise 95% CI across seeds" in val.axes[0].get_title()


def test_titles_name_only_what_is_drawn(tmp_path):
    """Issue 24 item 7: n = 1 figures were titled 'mean and 95% CI' with nothing shaded."""
    single = plots.plot_learning_curves(_curves(VAL_ACC, n=1), VAL_ACC, colors=COLORS)
    (ax,) = single.axes
    assert not ax.collections and "CI" not in ax.get_title()
    alpha = plots.plot_learning_curves(_curves(ALPHA), ALPHA, colors=COLORS)
    assert not alpha.axes[0].collections and "CI" not in alpha.axes[0].get_title()
    untitled = plots.plot_learning_curves(_curves(VAL_ACC), VAL_ACC, colors=COLORS, title=False)
    assert untitled.axes[0].get_title() == ""
    points = pd.DataFrame({"x": [0.0, 1.0], "value": [0.9, 0.8]})
    levels = pd.DataFrame({"x": [0.0, 1.0], "mean": [0.9, 0.8], "ci_low": [math.nan] * 2,
                           "ci_high": [math.nan] * 2})  # fmt: skip
    dose = plots.plot_dose_response(levels, points, "test_acc", "alpha", fit=(0.9, -0.1, "x"))
    labels = dose.axes[0].get_legend_handles_labels()[1]
    assert sorted(labels) == ["mean (no interval)", "seeds", "trend: x"]  # no "95% CI"
    # print formats: TrueType fonts in the PDF, text kept in the SVG, PNG at 300 dpi
    paths = plots.save(alpha, tmp_path / "alpha", ("png", "pdf", "svg"))
    assert [p.suffix for p in paths] == [".png", ".pdf", ".svg"]
    assert b"/Type3" not in paths[1].read_bytes() and "<text" in paths[2].read_text()
    from matplotlib.image import imread

    height, width = imread(paths[0]).shape[:2]
    assert (width, height) == (round(6.4 * plots.DPI), round(4.0 * plots.DPI))


def _diffs(band: float) -> pd.DataFrame:
    return pd.DataFrame({
        "metric": VAL_ACC, "group": "softmax_v", "step": [1, 2, 3], "n": 3, "test": "paired t",
        "diff": [0.0, 0.02, 0.03], "ci_low": [-0.01, 0.0, 0.01], "ci_high": [0.01, 0.04, 0.05],
        "band_low": [-0.02, -0.01, 0.0 * band], "band_high": [0.02, 0.05, 0.06 * band],
        "band": "sup-t over 3 epochs",
    })  # fmt: skip


def test_differences_plot_has_zero_line_and_bands():
    fig = plots.plot_differences(_diffs(1.0), VAL_ACC, colors=plots.group_colors(["softmax_v"]),
                                 order=["softmax_v"], baseline="softmax")  # fmt: skip
    (ax,) = fig.axes
    zero, curve = ax.lines
    assert list(zero.get_ydata()) == [0.0, 0.0] and zero.get_label() == "softmax (zero)"
    assert curve.get_label() == "softmax_v (paired t, n=3)"
    assert ax.get_ylabel() == "validation accuracy (fraction correct)\nminus softmax"
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == -0.02 and band.max() == 0.06
    assert "simultaneous 95% band (sup-t over 3 epochs)" in ax.get_title()
    bare = _diffs(1.0).assign(band_low=math.nan, band_high=math.nan)
    none = plots.plot_differences(bare, VAL_ACC, colors=plots.group_colors(["softmax_v"]),
                                  order=["softmax_v"], baseline="softmax")  # fmt: skip
    assert not none.axes[0].collections and "shaded" not in none.axes[0].get_title()


def test_final_best_skips_missing_values():
    units = pd.DataFrame(
        {"group": ["a", "a", "b"], "final": [0.9, 0.92, 0.8], "best": [0.91, np.nan, 0.85]}
    )
    summary = pd.DataFrame({
        "group": ["a", "b"], "final_mean": [0.91, 0.8], "final_ci_low": [0.8, math.nan],
        "final_ci_high": [1.0, math.nan], "best_mean": [0.91, 0.85],
        "best_ci_low": [math.nan, math.nan], "best_ci_high": [math.nan, math.nan],
    })  # fmt: skip
    fig = plots.plot_final_best(units, summary, "test_acc", colors=plots.group_colors(["a", "b"]),
                                order=["a", "b"], baseline="a")  # fmt: skip
    final_ax, best_ax = fig.axes
    assert "final weights" in final_ax.get_title() and "best-val checkpoint" in best_ax.get_title()
    from matplotlib.collections import PathCollection

    def points(ax):
        return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))

    assert points(final_ax) == 3 and points(best_ax) == 2  # the NaN best value is not drawn
    assert fig._suptitle.get_text().endswith("diamond: group mean and 95% CI")
    no_ci = summary.assign(final_ci_low=math.nan, final_ci_high=math.nan)
    bare = plots.plot_final_best(units, no_ci, "test_acc", colors=plots.group_colors(["a", "b"]),
                                 order=["a", "b"])  # fmt: skip
    assert bare._suptitle.get_text().endswith("diamond: group mean")
