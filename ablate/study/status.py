"""``ablate study FILE --status``: where a study stands, read from its storage.

For a study running anywhere (a job array, other machines): trials per state, each running
trial's epoch and worker, and the usual summary table. Nothing is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ablate.exceptions import AblateError
from ablate.study.storage import display_url

if TYPE_CHECKING:
    from ablate.study.spec import StudyPlan

__all__ = ["status_text"]


def status_text(plan: StudyPlan, storage_url: str) -> str:
    """``--status``: trials per state, what runs where (epoch), and the summary table."""
    from collections import Counter

    from optuna.trial import TrialState

    from ablate.study import state as st
    from ablate.study.report import epoch_of, format_table, summary_rows
    from ablate.study.storage import open_storage

    storage = open_storage(storage_url)
    try:
        try:
            study_id = storage.get_study_id_from_name(plan.name)
        except KeyError:
            raise AblateError(
                f"study {plan.name!r} does not exist in {display_url(storage_url)} yet"
            ) from None
        trials = storage.get_all_trials(study_id, deepcopy=False)
    finally:
        storage.engine.dispose()
    counts = Counter(t.state.name for t in trials)
    done = st.finished_count(plan, trials)
    lines = [
        f"study {plan.name!r} in {display_url(storage_url)}: {done}/{plan.total_trials} finished"
        + ("" if not counts else " (" + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
           + ")")
        + ("; complete" if st.is_complete(plan, trials) else "")
    ]
    for t in (t for t in trials if t.state == TrialState.RUNNING):
        worker = t.system_attrs.get(st.WORKER_ATTR) or {}
        where = f"{worker.get('host', '?')} (pid {worker.get('pid', '?')})"
        lines.append(f"  #{t.number} running: {epoch_of(plan, t)} on {where}")
    lines.append(format_table(summary_rows(plan, trials), plan.metric))
    return "\n".join(lines)
