"""The one place a training run's checkpoints are written and read back.

A run keeps two files in ``<checkpoint_dir>/<run_id>/``:

- ``last.pt``: everything needed to continue exactly where the run stopped (model,
  optimizer, scheduler, EMA, RNG streams, augmentation state, the best-so-far record and
  the metric rows of every finished epoch);
- ``best.pt``: the weights of the best-validation epoch with the variant parameters they
  were validated at, loadable by ``--init-from`` and ``model_from_checkpoint``.

Writes are atomic: the payload goes to a temporary file in the same folder, is flushed
and fsynced, and only then renamed over the old file, so a kill during a write leaves the
previous file intact. The previous ``last.pt`` is kept as ``last.prev.pt``: when
``last.pt`` cannot be read (a disk that lost the tail of a file, a copy cut short), resume
falls back to it instead of starting over.

Both files use the checkpoint format of :mod:`ablate.models.checkpoint` (``format``,
``name``, ``arch``, ``model`` plus entries of their own). Every checkpoint file ablate
reads (ours, official ``.pth`` weights, ``--init-from`` sources) goes through
:func:`read_checkpoint` (CPU, ``weights_only=True``), which either raises a one-line
:class:`~ablate.exceptions.CheckpointError` or, for resume, answers None.

File names: ``last.pt``, ``last.prev.pt``, ``best.pt`` and ``model.pt`` (the exported final
model) in the run's folder, logged to MLflow under the run's ``checkpoints/`` artifacts.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping

from ablate.exceptions import CheckpointError
from ablate.models.checkpoint import atomic_torch_save
from ablate.models.pretrained import read_checkpoint

__all__ = [
    "Checkpointer",
    "read_state",
    "LAST",
    "BEST",
    "PREVIOUS",
    "EXPORTED",
    "ARTIFACT_DIR",
]

LAST = "last.pt"  # resumable state of the newest finished epoch
BEST = "best.pt"  # weights of the best-validation epoch
PREVIOUS = "last.prev.pt"  # the last.pt before the newest one (fallback when that is cut short)
EXPORTED = "model.pt"  # final weights, LoRA adapters merged (ablate.finetune.export_model)
ARTIFACT_DIR = "checkpoints"  # MLflow artifact folder holding the files above


class Checkpointer:
    """Last / best checkpoints of one run.

    Args:
        folder: ``<checkpoint_dir>/<run_id>``.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @property
    def last_path(self) -> Path:
        return self.folder / LAST

    @property
    def best_path(self) -> Path:
        return self.folder / BEST

    def save_last(self, payload: Mapping[str, Any]) -> Path:
        """Write the resumable state; the file it replaces becomes ``last.prev.pt``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.last_path.is_file():
            os.replace(self.last_path, self.folder / PREVIOUS)
        return atomic_torch_save(payload, self.last_path)

    def save_best(self, payload: Mapping[str, Any]) -> Path:
        return atomic_torch_save(payload, self.best_path)

    def load_last(self) -> dict[str, Any] | None:
        """The newest readable resumable state, or None when there is none.

        A ``last.pt`` that cannot be read is reported and skipped for ``last.prev.pt``.
        """
        for path in (self.last_path, self.folder / PREVIOUS):
            if not path.is_file():
                continue
            state = read_state(path)
            if state is not None:
                return state
            warnings.warn(
                f"checkpoint {path} is unreadable (cut short?); trying the previous one",
                stacklevel=2,
            )
        return None

    def load_best(self) -> dict[str, Any]:
        state = read_state(self.best_path)
        if state is None:
            raise CheckpointError(f"best checkpoint {self.best_path} is missing or unreadable")
        return state


def read_state(path: str | Path) -> dict[str, Any] | None:
    """A training state (a checkpoint dict with ``model``), or None when unreadable."""
    state = read_checkpoint(path, unreadable="none")
    return state if isinstance(state, dict) and "model" in state else None
