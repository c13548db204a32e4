"""The printed tables of `ablate compare`: aligned text or Markdown, and JSON.

Three tables, one concern each: the end point per group (which model it came from, and how
many runs the group lost), the differences from the baseline with their tests, and the
learning curves (the area under the validation curve over the epochs every compared run
has, the alpha those epochs cover, epochs to a target); with ``--x`` the dose-response
table instead. Every cell says what it is: a pointwise, exact or binomial interval, a
paired or unpaired P(better), an undefined interval where there is no spread.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Sequence

from ablate.compare.notes import DATA_KEYS

if TYPE_CHECKING:
    from ablate.compare.result import ComparisonResult

__all__ = ["num", "format_table", "format_report", "heading", "data_line", "to_json"]

UNDEFINED = "no spread: undefined"  # an interval that cannot be computed, never zero-width
_CHECKPOINT_NAMES = {"final": "final weights", "best": "best-val checkpoint"}
Table = tuple[str, list[str], list[list[str]]]


def num(x: Any, signed: bool = False) -> str:
    """4 decimals (1 from 100 up); ``-`` for a missing number; a zero never signed."""
    if x is None or not math.isfinite(x):
        return "-"
    digits = 4 if abs(x) < 100 else 1
    if round(x, digits) == 0:
        return f"{0:.{digits}f}"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _p(p: float) -> str:
    return "-" if not math.isfinite(p) else "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _interval(low: float, high: float, signed: bool = False) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"[{num(low, signed)}, {num(high, signed)}]"


def _mean_std(rec: dict, prefix: str) -> str:
    """``mean ± std`` of ``<prefix>_mean`` (of ``mean`` for an empty prefix)."""
    at = f"{prefix}_" if prefix else ""
    if not math.isfinite(rec[f"{at}mean"]):
        return "-"
    return f"{num(rec[f'{at}mean'])} ± {'n<2' if rec['n'] < 2 else num(rec[f'{at}std'])}"


def _group_ci(rec: dict, prefix: str) -> str:
    """A group's interval with its method, unless it is the t-interval; binomial labelled."""
    at = f"{prefix}_" if prefix else ""
    method = rec[f"{at}ci_method"]
    if rec["n"] < 2:
        return "-" if rec["n"] == 0 else "n<2"
    if method == "no spread":
        return UNDEFINED
    text = _interval(rec[f"{at}ci_low"], rec[f"{at}ci_high"])
    return text if method == "t" else f"{text} {method}"


def _origin(rec: dict, which: str) -> str:
    """Where a group's numbers came from: checkpoint, epoch(s), alpha(s)."""
    text = "final" if which == "final" else "best-val"
    text += f" ep {rec[f'{which}_epochs']}" if rec[f"{which}_epochs"] else ""
    return text + (f" α {rec[f'{which}_alphas']}" if rec[f"{which}_alphas"] else "")


def _count(rec: dict, result: "ComparisonResult") -> str:
    """``n (failed/pruned)``, plus RUNNING runs left out and repeated seeds."""
    text = f"{rec['n']} ({rec['failed']}/{rec['pruned']})"
    text += f" +{rec['running']} running" if rec["running"] else ""
    text += f" incl. {rec['n_running']} running" if rec["n_running"] else ""
    return text + (f", {rec['n_runs']} runs ({result.repeats})" if rec["repeated"] else "")


def _star(rec: dict, prefix: str = "") -> str:
    return _p(rec[f"{prefix}p_holm"]) + (" *" if rec[f"{prefix}significant"] else "")


def _delta(rec: dict, prefix: str = "") -> str:
    if rec[f"{prefix}test"] in ("sign (no spread)", "permutation"):
        return UNDEFINED
    return _interval(rec[f"{prefix}diff_ci_low"], rec[f"{prefix}diff_ci_high"], True)


def _test_name(rec: dict, prefix: str = "") -> str:
    pairs, units = rec[f"{prefix}n_pairs"], rec[f"{prefix}n_units"]
    if not pairs:
        return rec[f"{prefix}test"]
    return rec[f"{prefix}test"] + (
        f" ({pairs} of {units} pairs)" if units > pairs else f" ({pairs} pairs)"
    )


def _endpoint_table(result: "ComparisonResult") -> Table:
    m, tested = result.metric_label, result.checkpoint
    other = "best" if tested == "final" else "final"
    better = "higher" if result.mode == "max" else "lower"
    partial = "partial look: the last epoch every run reached; "
    title = (f"end point: {m} ({partial}{better} is better)" if result.at_epoch is not None
             else f"end point: {m} of the {_CHECKPOINT_NAMES[tested]} ({better} is better)")
    title += f"; groups also differ in {', '.join(result.following)}" if result.following else ""
    header = ["group", "n (failed/pruned)", f"{result.metric} (mean ± std)", "95% CI", "from"]
    if result.at_epoch is None:
        header.append(f"{_CHECKPOINT_NAMES[other]} (mean ± std)")
    rows = []
    for rec in result.table.to_dict("records"):
        row = [rec["group"], _count(rec, result), _mean_std(rec, tested), _group_ci(rec, tested),
               _origin(rec, tested) if rec["n"] else ""]  # fmt: skip
        rows.append(row + ([_mean_std(rec, other)] if result.at_epoch is None else []))
    return title, header, rows


def _p_better(rec: dict) -> str:
    if not math.isfinite(rec["p_improve"]):
        return "-"
    if not math.isfinite(rec["p_improve_low"]):
        return f"{rec['p_improve']:.2f} unpaired"
    low, high = rec["p_improve_low"], rec["p_improve_high"]
    return f"{rec['p_improve']:.2f} [{low:.2f}, {high:.2f}] paired"


def _baseline_table(result: "ComparisonResult") -> Table:
    table = result.table
    boot = bool(table["boot_ci_low"].notna().any())
    title = f"difference from {result.baseline} ({result.metric_label}, {result.checkpoint})"
    header = ["group", "Δ", "Δ 95% CI", "test", "p", "p (Holm)"] + ["Δ 95% CI (BCa)"] * boot
    header += ["P(better) [95% CI]", "MDE (80%)"]
    rows = []
    for rec in table.to_dict("records"):
        if rec["group"] == result.baseline:
            rows.append([rec["group"], "baseline"] + [""] * (len(header) - 2))
            continue
        row = [rec["group"], num(rec["diff"], True), _delta(rec), _test_name(rec),
               _p(rec["p_value"]), _star(rec)]  # fmt: skip
        row += [_interval(rec["boot_ci_low"], rec["boot_ci_high"], True)] * boot
        rows.append(row + [_p_better(rec), num(rec["mde"]) if math.isfinite(rec["mde"]) else "-"])
    return title, header, rows


def _curve_title(result: "ComparisonResult") -> str:
    curve, last = result.spec.curve, result.auc_epochs
    title = f"learning curve: {curve}; AUC = mean {curve} over epochs 1-{last}"
    short = result.auc_set_by
    if short is not None:
        reach = int(result.per_run["last_epoch"].max())
        title += (f", the epochs every compared run has (set by run {short.name}, stopped at "
                  f"epoch {last}; others reach up to {reach}, later epochs not compared)"
                  )  # fmt: skip
    return title


def _curve_table(result: "ComparisonResult") -> Table:
    header = ["group", "epochs logged", "α over these epochs", "AUC (mean ± std)"]
    compared = result.baseline is not None and bool(result.table["auc_p_value"].notna().any())
    header += ["Δ AUC [95% CI]", "test", "p (Holm)"] * compared
    if result.target is not None:
        header.append(f"epochs to {result.target:g}{' (auto)' * result.target_auto}: median "
                      "(reached)")  # fmt: skip
    rows = []
    for rec in result.table.to_dict("records"):
        low, high = rec["auc_alpha_low"], rec["auc_alpha_high"]
        alpha = "-" if not math.isfinite(low) else (
            f"{low:.3g}" + (f"-{high:.3g}" if high - low > 1e-9 else ""))  # fmt: skip
        row = [rec["group"], rec["auc_last_epochs"] or "-", alpha, _mean_std(rec, "auc")]
        if compared and rec["group"] == result.baseline:
            row += ["baseline", "", ""]
        elif compared:
            row += [num(rec["auc_diff"], True) + " " + _delta(rec, "auc_"),
                    _test_name(rec, "auc_"), _star(rec, "auc_")]  # fmt: skip
        if result.target is not None and not rec["n"]:
            row.append("-")
        elif result.target is not None:
            median = rec["epochs_to_target"]
            shown = f"{median:g}" if math.isfinite(median) else "median not reached"
            row.append(f"{shown} ({rec['n_reached']}/{rec['n']})")
        rows.append(row)
    return _curve_title(result), header, rows


def _dose_table(result: "ComparisonResult") -> Table:
    dose = result.dose
    bases = dose.baselines
    against = f"{dose.x} = {bases[0]:g}" if len(bases) == 1 else f"each series' lowest {dose.x}"
    better = "higher" if result.mode == "max" else "lower"
    title = (f"dose-response: {result.metric_label} against {dose.x} ({better} is better); "
             f"Δ vs {against}")  # fmt: skip
    several = dose.levels["series"].nunique() > 1
    header = ["series"] * several + [dose.x, "n (failed/pruned)", f"{result.metric} (mean ± std)",
                                     "95% CI", "Δ [95% CI]", "test", "p (Holm)"]  # fmt: skip
    rows = []
    for rec in dose.levels.to_dict("records"):
        delta = (f"{num(rec['diff'], True)} {_delta(rec)}", _test_name(rec), _star(rec)) if (
            rec["test"]) else ("baseline", "", "")  # fmt: skip
        rows.append([rec["series"]] * several + [
            f"{rec['x']:g}", f"{rec['n']} ({rec['failed']}/{rec['pruned']})",
            _mean_std(rec, ""), _group_ci(rec, ""), *delta])  # fmt: skip
    for t in dose.trends:
        rows.append([t["series"]] * several + [
            "trend", "", f"slope {num(t['slope'], True)} per unit {dose.x}",
            _interval(t["ci_low"], t["ci_high"], True), "", t["test"],
            _p(t["p_holm"]) + (" *" if t["significant"] else "")])  # fmt: skip
    return title, header, rows


def render(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    """Aligned plain-text columns, or a Markdown table."""
    if markdown:
        cells = [[str(c).replace("|", "\\|") for c in row] for row in [header, *rows]]
        lines = ["| " + " | ".join(cells[0]) + " |",
                 "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]  # fmt: skip
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells[1:]])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        rest = [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([str(cells[0]).ljust(widths[0]), *rest]).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def _parts(result: "ComparisonResult") -> list[Table]:
    if result.dose is not None:
        return [_dose_table(result)]
    parts = [_endpoint_table(result)]
    if result.baseline is not None:
        parts.append(_baseline_table(result))
    if result.table["auc_mean"].notna().any() or result.target is not None:
        parts.append(_curve_table(result))
    return parts


def format_table(result: "ComparisonResult", markdown: bool = False) -> str:
    """The tables: aligned plain text, or Markdown with ``markdown=True``."""
    return "\n\n".join(
        (f"**{title}**" if markdown else f"{title}:") + "\n\n" + render(header, rows, markdown)
        for title, header, rows in _parts(result)
    )


def heading(result: "ComparisonResult") -> str:
    """One line: what was compared, how it was grouped and pooled."""
    by = ",".join(result.group_by) or "nothing (one group)"
    verb = "varies" if len(result.following) == 1 else "vary"
    follow = f" ({', '.join(result.following)} {verb} with them)" if result.following else ""
    seeds = f" ({int(result.table['n'].sum())} seeds)" if result.table["repeated"].any() else ""
    pooled = ",".join(["seed", *result.pool_over])
    return (f"{result.source}: {len(result.per_run)} runs{seeds} in {len(result.table)} "
            f"group(s), grouped by {by}{follow}, pooled over {pooled}")  # fmt: skip


def data_line(result: "ComparisonResult") -> str:
    """One line: what every number was measured on (dataset, split, set sizes, checkpoint)."""
    parts = [f"{label} {values[0] if len(values) == 1 else 'varies: ' + '/'.join(values)}"
             for key, label in DATA_KEYS.items() if (values := result.data.get(key))]  # fmt: skip
    where = "test set" if result.endpoint_source == "test" else "validation set"
    model = (f"epoch {result.at_epoch} of every run (partial look)" if result.at_epoch is not None
             else _CHECKPOINT_NAMES[result.checkpoint])  # fmt: skip
    return (
        f"measured on: {', '.join(parts) or 'data not logged'}; end point on the {where}, {model}"
    )


def format_report(result: "ComparisonResult") -> str:
    """What the command prints: heading, data, tables, notes, files."""
    parts = [heading(result), data_line(result), "", format_table(result)]
    parts += [""] + [f"note: {note}" for note in result.notes] if result.notes else []
    parts += [""] + [f"wrote {path}" for path in result.files] if result.files else []
    if result.logged_artifacts:
        parts.append(f"attached {len(result.logged_artifacts)} files to study parent run "
                     f"{result.parent_run_id} under compare/")  # fmt: skip
    return "\n".join(parts)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def to_json(result: "ComparisonResult") -> str:
    """``--output json``: heading, data, the group table (numbers), the tables, notes."""
    payload = {
        "heading": heading(result), "measured_on": data_line(result),
        "metric": result.metric_label, "checkpoint": result.checkpoint,
        "baseline": result.baseline,
        "groups": [{k: _plain(v) for k, v in r.items()} for r in result.table.to_dict("records")],
        "tables": [{"title": t, "header": h, "rows": r} for t, h, r in _parts(result)],
        "notes": result.notes, "files": [str(p) for p in result.files],
    }  # fmt: skip
    if result.dose is not None:
        payload["dose"] = result.dose.to_dict()
    return json.dumps(payload, indent=2, default=str)
