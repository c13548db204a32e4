"""The files `ablate compare` writes: the tables (CSV, Markdown), per-run, curve and
difference CSVs, and the figures in every ``--format``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ablate.compare import plots
from ablate.compare.grouping import MISSING_VALUE, lookup
from ablate.compare.render import data_line, heading

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ablate.compare.result import ComparisonResult

__all__ = ["write_outputs", "safe_name"]


def safe_name(name: str) -> str:
    """A file-name part: ``acc/val`` -> ``acc_val``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _tables(result: "ComparisonResult", out: Path) -> list[Path]:
    m = safe_name(result.metric)
    table = result.table.copy()
    members = {r.group: r for r in reversed(result.runs)}
    for i, key in enumerate([*result.group_by, *result.following]):
        # one column per group-by (and following) key next to the label, for spreadsheets
        values = [lookup(key, members[g]) if g in members else None for g in table["group"]]
        table.insert(1 + i, key, [v or MISSING_VALUE for v in values])
    at = 1 + len(result.group_by) + len(result.following)
    table.insert(at, "metric", result.metric_label)
    table.insert(at + 1, "checkpoint", result.checkpoint)
    files = [out / f"summary_{m}.csv", out / f"summary_{m}.md"]
    table.to_csv(files[0], index=False)
    md = [f"# Comparison: {result.metric_label}", "", heading(result), "", data_line(result),
          "", result.format_table(markdown=True)]  # fmt: skip
    md += [""] + [f"- {note}" for note in result.notes] if result.notes else []
    files[1].write_text("\n".join(md) + "\n", encoding="utf-8")
    frames = {f"runs_{m}.csv": result.per_run, "curves.csv": result.curves,
              "diff_curves.csv": result.diffs}  # fmt: skip
    if result.dose is not None:
        frames[f"dose_{m}_vs_{safe_name(result.dose.x)}.csv"] = result.dose.levels
    for name, frame in frames.items():
        frame.to_csv(out / name, index=False)
        files.append(out / name)
    return files


def write_outputs(
    result: "ComparisonResult", out: Path, order: Sequence[str], *, draw: bool = True,
    formats: Sequence[str] = ("png",), titles: bool = True,
) -> list[Path]:  # fmt: skip
    """Tables and CSVs, then (``draw``) every figure in every format."""
    out.mkdir(parents=True, exist_ok=True)
    files = _tables(result, out)
    for stem, fig in (_figures(result, order, titles) if draw else {}).items():
        files += plots.save(fig, out / stem, formats)
    return files


def _dose_figure(result: "ComparisonResult", titles: bool) -> "Figure":
    dose, units = result.dose, result.units
    where = dict(zip(dose.levels["group"], dose.levels["x"]))
    points = units[units["group"].isin(where)]
    points = points.assign(x=points["group"].map(where), value=points[result.checkpoint])
    first = dose.trends[0] if len(dose.trends) == 1 else None
    fit = (first["intercept"], first["slope"], first["test"]) if first else None
    return plots.plot_dose_response(dose.levels, points, result.metric, dose.x, fit=fit,
                                    title=titles)  # fmt: skip


def _figures(
    result: "ComparisonResult", order: Sequence[str], titles: bool
) -> dict[str, "Figure"]:
    """file stem -> figure; colours and styles follow sorted labels, so a group keeps its
    look across comparisons."""
    if result.dose is not None:
        return {f"dose_{safe_name(result.metric)}_vs_{safe_name(result.dose.x)}":
                _dose_figure(result, titles)}  # fmt: skip
    colors, styles = plots.group_colors(sorted(order)), plots.group_styles(sorted(order))
    curve = result.spec.curve
    figures = {
        f"curve_{safe_name(metric)}": plots.plot_learning_curves(
            result.curves[result.curves["metric"] == metric], metric, colors=colors,
            order=order, styles=styles, target=result.target if metric == curve else None,
            title=titles)
        for metric in result.curves["metric"].unique()
    }  # fmt: skip
    if not result.diffs.empty:
        figures[f"diff_{safe_name(curve)}"] = plots.plot_differences(
            result.diffs, curve, colors=colors, styles=styles, baseline=result.baseline,
            order=[g for g in order if g != result.baseline], title=titles)  # fmt: skip
    figures[f"final_best_{safe_name(result.metric)}"] = plots.plot_final_best(
        result.units, result.table, result.metric, colors=colors, order=order,
        baseline=result.baseline, xlabel=",".join(result.group_by) or "all runs",
        title=titles)  # fmt: skip
    return figures
