"""Rendering `ablate compare` results: aligned text and Markdown tables, CSVs and figures.

Three tables, one concern each: the end point per group (and which model it came from),
the differences from the baseline with their tests, and the learning curves (area under
the validation curve, epochs to a target). The CSV has every column of all three.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ablate import plots as plotting
from ablate.compare.grouping import MISSING_VALUE, lookup

if TYPE_CHECKING:
    from ablate.compare.core import ComparisonResult

__all__ = ["format_table", "format_report", "heading", "write_outputs"]

_CHECKPOINT_NAMES = {"final": "final weights", "best": "best-val checkpoint"}


def _num(x: Any, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "nan"
    digits = 4 if abs(x) < 100 else 1
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "nan"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _interval(low: float, high: float, signed: bool = False) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"[{_num(low, signed)}, {_num(high, signed)}]"


def _mean_std(rec: dict, prefix: str) -> str:
    if not math.isfinite(rec[f"{prefix}_mean"]):
        return "-"
    spread = " ± n<2" if rec["n"] < 2 else f" ± {_num(rec[f'{prefix}_std'])}"
    return _num(rec[f"{prefix}_mean"]) + spread


def _origin(rec: dict, which: str) -> str:
    """Where a group's numbers came from: checkpoint, epoch(s), alpha(s)."""
    text = "final" if which == "final" else "best-val"
    if rec[f"{which}_epochs"]:
        text += f" ep {rec[f'{which}_epochs']}"
    if rec[f"{which}_alphas"]:
        text += f" α {rec[f'{which}_alphas']}"
    return text


def _seeds(x: float) -> str:
    if not math.isfinite(x):
        return ">1000" if x == math.inf else "-"
    return f"{x:.0f}"


def _endpoint_table(result: "ComparisonResult") -> tuple[str, list[str], list[list[str]]]:
    m, tested = result.metric, result.checkpoint
    other = "best" if tested == "final" else "final"
    title = (
        f"end point: {m} of the {_CHECKPOINT_NAMES[tested]} "
        f"({'higher' if result.mode == 'max' else 'lower'} is better)"
    )
    other_name = "best-val ckpt" if other == "best" else "final weights"
    header = ["group", "n", f"{m} (mean ± std)", "95% CI", "from", f"{other_name} (mean ± std)"]
    rows = []
    for rec in result.table.to_dict("records"):
        n_text = f"{rec['n']}" + (f" ({rec['n_running']} running)" if rec["n_running"] else "")
        ci = (
            "n<2" if rec["n"] < 2 else _interval(rec[f"{tested}_ci_low"], rec[f"{tested}_ci_high"])
        )
        rows.append(
            [
                rec["group"], n_text, _mean_std(rec, tested), ci, _origin(rec, tested),
                _mean_std(rec, other),
            ]
        )  # fmt: skip
    return title, header, rows


def _baseline_table(result: "ComparisonResult") -> tuple[str, list[str], list[list[str]]]:
    table = result.table
    boot = bool(table["boot_ci_low"].notna().any())
    title = f"difference from {result.baseline} ({result.metric}, {result.checkpoint})"
    header = ["group", "Δ", "Δ 95% CI", "test", "p", "p (Holm)"]
    header += ["Δ 95% CI (BCa)"] if boot else []
    header += ["P(better) [95% CI]", "MDE (80%)", "seeds for Δ"]
    rows = []
    for rec in table.to_dict("records"):
        if rec["group"] == result.baseline:
            rows.append([rec["group"], "baseline"] + [""] * (len(header) - 2))
            continue
        holm = _p(rec["p_holm"]) + (" *" if rec["significant"] else "")
        row = [
            rec["group"], _num(rec["diff"], True),
            _interval(rec["diff_ci_low"], rec["diff_ci_high"], True),
            rec["test"] + (f" ({rec['n_pairs']} pairs)" if rec["n_pairs"] else ""),
            _p(rec["p_value"]), holm,
        ]  # fmt: skip
        if boot:
            row.append(_interval(rec["boot_ci_low"], rec["boot_ci_high"], True))
        p_imp = "-" if not math.isfinite(rec["p_improve"]) else f"{rec['p_improve']:.2f}"
        if math.isfinite(rec["p_improve_low"]):
            p_imp += f" [{rec['p_improve_low']:.2f}, {rec['p_improve_high']:.2f}]"
        row += [p_imp, _num(rec["mde"]), _seeds(rec["seeds_needed"])]
        rows.append(row)
    return title, header, rows


def _curve_table(result: "ComparisonResult") -> tuple[str, list[str], list[list[str]]]:
    curve = result.spec.curve
    title = f"learning curve: {curve}"
    header = ["group", "AUC: mean over epochs 1..E", "E"]
    compared = result.baseline is not None and "auc_diff" in result.table.columns
    header += ["Δ AUC [95% CI]", "p (Holm)"] if compared else []
    if result.target is not None:
        how = " (auto)" if result.target_auto else ""
        header.append(f"epochs to {result.target:.4g}{how} (reached)")
    rows = []
    for rec in result.table.to_dict("records"):
        row = [rec["group"], _mean_std(rec, "auc"), rec["auc_last_epochs"] or "-"]
        if compared:
            if rec["group"] == result.baseline:
                row += ["baseline", ""]
            else:
                delta = _num(rec["auc_diff"], True)
                delta += " " + _interval(rec["auc_diff_ci_low"], rec["auc_diff_ci_high"], True)
                holm = _p(rec["auc_p_holm"]) + (" *" if rec["auc_significant"] else "")
                row += [delta, holm]
        if result.target is not None:
            n, reached = rec["n"], rec["n_reached"]
            row.append(
                f"never (0/{n})"
                if reached == 0
                else f"{rec['epochs_to_target']:.1f} ({reached}/{n})"
            )
        rows.append(row)
    return title, header, rows


def _render(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:

        def esc(cell: str) -> str:
            return str(cell).replace("|", "\\|")

        lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
        lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        rest = [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in rows]
    return "\n".join(out)


def format_table(result: "ComparisonResult", markdown: bool = False) -> str:
    """Render the tables: aligned plain text, or Markdown with ``markdown=True``."""
    parts = [_endpoint_table(result)]
    if result.baseline is not None:
        parts.append(_baseline_table(result))
    if result.table["auc_mean"].notna().any() or result.target is not None:
        parts.append(_curve_table(result))
    blocks = []
    for title, header, rows in parts:
        caption = f"**{title}**" if markdown else f"{title}:"
        blocks.append(caption + "\n\n" + _render(header, rows, markdown))
    return "\n\n".join(blocks)


def heading(result: "ComparisonResult") -> str:
    """One line: what was compared, how it was grouped and pooled."""
    groups = len(result.table)
    by = ",".join(result.group_by) if result.group_by else "nothing (one group)"
    pooled = ",".join(["seed", *result.pool_over])
    verb = "varies" if len(result.following) == 1 else "vary"
    follow = f" ({', '.join(result.following)} {verb} with them)" if result.following else ""
    return (
        f"{result.source}: {len(result.per_run)} runs in {groups} group(s), grouped by "
        f"{by}{follow}, pooled over {pooled}"
    )


def format_report(result: "ComparisonResult") -> str:
    """What the command prints: heading, tables, notes (significance marks), files."""
    parts = [heading(result), "", format_table(result)]
    if result.baseline is not None and result.table["significant"].any():
        parts += ["", "* significant after Holm's correction (family-wise level 0.05)"]
    if result.notes:
        parts.append("")
        parts += [f"note: {note}" for note in result.notes]
    if result.files:
        parts.append("")
        parts += [f"wrote {path}" for path in result.files]
    if result.logged_artifacts:
        parts.append(
            f"logged {len(result.logged_artifacts)} files to study parent run "
            f"{result.parent_run_id} under compare/"
        )
    return "\n".join(parts)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _group_value(result: "ComparisonResult", group: str, key: str) -> str:
    for run in result.runs:
        if run.group == group:
            return lookup(key, run.tags, run.params) or MISSING_VALUE
    return MISSING_VALUE


def write_outputs(
    result: "ComparisonResult", out: Path, order: Sequence[str], plots: bool
) -> list[Path]:
    """Tables (CSV + Markdown), per-run, curve and difference CSVs, and the figures."""
    out.mkdir(parents=True, exist_ok=True)
    m = _safe(result.metric)
    files: list[Path] = []

    table = result.table.copy()
    keys = [*result.group_by, *result.following]
    for i, key in enumerate(keys):
        # one column per group-by (and following) key next to the label, for spreadsheets
        table.insert(1 + i, key, [_group_value(result, g, key) for g in table["group"]])
    table.insert(1 + len(keys), "metric", result.metric)
    table.insert(2 + len(keys), "checkpoint", result.checkpoint)
    path = out / f"summary_{m}.csv"
    table.to_csv(path, index=False)
    files.append(path)

    path = out / f"summary_{m}.md"
    md = [f"# Comparison: {result.metric}", "", heading(result), "", result.to_markdown()]
    if result.notes:
        md += [""] + [f"- {note}" for note in result.notes]
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    files.append(path)

    for name, frame in (
        (f"runs_{m}.csv", result.per_run),
        ("curves.csv", result.curves),
        ("diff_curves.csv", result.diffs),
    ):
        path = out / name
        frame.to_csv(path, index=False)
        files.append(path)

    if plots:
        files += _figures(result, out, order)
    return files


def _figures(result: "ComparisonResult", out: Path, order: Sequence[str]) -> list[Path]:
    files = []
    # colours follow sorted labels, so a group keeps its colour across comparisons
    colors = plotting.group_colors(sorted(order))
    curve = result.spec.curve
    for metric in result.curves["metric"].unique():
        path = out / f"curve_{_safe(metric)}.png"
        plotting.plot_learning_curves(
            result.curves[result.curves["metric"] == metric],
            metric,
            path,
            colors=colors,
            order=order,
            title=f"{plotting.axis_label(metric)}: mean and 95% CI across seeds ({result.source})",
            target=result.target if metric == curve else None,
        )
        files.append(path)
    if not result.diffs.empty:
        path = out / f"diff_{_safe(curve)}.png"
        plotting.plot_differences(
            result.diffs,
            curve,
            path,
            colors=colors,
            order=[g for g in order if g != result.baseline],
            baseline=result.baseline,
            title=f"{curve} minus {result.baseline} per epoch, 95% CI ({result.source})",
        )
        files.append(path)
    path = out / f"final_best_{_safe(result.metric)}.png"
    plotting.plot_final_best(
        result.per_run,
        result.table,
        result.metric,
        path,
        colors=colors,
        order=order,
        baseline=result.baseline,
        xlabel=",".join(result.group_by) or "all runs",
        title=f"{result.metric} per run ({result.source})",
    )
    files.append(path)
    return files
