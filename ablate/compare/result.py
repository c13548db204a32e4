"""What `ablate compare` computed: :class:`ComparisonResult` (rendered by :mod:`.render`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.compare.endpoints import MetricSpec
from ablate.compare.select import RunRecord

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ComparisonResult"]


@dataclass
class ComparisonResult:
    """Everything `ablate compare` computed; ``table`` is numeric, ``format_table`` renders it.

    ``per_run``: one row per run (see :func:`ablate.compare.endpoints.per_run_frame`).
    ``units``: one row per seed, the unit every statistic counts (repeated seeds collapsed
    by ``repeats``). ``table``: one row per group (see :func:`ablate.compare.summary.summarize`).
    ``curves``: long format (metric, group, step, n, mean, std, ci_low, ci_high; pointwise).
    ``diffs``: each group minus the baseline per epoch (pointwise ``ci_*`` and simultaneous
    ``band_*``). ``endpoint_source``: where the tested numbers came from, ``test``, ``val``
    or ``raw``. ``at_epoch``: set for a partial look (RUNNING or pruned runs included): every
    end point is the curve at this epoch, the last one every run reached. ``auc_epochs``:
    the AUC's last epoch, common to every run. ``following``: config keys that differ between
    groups along with the group-by keys. ``data``: what the numbers were measured on
    (dataset, split, set sizes: key -> distinct values). ``dose``: the ``--x`` table.
    """

    spec: MetricSpec
    endpoint_source: str
    group_by: tuple[str, ...]
    pool_over: tuple[str, ...]
    following: tuple[str, ...]
    baseline: str | None
    target: float | None
    target_auto: bool
    source: str
    filter_string: str | None
    runs: list[RunRecord]
    per_run: "pd.DataFrame"
    table: "pd.DataFrame"
    curves: "pd.DataFrame"
    diffs: "pd.DataFrame"
    notes: list[str]
    units: "pd.DataFrame | None" = None
    at_epoch: int | None = None
    auc_epochs: int | None = None
    repeats: str = "mean"
    include_running: bool = False
    data: dict[str, list[str]] = field(default_factory=dict)
    family: int = 0  # comparisons in the one Holm family of this invocation
    dose: Any = None  # ablate.compare.dose.DoseResponse with --x
    formats: tuple[str, ...] = ("png",)
    files: list[Path] = field(default_factory=list)
    parent_run_id: str | None = None
    logged_artifacts: list[str] = field(default_factory=list)

    @property
    def metric(self) -> str:
        """The metric key the tested numbers are, e.g. ``test_acc`` or ``val_acc``."""
        return self.spec.label(self.endpoint_source)

    @property
    def metric_label(self) -> str:
        """The metric with where it was read: ``val_acc at epoch 3`` for a partial look."""
        if self.at_epoch is None:
            return self.metric
        return f"{self.spec.curve} at epoch {self.at_epoch}"

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def checkpoint(self) -> str:
        return self.spec.checkpoint

    def format_table(self) -> str:
        """The summary tables with aligned columns, as printed by the command."""
        from ablate.compare import render

        return render.format_table(self)

    def to_markdown(self) -> str:
        """The summary tables as GitHub-flavoured Markdown."""
        from ablate.compare import render

        return render.format_table(self, markdown=True)
