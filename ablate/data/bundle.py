"""The in-memory form of a data set: :class:`Split` tensors in a :class:`DataBundle`, and the
fixed held-out splits (:func:`holdout_rows`) of the image and text loaders.

Kept apart from :mod:`ablate.data` so that the loaders (:mod:`ablate.data.images`,
:mod:`ablate.data.text`), which :func:`ablate.data.load_data` imports, do not import it back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

__all__ = ["Split", "DataBundle", "SPLIT_SEED", "holdout_rows"]

# Seed of every held-out split (images and text). Deliberately not cfg.seed: every run of a
# comparison sees exactly the same train / val / test examples.
SPLIT_SEED = 1234


def holdout_rows(
    labels: np.ndarray, fraction: float, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(kept, held out, stratified): sorted row indices, ``ceil(fraction * N)`` rows held out
    (0: none) with ``seed``, stratified by label whenever every class has two rows and room
    on both sides. ValueError when no row would be left on one side."""
    from sklearn.model_selection import train_test_split

    n = len(labels)
    rows = np.arange(n)
    n_out = math.ceil(fraction * n) if fraction > 0 else 0
    if n_out == 0:
        return rows, rows[:0], True
    if n_out >= n:
        raise ValueError(f"holding out {fraction:.0%} of {n} examples leaves none for training")
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    stratified = bool(counts.min() >= 2 and min(n_out, n - n_out) >= len(counts))
    kept, held = train_test_split(rows, test_size=n_out, random_state=seed,
                                  stratify=labels if stratified else None)
    return np.sort(kept), np.sort(held), stratified


@dataclass
class Split:
    """One split held entirely in memory: ``x`` (N, ...) and integer labels ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


def _identity_train(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x, y


def _identity_eval(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class DataBundle:
    """A loaded data set with everything the model and the loop need to consume it.

    ``train_transform(x, y)`` maps a raw training batch to model input and a target, which
    is either int64 labels (B,) or soft labels (B, num_classes) after MixUp/CutMix.
    ``eval_transform(x)`` maps a raw batch to model input deterministically.
    """

    name: str
    task: str  # "image" | "text"
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: list[str]
    # images
    in_chans: int | None = None
    img_size: int | None = None
    # text
    vocab: list[str] | None = None  # index -> token; vocab[pad_index] is the padding token
    embedding_matrix: torch.Tensor | None = None  # (V, D) float32 initial word vectors
    pad_index: int = 0
    # per-batch transforms, applied on the training device
    train_transform: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] = (
        field(default=_identity_train)
    )
    eval_transform: Callable[[torch.Tensor], torch.Tensor] = field(default=_identity_eval)
    info: dict = field(default_factory=dict)  # free-form facts logged as params (source, sizes)


@dataclass
class RawImages:
    """A data set as stored, before hold-outs, resizing and channel conversion."""

    train: Split
    val: Split | None  # None -> hold out from train
    test: Split | None  # None -> hold out from train (before val)
    class_names: list[str]
    source: str
