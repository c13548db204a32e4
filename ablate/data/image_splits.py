"""Held-out splits of image data sets, drawn with the fixed :data:`SPLIT_SEED`.

See :mod:`ablate.data.images` for which split comes from where (``val_split`` "train" or
"test_half", data sets with and without an official test split).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ablate.data.bundle import Split
from ablate.data.image_readers import VAL_DIR_NAMES, RawImages
from ablate.exceptions import ConfigError, DataError

if TYPE_CHECKING:
    from ablate.config import RunConfig

__all__ = ["SPLIT_SEED", "Splits", "check_val_split", "hold_out", "test_halves"]

# Seed of every held-out split. Deliberately independent of cfg.seed (see ablate.data.images).
SPLIT_SEED = 1234

# (train, val, test, stratified, (val_source, test_source))
Splits = tuple[Split, Split, Split, bool, tuple[str, str]]


def check_val_split(cfg: "RunConfig") -> str:
    """The val_split to use ("auto" unresolved reads as "train"); errors before any decoding."""
    from ablate.config import VAL_SPLIT_CHOICES

    choice = cfg.val_split
    if choice not in VAL_SPLIT_CHOICES:
        raise ConfigError(
            f"val_split: {choice!r} is not valid; choose one of {', '.join(VAL_SPLIT_CHOICES)}"
        )
    if choice != "test_half":
        return "train"
    name = cfg.dataset
    if name == "digits":
        raise ConfigError(
            "val_split: 'test_half' needs an official test split and digits has none (its "
            "test set is held out of the same 1,797 images); the valid choice is 'train'"
        )
    if name.startswith("folder:"):
        root = Path(name[len("folder:") :]).expanduser()
        if not (root / "test").is_dir():
            raise ConfigError(
                f"val_split: 'test_half' needs an official test split and {name} has no "
                "test/ folder; the valid choice is 'train' (or add PATH/train and PATH/test)"
            )
        if any((root / d).is_dir() for d in VAL_DIR_NAMES):
            raise ConfigError(
                f"val_split: 'test_half' would leave the validation folder of {name} unused; "
                "the valid choice is 'train' (it uses that folder for validation)"
            )
    return "test_half"


def hold_out(raw: RawImages, cfg: "RunConfig") -> Splits:
    """Fill in missing test / val splits from train with fixed-seed stratified hold-outs.

    Returns (train, val, test, stratified, (val_source, test_source)).
    """
    train, stratified = raw.train, True
    test = raw.test
    folder = cfg.dataset.startswith("folder:")
    test_source = "folder test/" if folder else "official test split"
    if test is None:
        if not 0.0 < cfg.test_fraction < 1.0:
            raise ConfigError(
                f"test_fraction: must be in (0, 1) for {cfg.dataset} (it has no test split), "
                f"got {cfg.test_fraction}"
            )
        train, test, ok = _split(train, cfg.test_fraction, cfg.dataset, "test")
        stratified &= ok
        test_source = f"holdout of all images ({cfg.test_fraction:g}, seed {SPLIT_SEED})"
    val = raw.val
    val_source = "folder validation split"
    if val is None:
        train, val, ok = _split(train, cfg.val_fraction, cfg.dataset, "validation")
        stratified &= ok
        val_source = f"train holdout ({cfg.val_fraction:g}, seed {SPLIT_SEED})"
    return train, val, test, stratified, (val_source, test_source)


def test_halves(raw: RawImages, name: str) -> Splits:
    """val_split="test_half": the whole training split; the test split halved, stratified.

    Half A (validation) and half B (test) depend only on :data:`SPLIT_SEED`, never on the
    run's seed, so every run of a comparison validates and tests on the same images.
    """
    if raw.test is None or raw.val is not None:  # check_val_split rules these out first
        raise ConfigError(f"val_split: 'test_half' is not available for {name}")
    test, val, stratified = _split(raw.test, 0.5, name, "validation", pool="test")
    sources = (
        f"official test split, stratified half A (seed {SPLIT_SEED})",
        f"official test split, stratified half B (seed {SPLIT_SEED})",
    )
    return raw.train, val, test, stratified, sources


def _split(
    data: Split, fraction: float, name: str, what: str, *, pool: str = "training"
) -> tuple[Split, Split, bool]:
    """Hold out ``fraction`` of ``data``, stratified by label, with :data:`SPLIT_SEED`.

    Falls back (with a warning) to an unstratified split when some class is too small to
    stratify. Returns (kept, held_out, stratified); indices keep the original order.
    """
    from sklearn.model_selection import train_test_split

    n = len(data)
    if fraction <= 0.0:
        empty = torch.zeros(0, dtype=torch.int64)
        return data, Split(data.x[empty], data.y[empty]), True
    index = torch.arange(n).numpy()
    stratified = True
    try:
        keep, held = train_test_split(
            index, test_size=fraction, stratify=data.y.numpy(), random_state=SPLIT_SEED
        )
    except ValueError:
        stratified = False
        try:
            keep, held = train_test_split(index, test_size=fraction, random_state=SPLIT_SEED)
        except ValueError:
            raise DataError(
                f"{name}: {n} {pool} images are too few to hold out {fraction:g} for {what}"
            ) from None
        warnings.warn(
            f"{name}: some class has too few images to stratify the {what} split; "
            "using a random (unstratified) split",
            stacklevel=3,
        )
    keep_t = torch.from_numpy(keep).sort().values
    held_t = torch.from_numpy(held).sort().values
    return Split(data.x[keep_t], data.y[keep_t]), Split(data.x[held_t], data.y[held_t]), stratified
