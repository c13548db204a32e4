"""Matplotlib figures for `ablate compare`, fit for a paper.

Each ``plot_*`` function builds a figure, writes it when given a path (the format follows
the suffix: PNG at :data:`DPI` = 300 dpi for print, PDF and SVG as vectors; :func:`save`
writes several), and returns it (tests read its axes). Axes are labelled in words with
units ("validation accuracy (fraction correct)", "epoch"); groups differ by line style and
marker as well as colour, so a figure survives grey-scale printing; a deterministic
quantity (the alpha schedule) is drawn without a confidence band. Figures are built on
``matplotlib.figure.Figure`` with the non-interactive Agg canvas, never through pyplot: no
global figure registry to leak, no GUI backend picked up from the environment, safe to
call from a worker thread or a headless server.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "TRAIN_OBJECTIVE_LABEL",
    "axis_label",
    "group_colors",
    "group_styles",
    "save",
    "plot_dose_response",
    "plot_learning_curves",
    "plot_differences",
    "plot_final_best",
]

DPI = 300  # print resolution of raster output (PNG); PDF and SVG are vector
_SCREEN_DPI = 100  # the canvas while drawing (text sizes are in points either way)
# train_loss is the training objective: cross-entropy with label smoothing and on MixUp /
# CutMix targets. It is larger than a clean loss by construction, so it never shares an
# axis with val_loss and always carries this label.
TRAIN_OBJECTIVE_LABEL = "train objective (smoothed / mixed)"
_LABELS = {
    "train_loss": TRAIN_OBJECTIVE_LABEL,
    "val_acc": "validation accuracy (fraction correct)",
    "test_acc": "test accuracy (fraction correct)",
    "best_test_acc": "test accuracy, best-val checkpoint (fraction correct)",
    "val_loss": "validation loss (cross-entropy, nats)",
    "test_loss": "test loss (cross-entropy, nats)",
    "val_f1": "validation macro F1",
    "test_f1": "test macro F1",
    "alpha": "alpha (weight of softmax^T(V))",
    "lr": "learning rate",
}
DETERMINISTIC = frozenset({"alpha", "lr"})  # set by the schedule: no band across seeds
_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
# Beyond this many groups the legend moves outside the axes so it does not hide curves.
_LEGEND_INSIDE_MAX = 8


def _figure(width: float, height: float) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_SCREEN_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def axis_label(metric: str) -> str:
    """A metric's axis label in words with its unit (``val_acc`` -> "validation accuracy
    (fraction correct)"); ``train_loss`` is labelled as the objective it is; unknown keys
    are shown as logged."""
    return _LABELS.get(metric, metric)


def group_styles(groups: Sequence[str]) -> dict[str, tuple[str, str]]:
    """group -> (line style, marker), distinct for up to 32 groups (grey-scale safe)."""
    return {
        g: (_STYLES[i % len(_STYLES)], _MARKERS[(i // len(_STYLES) + i) % len(_MARKERS)])
        for i, g in enumerate(groups)
    }


def save(fig: "Figure", stem: Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``fig`` as ``stem.<format>`` for each format (PNG at :data:`DPI`)."""
    paths = []
    for fmt in formats:
        path = Path(stem).with_suffix(f".{fmt}")
        fig.savefig(path, dpi=DPI if fmt == "png" else "figure", format=fmt)
        paths.append(path)
    return paths


def _write(fig: "Figure", path: str | Path | None) -> None:
    if path is not None:
        path = Path(path)
        fig.savefig(path, dpi=DPI if path.suffix.lower() in (".png", "") else "figure")


def group_colors(groups: Sequence[str]) -> dict[str, Any]:
    """One distinct colour per group: tab10 up to 10 groups, tab20 up to 20, then turbo."""
    from matplotlib import colormaps

    n = len(groups)
    if n <= 10:
        cmap = colormaps["tab10"]
        colours = [cmap(i) for i in range(n)]
    elif n <= 20:
        cmap = colormaps["tab20"]
        colours = [cmap(i) for i in range(n)]
    else:
        cmap = colormaps["turbo"]
        colours = [cmap(i / (n - 1)) for i in range(n)]
    return dict(zip(groups, colours))


def _legend(ax: "Axes", n_entries: int) -> None:
    if n_entries <= _LEGEND_INSIDE_MAX:
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
    else:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def plot_learning_curves(
    curves: "pd.DataFrame",
    metric: str,
    path: str | Path | None,
    *,
    colors: Mapping[str, Any],
    order: Sequence[str] | None = None,
    title: str | None = None,
    target: float | None = None,
    styles: Mapping[str, tuple[str, str]] | None = None,
) -> "Figure":
    """Mean curve per group with its pointwise 95% confidence band (none for a deterministic
    quantity such as alpha); labels where fewer seeds remain.

    Args:
        curves: rows of one metric with columns group, step, n, mean, ci_low, ci_high.
        metric: the metric key (the y-axis label is :func:`axis_label` of it).
        path: PNG file to write (None: only build the figure).
        colors: group -> colour (see :func:`group_colors`).
        order: groups in legend order (default: the order of ``colors``).
        title: figure title.
        target: draw a horizontal reference line at this value.
        styles: group -> (line style, marker) (default: :func:`group_styles` of ``order``).
    """
    from matplotlib.ticker import MaxNLocator

    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    entries = 0
    groups = list(order or list(colors))
    styles = styles or group_styles(groups)
    for group in groups:
        sub = curves[curves["group"] == group].sort_values("step")
        if sub.empty:
            continue
        colour = colors[group]
        steps = sub["step"].to_numpy()
        mean = sub["mean"].to_numpy(float)
        n = sub["n"].to_numpy()
        line, marker = styles[group]
        ax.plot(steps, mean, color=colour, linewidth=1.8, linestyle=line, markersize=3.5,
                marker=marker if len(steps) <= 40 else None,
                label=f"{group} (n={int(n.max())})")  # fmt: skip
        if metric not in DETERMINISTIC:
            # NaN bounds (n < 2) leave gaps in the band rather than a fake zero-width band.
            ax.fill_between(
                steps,
                sub["ci_low"].to_numpy(float),
                sub["ci_high"].to_numpy(float),
                color=colour,
                alpha=0.18,
                linewidth=0,
            )
        for i in range(1, len(n)):
            if n[i] < n[i - 1]:
                ax.annotate(
                    f"n={int(n[i])}",
                    (steps[i], mean[i]),
                    textcoords="offset points",
                    xytext=(3, 6),
                    fontsize=8,
                    color=colour,
                )
        entries += 1
    if target is not None:
        ax.axhline(target, color="0.4", linestyle=":", linewidth=1.2, label=f"target {target:g}")
        entries += 1
    ax.set_xlabel("epoch")
    ax.set_ylabel(axis_label(metric))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    band = "" if metric in DETERMINISTIC else " and pointwise 95% CI"
    ax.set_title(title or f"{axis_label(metric)}: mean{band} across seeds", fontsize=10)
    _legend(ax, entries)
    _write(fig, path)
    return fig


def plot_differences(
    diffs: "pd.DataFrame",
    metric: str,
    path: str | Path | None,
    *,
    colors: Mapping[str, Any],
    order: Sequence[str],
    baseline: str,
    title: str | None = None,
    styles: Mapping[str, tuple[str, str]] | None = None,
) -> "Figure":
    """Each group minus the baseline per epoch, with a zero line and a shaded 95% band:
    the simultaneous one (``band_low``/``band_high``: it holds for every epoch at once)
    when present, else the pointwise ``ci_low``/``ci_high``; the legend says which.

    Args:
        diffs: columns group, step, n, diff, ci_low, ci_high, test, and optionally
            band_low, band_high, band (see ``ablate.compare.curves.diff_curves``).
        metric: the metric differenced (y-axis: "metric - baseline").
        path: PNG file to write (None: only build the figure).
        colors: group -> colour; order: groups in legend order (baseline excluded).
        baseline: the reference group's label.
        title: figure title.
    """
    from matplotlib.ticker import MaxNLocator

    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.3", linewidth=1.0, linestyle="--", label=f"{baseline} (zero)")
    entries = 1
    styles = styles or group_styles(list(order))
    simultaneous = "band_low" in diffs.columns
    bands: set[str] = set()
    low_col, high_col = ("band_low", "band_high") if simultaneous else ("ci_low", "ci_high")
    for group in order:
        sub = diffs[diffs["group"] == group].sort_values("step")
        if sub.empty:
            continue
        steps = sub["step"].to_numpy()
        tests = sorted(set(sub["test"]))
        bands.update(sub["band"] if "band" in sub else ["pointwise"])
        line, marker = styles[group]
        ax.plot(
            steps,
            sub["diff"].to_numpy(float),
            color=colors[group],
            linewidth=1.8,
            linestyle=line,
            marker=marker if len(steps) <= 40 else None,
            markersize=3.5,
            label=f"{group} ({' / '.join(tests)}, n={int(sub['n'].max())})",
        )
        ax.fill_between(
            steps,
            sub[low_col].to_numpy(float),
            sub[high_col].to_numpy(float),
            color=colors[group],
            alpha=0.18,
            linewidth=0,
        )
        entries += 1
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{axis_label(metric)}\nminus {baseline}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    kind = "simultaneous" if simultaneous else "pointwise"
    default = (
        f"{axis_label(metric).split(' (')[0]} minus {baseline}, mean over seeds\n"
        f"shaded: {kind} 95% band ({'; '.join(sorted(bands))})"
    )
    ax.set_title(title or default, fontsize=9)
    _legend(ax, entries)
    _write(fig, path)
    return fig


def plot_final_best(
    per_run: "pd.DataFrame",
    summary: "pd.DataFrame",
    metric: str,
    path: str | Path | None,
    *,
    colors: Mapping[str, Any],
    order: Sequence[str],
    baseline: str | None = None,
    xlabel: str = "group",
    title: str | None = None,
) -> "Figure":
    """Every run's value on the final weights and on the best-validation checkpoint, by
    group: points, group mean and its 95% CI.

    Args:
        per_run: columns group, final, best (one row per run).
        summary: columns group, final_mean, final_ci_low, final_ci_high, best_mean,
            best_ci_low, best_ci_high (see ``ablate.compare.summary.summarize``).
        metric: metric name for the axis labels.
        path: PNG file to write (None: only build the figure).
        colors: group -> colour.
        order: groups left to right.
        baseline: group whose mean is drawn as a dashed reference line.
        xlabel: x-axis label (the group-by keys).
        title: figure title.
    """
    import numpy as np

    width = min(4.0 + 1.6 * len(order), 18.0)
    fig = _figure(width, 4.8)
    axes = fig.subplots(1, 2, sharey=True)
    stats = summary.set_index("group")
    rotate = max((len(g) for g in order), default=0) > 10 or len(order) > 6
    names = {"final": "final weights", "best": "best-val checkpoint"}
    for ax, which in zip(axes, ("final", "best")):
        for x, group in enumerate(order):
            values = per_run.loc[per_run["group"] == group, which].dropna().to_numpy(float)
            colour = colors[group]
            # deterministic spread so overlapping seeds stay visible
            offsets = np.linspace(-0.18, 0.18, values.size) if values.size > 1 else np.zeros(1)
            xs = x + offsets[: values.size]
            ax.scatter(xs, values, color=colour, alpha=0.75, s=28, zorder=3)
            if group in stats.index:
                mean = stats.at[group, f"{which}_mean"]
                low, high = stats.at[group, f"{which}_ci_low"], stats.at[group, f"{which}_ci_high"]
                if np.isfinite(low) and np.isfinite(high):
                    ax.errorbar(x + 0.32, mean, yerr=[[mean - low], [high - mean]],
                                color=colour, marker="D", markersize=6, capsize=5,
                                linewidth=2, zorder=4)  # fmt: skip
                else:  # n < 2: a mean marker without a band
                    ax.plot(x + 0.32, mean, color=colour, marker="D", markersize=6, zorder=4)
        if baseline is not None and baseline in stats.index:
            ax.axhline(
                stats.at[baseline, f"{which}_mean"],
                color="0.45",
                linestyle="--",
                linewidth=1,
                label=f"{baseline} mean",
            )
            ax.legend(fontsize=8, loc="best")
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(order, rotation=30 if rotate else 0, ha="right" if rotate else "center")
        ax.set_xlim(-0.6, len(order) - 0.3)
        ax.set_xlabel(xlabel)
        ax.set_title(names[which], fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel(axis_label(metric))
    fig.suptitle(
        (title or f"{metric} per run") + "\npoints: seeds; diamond: group mean and 95% CI",
        fontsize=10,
    )
    _write(fig, path)
    return fig


def plot_dose_response(
    levels: "pd.DataFrame",
    points: "pd.DataFrame",
    metric: str,
    x: str,
    path: str | Path | None,
    *,
    fit: tuple[float, float] | None = None,
    title: str | None = None,
) -> "Figure":
    """End point against a numeric parameter: every seed (points), the mean per level with
    its 95% CI, and the fitted trend line.

    Args:
        levels: columns x, mean, ci_low, ci_high (one row per level).
        points: columns x, value (one row per seed and level).
        metric: the end point's metric key (y-axis label in words).
        x: the parameter's name (x-axis label).
        path: file to write (None: only build the figure).
        fit: (intercept, slope) of the trend line, or None.
        title: figure title.
    """
    import numpy as np

    fig = _figure(5.2, 3.8)
    ax = fig.add_subplot()
    ax.scatter(points["x"], points["value"], s=16, color="0.55", alpha=0.8, label="seeds",
               zorder=2)  # fmt: skip
    xs = levels["x"].to_numpy(float)
    mean = levels["mean"].to_numpy(float)
    low = levels["ci_low"].to_numpy(float)
    high = levels["ci_high"].to_numpy(float)
    ok = np.isfinite(low) & np.isfinite(high)
    ax.errorbar(xs[ok], mean[ok], yerr=[mean[ok] - low[ok], high[ok] - mean[ok]], color="C0",
                marker="D", markersize=5, capsize=4, linestyle="none", zorder=3,
                label="mean and 95% CI")  # fmt: skip
    if (~ok).any():
        ax.plot(xs[~ok], mean[~ok], "D", color="C0", markersize=5, zorder=3)
    if fit is not None and all(map(np.isfinite, fit)):
        grid = np.linspace(xs.min(), xs.max(), 50)
        ax.plot(grid, fit[0] + fit[1] * grid, color="C3", linestyle="--", linewidth=1.4,
                label="linear trend (seeds as blocks)")  # fmt: skip
    ax.set_xlabel(axis_label(x) if x in _LABELS else x)
    ax.set_ylabel(axis_label(metric))
    ax.grid(alpha=0.3)
    ax.set_title(title or f"{axis_label(metric)} against {x}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    _write(fig, path)
    return fig
