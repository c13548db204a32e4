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
    """Everything `ablate compare` computed; ``table`` is numeric, :meth:`format_table`
    renders it.

    ``runs``: the compared runs (finite end point, not diverged). ``per_run``: one row per
    run; ``units``: one row per seed, the unit every statistic counts; ``table``: one row
    per group (:func:`ablate.compare.summary.summarize`); ``curves``: mean curves with
    pointwise CIs; ``diffs``: each group minus the baseline per epoch (pointwise ``ci_*``,
    simultaneous ``band_*``). ``endpoint_source``: ``test``, ``val`` or ``raw``.
    ``at_epoch``: a partial look's epoch (every end point is the curve there).
    ``auc_epochs``: the AUC's last epoch, reached by every compared run; ``auc_set_by``:
    the run that stopped there while others went on (None when all reach it).
    ``following``: config keys that differ between groups besides the group-by keys;
    ``confounders``: those that are not part of the compared treatment (no star then).
    ``data``: what the numbers were measured on (key -> distinct values).
    """

    spec: MetricSpec
    endpoint_source: str
    source: str
    runs: list[RunRecord]
    per_run: "pd.DataFrame"
    units: "pd.DataFrame"
    table: "pd.DataFrame"
    curves: "pd.DataFrame"
    diffs: "pd.DataFrame"
    notes: list[str]
    baseline: str | None = None
    group_by: tuple[str, ...] = ()
    pool_over: tuple[str, ...] = ()
    following: tuple[str, ...] = ()
    confounders: tuple[str, ...] = ()
    target: float | None = None
    target_auto: bool = False
    at_epoch: int | None = None
    auc_epochs: int | None = None
    auc_set_by: RunRecord | None = None
    repeats: str = "mean"
    data: dict[str, list[str]] = field(default_factory=dict)
    family: int = 0  # comparisons in the one Holm family of this invocation
    dose: Any = None  # ablate.compare.dose.DoseResponse with --x
    files: list[Path] = field(default_factory=list)
    parent_run_id: str | None = None
    logged_artifacts: list[str] = field(default_factory=list)

    @property
    def metric(self) -> str:
        """The key the tested numbers are, e.g. ``test_acc`` or ``acc/val``."""
        return self.spec.label(self.endpoint_source)

    @property
    def metric_label(self) -> str:
        """The metric with where it was read: ``acc/val at epoch 3`` for a partial look."""
        return (
            self.metric if self.at_epoch is None else f"{self.spec.curve} at epoch {self.at_epoch}"
        )

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def checkpoint(self) -> str:
        return self.spec.checkpoint

    def format_table(self, markdown: bool = False) -> str:
        """The tables as printed (aligned columns), or as GitHub-flavoured Markdown."""
        from ablate.compare import render

        return render.format_table(self, markdown)
