"""Rendering `ablate compare` results as text: aligned or Markdown tables, and JSON.

Three tables, one concern each: the end point per group (which model it came from, and
how many runs the group lost), the differences from the baseline with their tests, and the
learning curves (area under the validation curve over the epochs every run has, with the
alpha those epochs cover; epochs to a target). Every cell says what it is: a pointwise or
exact interval, a paired or unpaired P(better), an undefined interval when there is no
spread. Files and figures are written by :mod:`ablate.compare.files`.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Sequence

from ablate.compare.fmt import UNDEFINED
from ablate.compare.fmt import interval as _interval
from ablate.compare.fmt import num as _num
from ablate.compare.fmt import p_text as _p
from ablate.compare.notes import DATA_KEYS

if TYPE_CHECKING:
    from ablate.compare.result import ComparisonResult

__all__ = ["format_table", "format_report", "heading", "data_line", "to_json", "render"]

_CHECKPOINT_NAMES = {"final": "final weights", "best": "best-val checkpoint"}


def _mean_std(rec: dict, prefix: str) -> str:
    if not math.isfinite(rec[f"{prefix}_mean"]):
        return "-"
    spread = " ± n<2" if rec["n"] < 2 else f" ± {_num(rec[f'{prefix}_std'])}"
    return _num(rec[f"{prefix}_mean"]) + spread


def _group_ci(rec: dict, prefix: str) -> str:
    method = rec[f"{prefix}_ci_method"]
    if method == "n<2":
        return "n<2"
    if method == "no spread":
        return UNDEFINED
    text = _interval(rec[f"{prefix}_ci_low"], rec[f"{prefix}_ci_high"])
    return text if method == "t" else f"{text} {method}"


def _origin(rec: dict, which: str) -> str:
    """Where a group's numbers came from: checkpoint, epoch(s), alpha(s)."""
    text = "final" if which == "final" else "best-val"
    if rec[f"{which}_epochs"]:
        text += f" ep {rec[f'{which}_epochs']}"
    if rec[f"{which}_alphas"]:
        text += f" α {rec[f'{which}_alphas']}"
    return text


def _count(rec: dict, result: "ComparisonResult") -> str:
    """``n (failed/pruned)``, plus RUNNING runs left out and repeated seeds."""
    text = f"{rec['n']} ({rec['failed']}/{rec['pruned']})"
    if rec["running"]:
        text += f" +{rec['running']} running"
    if rec["n_running"]:
        text += f" incl. {rec['n_running']} running"
    if rec["repeated"]:
        text += f", {rec['n_runs']} runs ({result.repeats})"
    return text


def _seeds(x: float) -> str:
    if not math.isfinite(x):
        return ">1000" if x == math.inf else "-"
    return f"{x:.0f}"


def _endpoint_table(result: "ComparisonResult") -> tuple[str, list[str], list[list[str]]]:
    m, tested = result.metric_label, result.checkpoint
    other = "best" if tested == "final" else "final"
    better = "higher" if result.mode == "max" else "lower"
    if result.at_epoch is not None:
        title = (
            f"end point: {m} (partial look: the last epoch every run reached; "
            f"{better} is better)"
        )
    else:
        title = f"end point: {m} of the {_CHECKPOINT_NAMES[tested]} ({better} is better)"
    if result.following:
        title += f"; groups also differ in {', '.join(result.following)}"
    header = ["group", "n (failed/pruned)", f"{result.metric} (mean ± std)", "95% CI", "from"]
    if result.at_epoch is None:
        header.append(("best-val ckpt" if other == "best" else "final weights") + " (mean ± std)")
    rows = []
    for rec in result.table.to_dict("records"):
        row = [rec["group"], _count(rec, result), _mean_std(rec, tested), _group_ci(rec, tested),
               _origin(rec, tested)]  # fmt: skip
        if result.at_epoch is None:
            row.append(_mean_std(rec, other))
        rows.append(row)
    return title, header, rows


def _p_better(rec: dict, prefix: str = "") -> str:
    value = rec[f"{prefix}p_improve"]
    if not math.isfinite(value):
        return "-"
    if math.isfinite(rec[f"{prefix}p_improve_low"]):
        low, high = rec[f"{prefix}p_improve_low"], rec[f"{prefix}p_improve_high"]
        return f"{value:.2f} [{low:.2f}, {high:.2f}] paired"
    return f"{value:.2f} unpaired"


def _delta_ci(rec: dict, prefix: str = "") -> str:
    if rec[f"{prefix}test"].startswith("sign"):
        return UNDEFINED
    return _interval(rec[f"{prefix}diff_ci_low"], rec[f"{prefix}diff_ci_high"], True)


def _test_name(rec: dict, prefix: str = "") -> str:
    n_pairs = rec[f"{prefix}n_pairs"]
    return rec[f"{prefix}test"] + (f" ({n_pairs} pairs)" if n_pairs else "")


def _baseline_table(result: "ComparisonResult") -> tuple[str, list[str], list[list[str]]]:
    table = result.table
    boot = bool(table["boot_ci_low"].notna().any())
    title = f"difference from {result.baseline} ({result.metric_label}, {result.checkpoint})"
    header = ["group", "Δ", "Δ 95% CI", "test", "p", "p (Holm)"]
    header += ["Δ 95% CI (BCa)"] if boot else []
    header += ["P(better) [95% CI]", "MDE (80%)", "seeds for Δ"]
    rows = []
    for rec in table.to_dict("records"):
        if rec["group"] == result.baseline:
            rows.append([rec["group"], "baseline"] + [""] * (len(header) - 2))
            continue
        holm = _p(rec["p_holm"]) + (" *" if rec["significant"] else "")
        row = [rec["group"], _num(rec["diff"], True), _delta_ci(rec), _test_name(rec),
               _p(rec["p_value"]), holm]  # fmt: skip
        if boot:
            row.append(_interval(rec["boot_ci_low"], rec["boot_ci_high"], True))
        row += [_p_better(rec), _num(rec["mde"]) if math.isfinite(rec["mde"]) else "-",
                _seeds(rec["seeds_needed"])]  # fmt: skip
        rows.append(row)
    return title, header, rows


def _alpha_cell(rec: dict) -> str:
    low, high = rec["auc_alpha_low"], rec["auc_alpha_high"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"{low:.3g}" if abs(high - low) < 1e-9 else f"{low:.3g}-{high:.3g}"


def _target_cell(rec: dict) -> str:
    n, reached = rec["n"], rec["n_reached"]
    if not math.isfinite(rec["epochs_to_target"]):
        return f"median not reached ({reached}/{n})"
    return f"{rec['epochs_to_target']:g} ({reached}/{n})"


def _curve_title(result: "ComparisonResult") -> str:
    curve, last = result.spec.curve, result.auc_epochs
    title = f"learning curve: {curve}; AUC = mean {curve} over epochs 1-{last}"
    lengths = {int(e) for e in result.per_run["last_epoch"].dropna()}
    if len(lengths) > 1:
        title += (
            f" (common to all runs; runs reach {min(lengths)}-{max(lengths)}, later epochs "
            "not compared)"
        )
    return title


def _curve_table(result: "ComparisonResult") -> tuple[str, list[str], list[list[str]]]:
    header = ["group", "epochs logged", "α over these epochs", "AUC (mean ± std)"]
    compared = result.baseline is not None and result.table["auc_p_value"].notna().any()
    header += ["Δ AUC [95% CI]", "test", "p (Holm)"] if compared else []
    if result.target is not None:
        how = " (auto)" if result.target_auto else ""
        header.append(f"epochs to {result.target:g}{how}: median (reached)")
    rows = []
    for rec in result.table.to_dict("records"):
        row = [rec["group"], rec["auc_last_epochs"] or "-", _alpha_cell(rec),
               _mean_std(rec, "auc")]  # fmt: skip
        if compared and rec["group"] == result.baseline:
            row += ["baseline", "", ""]
        elif compared:
            delta = _num(rec["auc_diff"], True) + " " + _delta_ci(rec, "auc_")
            holm = _p(rec["auc_p_holm"]) + (" *" if rec["auc_significant"] else "")
            row += [delta, _test_name(rec, "auc_"), holm]
        if result.target is not None:
            row.append(_target_cell(rec))
        rows.append(row)
    return _curve_title(result), header, rows


def render(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    """Aligned plain-text columns, or a Markdown table."""
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


def _parts(result: "ComparisonResult") -> list[tuple[str, list[str], list[list[str]]]]:
    if result.dose is not None:
        from ablate.compare.dose import dose_table

        return [dose_table(result)]
    parts = [_endpoint_table(result)]
    if result.baseline is not None:
        parts.append(_baseline_table(result))
    if result.table["auc_mean"].notna().any() or result.target is not None:
        parts.append(_curve_table(result))
    return parts


def format_table(result: "ComparisonResult", markdown: bool = False) -> str:
    """Render the tables: aligned plain text, or Markdown with ``markdown=True``."""
    blocks = []
    for title, header, rows in _parts(result):
        caption = f"**{title}**" if markdown else f"{title}:"
        blocks.append(caption + "\n\n" + render(header, rows, markdown))
    return "\n\n".join(blocks)


def heading(result: "ComparisonResult") -> str:
    """One line: what was compared, how it was grouped and pooled."""
    groups = len(result.table)
    by = ",".join(result.group_by) if result.group_by else "nothing (one group)"
    pooled = ",".join(["seed", *result.pool_over])
    verb = "varies" if len(result.following) == 1 else "vary"
    follow = f" ({', '.join(result.following)} {verb} with them)" if result.following else ""
    seeds = f" ({int(result.table['n'].sum())} seeds)" if result.table["repeated"].any() else ""
    return (
        f"{result.source}: {len(result.per_run)} runs{seeds} in {groups} group(s), grouped by "
        f"{by}{follow}, pooled over {pooled}"
    )


def data_line(result: "ComparisonResult") -> str:
    """One line: what every number was measured on (dataset, split, set sizes, checkpoint)."""
    data = result.data
    parts = []
    for key, label in DATA_KEYS.items():
        values = data.get(key)
        if values:
            shown = values[0] if len(values) == 1 else "varies: " + "/".join(values)
            parts.append(f"{label} {shown}")
    where = "test set" if result.endpoint_source == "test" else "validation set"
    if result.at_epoch is not None:
        model = f"epoch {result.at_epoch} of every run (partial look)"
    else:
        model = _CHECKPOINT_NAMES[result.checkpoint]
    measured = ", ".join(parts) if parts else "data not logged"
    return f"measured on: {measured}; end point on the {where}, {model}"


def format_report(result: "ComparisonResult") -> str:
    """What the command prints: heading, data, tables, notes (significance marks), files."""
    parts = [heading(result), data_line(result), "", format_table(result)]
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


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if hasattr(value, "item"):
        return _plain(value.item())
    return value


def to_json(result: "ComparisonResult") -> str:
    """``--output json``: heading, data, the group table (numbers), the rendered tables, notes."""
    tables = [
        {"title": title, "header": header, "rows": rows} for title, header, rows in _parts(result)
    ]
    groups = [{k: _plain(v) for k, v in rec.items()} for rec in result.table.to_dict("records")]
    payload = {
        "heading": heading(result),
        "measured_on": data_line(result),
        "metric": result.metric_label,
        "checkpoint": result.checkpoint,
        "baseline": result.baseline,
        "groups": groups,
        "tables": tables,
        "notes": result.notes,
        "files": [str(p) for p in result.files],
    }
    if result.dose is not None:
        payload["dose"] = result.dose.to_dict()
    return json.dumps(payload, indent=2, default=str)
