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
from typing import Any, Literal, Mapping

import torch

from ablate.exceptions import CheckpointError

__all__ = [
    "Checkpointer",
    "atomic_torch_save",
    "read_checkpoint",
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


def atomic_torch_save(payload: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save`` that never leaves a half-written ``path`` behind.

    Args:
        payload: what to save (plain types and tensors: it is read with weights_only=True).
        path: destination; its folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(dict(payload), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a power cut
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def read_checkpoint(
    path: str | Path, *, unreadable: Literal["raise", "none"] = "raise"
) -> Any:
    """Load a checkpoint file on the CPU with ``weights_only=True`` (no pickled code runs).

    Args:
        path: the file (``~`` is expanded).
        unreadable: what a missing, truncated or foreign file gives: ``raise`` a one-line
            :class:`~ablate.exceptions.CheckpointError` naming the file, or ``none`` (resume,
            which then falls back to an older file).

    Returns:
        Whatever the file holds (ours: a dict with ``model``; official: a state dict).
    """
    if unreadable not in ("raise", "none"):
        raise ValueError(f"unreadable: {unreadable!r} is not valid; choose raise or none")
    p = Path(path).expanduser()
    problem = (
        None if p.is_file()
        else f"checkpoint file {p} does not exist" if not p.exists()
        else f"checkpoint path {p} is not a file"
    )
    if problem is None:
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - truncated files raise EOFError, RuntimeError, ...
            first = (str(err).strip().splitlines() or [""])[0][:200]
            problem = (
                f"cannot read checkpoint {p} with torch.load(weights_only=True): "
                f"{type(err).__name__}: {first}"
            )
    if unreadable == "none":
        return None
    raise CheckpointError(problem)


def read_state(path: str | Path) -> dict[str, Any] | None:
    """A training state (a checkpoint dict with ``model``), or None when unreadable."""
    state = read_checkpoint(path, unreadable="none")
    return state if isinstance(state, dict) and "model" in state else None
