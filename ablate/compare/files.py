"""The files `ablate compare` writes: tables (CSV, Markdown), per-run and curve CSVs, figures.

Figures are written in every ``--format`` (PNG at 300 dpi, PDF, SVG). The learning-curve
figures shade a pointwise 95% CI (none for alpha, which the schedule sets); the difference
figure shades the simultaneous band over epochs (see :func:`ablate.compare.curves.diff_curves`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ablate.compare import plots as plotting
from ablate.compare.grouping import MISSING_VALUE, lookup
from ablate.compare.render import data_line, heading

if TYPE_CHECKING:
    from ablate.compare.result import ComparisonResult

__all__ = ["write_outputs", "safe_name"]


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _group_value(result: "ComparisonResult", group: str, key: str) -> str:
    for run in result.runs:
        if run.group == group:
            return lookup(key, run.tags, run.params) or MISSING_VALUE
    return MISSING_VALUE


def _tables(result: "ComparisonResult", out: Path) -> list[Path]:
    m = safe_name(result.metric)
    table = result.table.copy()
    keys = [*result.group_by, *result.following]
    for i, key in enumerate(keys):
        # one column per group-by (and following) key next to the label, for spreadsheets
        table.insert(1 + i, key, [_group_value(result, g, key) for g in table["group"]])
    table.insert(1 + len(keys), "metric", result.metric_label)
    table.insert(2 + len(keys), "checkpoint", result.checkpoint)
    files = [out / f"summary_{m}.csv", out / f"summary_{m}.md"]
    table.to_csv(files[0], index=False)
    md = [f"# Comparison: {result.metric_label}", "", heading(result), "", data_line(result),
          "", result.to_markdown()]  # fmt: skip
    if result.notes:
        md += [""] + [f"- {note}" for note in result.notes]
    files[1].write_text("\n".join(md) + "\n", encoding="utf-8")
    frames = [(f"runs_{m}.csv", result.per_run), ("curves.csv", result.curves),
              ("diff_curves.csv", result.diffs)]  # fmt: skip
    if result.dose is not None:
        frames.append((f"dose_{m}_vs_{safe_name(result.dose.x)}.csv", result.dose.levels))
    for name, frame in frames:
        frame.to_csv(out / name, index=False)
        files.append(out / name)
    return files


def write_outputs(
    result: "ComparisonResult", out: Path, order: Sequence[str], plots: bool
) -> list[Path]:
    """Tables (CSV + Markdown), per-run, curve and difference CSVs, and the figures."""
    out.mkdir(parents=True, exist_ok=True)
    files = _tables(result, out)
    if plots:
        files += _figures(result, out, order)
    return files


def _figures(result: "ComparisonResult", out: Path, order: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    formats = result.formats
    # colours and styles follow sorted labels, so a group keeps its look across comparisons
    colors = plotting.group_colors(sorted(order))
    styles = plotting.group_styles(sorted(order))
    curve = result.spec.curve
    if result.dose is not None:
        fig = result.dose.figure(result)
        stem = f"dose_{safe_name(result.metric)}_vs_{safe_name(result.dose.x)}"
        return plotting.save(fig, out / stem, formats)
    for metric in result.curves["metric"].unique():
        band = "" if metric in plotting.DETERMINISTIC else " and pointwise 95% CI"
        fig = plotting.plot_learning_curves(
            result.curves[result.curves["metric"] == metric], metric, None, colors=colors,
            order=order, styles=styles, target=result.target if metric == curve else None,
            title=f"{plotting.axis_label(metric)}\nmean{band} across seeds",
        )  # fmt: skip
        files += plotting.save(fig, out / f"curve_{safe_name(metric)}", formats)
    if not result.diffs.empty:
        fig = plotting.plot_differences(
            result.diffs, curve, None, colors=colors, styles=styles, baseline=result.baseline,
            order=[g for g in order if g != result.baseline],
        )  # fmt: skip
        files += plotting.save(fig, out / f"diff_{safe_name(curve)}", formats)
    fig = plotting.plot_final_best(
        result.units if result.units is not None else result.per_run, result.table,
        result.metric, None, colors=colors, order=order, baseline=result.baseline,
        xlabel=",".join(result.group_by) or "all runs",
        title=f"{plotting.axis_label(result.metric)} per seed",
    )  # fmt: skip
    files += plotting.save(fig, out / f"final_best_{safe_name(result.metric)}", formats)
    return files
