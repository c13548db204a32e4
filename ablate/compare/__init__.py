"""`ablate compare`: learning curves and significance tables across groups of MLflow runs.

Modules by concern: :mod:`.select` (MLflow run selection), :mod:`.grouping` (which runs may
be pooled), :mod:`.endpoints` (the number per run and the model it came from),
:mod:`.units` (one unit per seed; runs lost per group), :mod:`.stats` (tests on plain
numbers), :mod:`.intervals` (binomial, P(better), bootstrap, simultaneous bands),
:mod:`.power`, :mod:`.curves` (per-epoch aggregation and curve metrics), :mod:`.summary`
(the per-group table, one Holm family), :mod:`.dose` (``--x``: end point against a number),
:mod:`.notes`, :mod:`.render` and :mod:`.fmt` (text), :mod:`.files` (CSV, Markdown,
figures), :mod:`.result` (:class:`ComparisonResult`), :mod:`.core` (the comparison end to
end) and :mod:`.cli` (the subcommand).

Everything heavy (mlflow, pandas, scipy, matplotlib) is imported inside functions, so
importing this package stays light.
"""

from __future__ import annotations

from ablate.compare.cli import add_arguments, command
from ablate.compare.core import compare_runs
from ablate.compare.curves import (
    CURVE_METRICS,
    aggregate_curves,
    auc,
    default_target,
    diff_curves,
    epochs_to_target,
)
from ablate.compare.dose import trend
from ablate.compare.endpoints import MetricSpec, infer_mode, parse_metric, per_run_frame
from ablate.compare.grouping import RUN_LOCAL_KEYS, assign_groups, check_pooling
from ablate.compare.intervals import (
    bca_diff_ci,
    binomial_interval,
    paired_prob_improvement,
    prob_improvement,
    sup_t_critical,
)
from ablate.compare.render import format_report, format_table, to_json
from ablate.compare.result import ComparisonResult
from ablate.compare.select import (
    DEFAULT_EXPERIMENT,
    RunRecord,
    Selection,
    resolve_tracking_uri,
    select_runs,
)
from ablate.compare.stats import (
    CONFIDENCE,
    Comparison,
    compare_groups,
    compare_to_baseline,
    holm,
    holm_family,
    min_detectable_diff,
    paired_test,
    seeds_needed,
    sign_test,
    t_interval,
    welch_test,
)
from ablate.compare.summary import DEFAULT_BASELINE, summarize
from ablate.compare.units import collapse_repeats, lost_counts
from ablate.tracking import DEFAULT_TRACKING_URI

__all__ = [
    "CONFIDENCE",
    "CURVE_METRICS",
    "DEFAULT_BASELINE",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI",
    "RUN_LOCAL_KEYS",
    "Comparison",
    "ComparisonResult",
    "MetricSpec",
    "RunRecord",
    "Selection",
    "add_arguments",
    "aggregate_curves",
    "assign_groups",
    "auc",
    "bca_diff_ci",
    "binomial_interval",
    "collapse_repeats",
    "holm_family",
    "lost_counts",
    "paired_prob_improvement",
    "sign_test",
    "sup_t_critical",
    "to_json",
    "trend",
    "check_pooling",
    "command",
    "compare_groups",
    "compare_runs",
    "compare_to_baseline",
    "default_target",
    "diff_curves",
    "epochs_to_target",
    "format_report",
    "format_table",
    "holm",
    "infer_mode",
    "min_detectable_diff",
    "paired_test",
    "parse_metric",
    "per_run_frame",
    "prob_improvement",
    "resolve_tracking_uri",
    "seeds_needed",
    "select_runs",
    "summarize",
    "t_interval",
    "welch_test",
]
