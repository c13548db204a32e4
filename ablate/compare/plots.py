"""Matplotlib figures for `ablate compare`, fit for a paper.

Axes are labelled in words with units ("validation accuracy (fraction correct)", "epoch");
groups differ by line style and marker as well as colour, so a figure survives grey-scale
printing; a deterministic quantity (the alpha schedule) is drawn without a band. A title
and a legend name only what is drawn: no "95% CI" where no interval could be computed.
:func:`save` writes PNG at 300 dpi, PDF with TrueType fonts (camera-ready checks reject
Type 3) and SVG with text kept as text. Figures are built on ``matplotlib.figure.Figure``
with the Agg canvas, never through pyplot: no global figure registry, no GUI backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ablate.tracking import conventions as cv

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["DPI", "axis_label", "group_colors", "group_styles", "save", "plot_learning_curves",
           "plot_differences", "plot_final_best", "plot_dose_response"]  # fmt: skip

DPI = 300  # print resolution of PNG; PDF and SVG are vector
# TrueType (42) instead of Type 3 fonts in PDF / PS; SVG text as <text>, not outlines
PRINT_FONTS = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"}
_LABELS = {
    cv.TRAIN_LOSS: cv.TRAIN_OBJECTIVE_LABEL,  # smoothed / mixed targets: never beside loss/val
    cv.VAL_ACC: "validation accuracy (fraction correct)",
    "test_acc": "test accuracy (fraction correct)",
    "best_test_acc": "test accuracy, best-val checkpoint (fraction correct)",
    cv.VAL_LOSS: "validation loss (cross-entropy, nats)",
    "test_loss": "test loss (cross-entropy, nats)",
    cv.curve("f1", "val"): "validation macro F1",
    "test_f1": "test macro F1",
    cv.ALPHA: "alpha (weight of softmax^T(V))",
    "alpha": "alpha (weight of softmax^T(V))",
    cv.LR: "learning rate",
}
DETERMINISTIC = frozenset({cv.ALPHA, cv.LR})  # set by the schedule: no band across seeds
_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LEGEND_INSIDE_MAX = 8  # beyond this many entries the legend moves outside the axes


def _figure(width: float, height: float) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def axis_label(metric: str) -> str:
    """A metric's axis label in words with its unit; unknown keys as logged."""
    return _LABELS.get(metric, metric)


def group_styles(groups: Sequence[str]) -> dict[str, tuple[str, str]]:
    """group -> (line style, marker), distinct for up to 32 groups (grey-scale safe)."""
    return {g: (_STYLES[i % len(_STYLES)], _MARKERS[(i // len(_STYLES) + i) % len(_MARKERS)])
            for i, g in enumerate(groups)}  # fmt: skip


def group_colors(groups: Sequence[str]) -> dict[str, Any]:
    """One distinct colour per group: tab10 up to 10 groups, tab20 up to 20, then turbo."""
    from matplotlib import colormaps

    n = len(groups)
    if n > 20:
        return {g: colormaps["turbo"](i / (n - 1)) for i, g in enumerate(groups)}
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return {g: cmap(i) for i, g in enumerate(groups)}


def save(fig: "Figure", stem: Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``fig`` as ``stem.<format>`` for each format (PNG at :data:`DPI`)."""
    from matplotlib import rc_context

    paths = [Path(stem).with_suffix(f".{fmt}") for fmt in formats]
    with rc_context(PRINT_FONTS):
        for path, fmt in zip(paths, formats):
            fig.savefig(path, dpi=DPI if fmt == "png" else "figure", format=fmt)
    return paths


def _legend(ax: "Axes", n_entries: int) -> None:
    if n_entries <= _LEGEND_INSIDE_MAX:
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
    else:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _epoch_axis(ax: "Axes", ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _line(ax: "Axes", steps, values, colour, style: tuple[str, str], label: str) -> None:
    ax.plot(steps, values, color=colour, linewidth=1.8, linestyle=style[0], markersize=3.5,
            marker=style[1] if len(steps) <= 40 else None, label=label)  # fmt: skip


def plot_learning_curves(
    curves: "pd.DataFrame", metric: str, *, colors: Mapping[str, Any],
    order: Sequence[str] | None = None, target: float | None = None,
    styles: Mapping[str, tuple[str, str]] | None = None, title: bool = True,
) -> "Figure":  # fmt: skip
    """Mean curve per group (rows of one metric: group, step, n, mean, ci_low, ci_high) with
    its pointwise 95% band where one exists; "n=k" where fewer seeds remain."""
    import numpy as np

    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    groups = list(order or colors)
    styles = styles or group_styles(groups)
    banded = False
    for group in groups:
        sub = curves[curves["group"] == group].sort_values("step")
        if sub.empty:
            continue
        steps, mean, n = sub["step"].to_numpy(), sub["mean"].to_numpy(float), sub["n"].to_numpy()
        _line(ax, steps, mean, colors[group], styles[group], f"{group} (n={int(n.max())})")
        low, high = sub["ci_low"].to_numpy(float), sub["ci_high"].to_numpy(float)
        if metric not in DETERMINISTIC and (np.isfinite(low) & np.isfinite(high)).any():
            # NaN bounds (n < 2) leave gaps rather than a fake zero-width band
            ax.fill_between(steps, low, high, color=colors[group], alpha=0.18, linewidth=0)
            banded = True
        for i in np.flatnonzero(n[1:] < n[:-1]) + 1:
            ax.annotate(f"n={int(n[i])}", (steps[i], mean[i]), textcoords="offset points",
                        xytext=(3, 6), fontsize=8, color=colors[group])  # fmt: skip
    if target is not None:
        ax.axhline(target, color="0.4", linestyle=":", linewidth=1.2, label=f"target {target:g}")
    _epoch_axis(ax, axis_label(metric))
    if title:
        band = " and pointwise 95% CI" * banded
        ax.set_title(f"{axis_label(metric)}\nmean{band} across seeds", fontsize=10)
    _legend(ax, len(ax.get_legend_handles_labels()[0]))
    return fig


def plot_differences(
    diffs: "pd.DataFrame", metric: str, *, colors: Mapping[str, Any], order: Sequence[str],
    baseline: str, styles: Mapping[str, tuple[str, str]] | None = None, title: bool = True,
) -> "Figure":  # fmt: skip
    """Each group minus the baseline per epoch (see ``curves.diff_curves``), a zero line,
    and the simultaneous band shaded where it exists (the title names its method)."""
    import numpy as np

    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.3", linewidth=1.0, linestyle="--", label=f"{baseline} (zero)")
    styles = styles or group_styles(list(order))
    bands: set[str] = set()
    for group in order:
        sub = diffs[diffs["group"] == group].sort_values("step")
        if sub.empty:
            continue
        steps = sub["step"].to_numpy()
        label = f"{group} ({' / '.join(sorted(set(sub['test'])))}, n={int(sub['n'].max())})"
        _line(ax, steps, sub["diff"].to_numpy(float), colors[group], styles[group], label)
        low, high = sub["band_low"].to_numpy(float), sub["band_high"].to_numpy(float)
        if np.isfinite(low).any():
            ax.fill_between(steps, low, high, color=colors[group], alpha=0.18, linewidth=0)
            bands.update(sub["band"])
    _epoch_axis(ax, f"{axis_label(metric)}\nminus {baseline}")
    if title:
        shaded = f"\nshaded: simultaneous 95% band ({'; '.join(sorted(bands))})" if bands else ""
        ax.set_title(f"{axis_label(metric).split(' (')[0]} minus {baseline}, mean over seeds"
                     f"{shaded}", fontsize=9)  # fmt: skip
    _legend(ax, len(ax.get_legend_handles_labels()[0]))
    return fig


def plot_final_best(
    units: "pd.DataFrame", summary: "pd.DataFrame", metric: str, *,
    colors: Mapping[str, Any], order: Sequence[str], baseline: str | None = None,
    xlabel: str = "group", title: bool = True,
) -> "Figure":  # fmt: skip
    """Every seed's number on the final weights and on the best-validation checkpoint, by
    group (``units``: group, final, best), with the group mean and its 95% CI (``summary``:
    ``{final,best}_{mean,ci_low,ci_high}``) where one exists."""
    import numpy as np

    fig = _figure(min(4.0 + 1.6 * len(order), 18.0), 4.8)
    axes = fig.subplots(1, 2, sharey=True)
    stats = summary.set_index("group")
    rotate = max((len(g) for g in order), default=0) > 10 or len(order) > 6
    with_ci = False
    for ax, which in zip(axes, ("final", "best")):
        for x, group in enumerate(order):
            values = units.loc[units["group"] == group, which].dropna().to_numpy(float)
            # a deterministic spread so that overlapping seeds stay visible
            xs = x + (np.linspace(-0.18, 0.18, values.size) if values.size > 1 else 0.0)
            if values.size:
                ax.scatter(xs, values, color=colors[group], alpha=0.75, s=28, zorder=3)
            mean, low, high = (stats.at[group, f"{which}_{k}"] if group in stats.index else np.nan
                               for k in ("mean", "ci_low", "ci_high"))  # fmt: skip
            if np.isfinite(low) and np.isfinite(high):
                ax.errorbar(x + 0.32, mean, yerr=[[mean - low], [high - mean]], marker="D",
                            color=colors[group], markersize=6, capsize=5, linewidth=2,
                            zorder=4)  # fmt: skip
                with_ci = True
            elif np.isfinite(mean):
                ax.plot(x + 0.32, mean, color=colors[group], marker="D", markersize=6, zorder=4)
        if baseline is not None and baseline in stats.index:
            ax.axhline(stats.at[baseline, f"{which}_mean"], color="0.45", linestyle="--",
                       linewidth=1, label=f"{baseline} mean")  # fmt: skip
            ax.legend(fontsize=8, loc="best")
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(order, rotation=30 if rotate else 0, ha="right" if rotate else "center")
        ax.set_xlim(-0.6, len(order) - 0.3)
        ax.set_xlabel(xlabel)
        ax.set_title("final weights" if which == "final" else "best-val checkpoint", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel(axis_label(metric))
    if title:
        fig.suptitle(f"{axis_label(metric)} per seed\npoints: seeds; diamond: group mean"
                     + " and 95% CI" * with_ci, fontsize=10)  # fmt: skip
    return fig


def plot_dose_response(
    levels: "pd.DataFrame", points: "pd.DataFrame", metric: str, x: str, *,
    fit: tuple[float, float, str] | None = None, title: bool = True,
) -> "Figure":  # fmt: skip
    """The end point against a numeric parameter: every seed (``points``: x, value), the
    mean per level with its 95% CI where one exists (``levels``: x, mean, ci_low, ci_high),
    and the trend line (``fit``: intercept, slope, the test that estimated it)."""
    import numpy as np

    fig = _figure(5.2, 3.8)
    ax = fig.add_subplot()
    if len(points):
        ax.scatter(points["x"], points["value"], s=16, color="0.55", alpha=0.8, label="seeds",
                   zorder=2)  # fmt: skip
    xs, mean = levels["x"].to_numpy(float), levels["mean"].to_numpy(float)
    low, high = levels["ci_low"].to_numpy(float), levels["ci_high"].to_numpy(float)
    ok = np.isfinite(low) & np.isfinite(high)
    if ok.any():
        ax.errorbar(xs[ok], mean[ok], yerr=[mean[ok] - low[ok], high[ok] - mean[ok]], color="C0",
                    marker="D", markersize=5, capsize=4, linestyle="none", zorder=3,
                    label="mean and 95% CI")  # fmt: skip
    if (~ok).any():
        ax.plot(xs[~ok], mean[~ok], "D", color="C0", markersize=5, zorder=3,
                label="mean (no interval)")  # fmt: skip
    if fit is not None and np.isfinite(fit[:2]).all():
        grid = np.linspace(xs.min(), xs.max(), 50)
        ax.plot(grid, fit[0] + fit[1] * grid, color="C3", linestyle="--", linewidth=1.4,
                label=f"trend: {fit[2]}")  # fmt: skip
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(metric))
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(f"{axis_label(metric)} against {x}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    return fig
