"""Raw texts before encoding: :class:`RawText` / :class:`RawCorpus`, the fixed hold-out
split, and the pandas reader every delimited-file reader goes through.

A data set without its own validation (or test) split has one held out from the training
data, stratified by label, with the fixed seed :data:`SPLIT_SEED` -- never ``cfg.seed`` --
so every run of a comparison sees exactly the same examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablate.exceptions import DataError

__all__ = ["RawText", "RawCorpus", "SPLIT_SEED", "split_holdout", "read_delimited"]

SPLIT_SEED = 1234  # fixed: the held-out examples must not change with cfg.seed


@dataclass
class RawText:
    """One split before tokenization: texts and int labels indexing ``class_names``."""

    texts: list[str]
    labels: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, rows: np.ndarray) -> "RawText":
        return RawText([self.texts[i] for i in rows], self.labels[rows])


@dataclass
class RawCorpus:
    """A data set's splits as read from disk (val / test are None when it has none)."""

    train: RawText
    val: RawText | None
    test: RawText | None
    class_names: list[str]
    source: str


def read_delimited(path: Path, **kwargs):
    """Every cell of a CSV / TSV file as a string (a pandas DataFrame); DataError if unreadable.

    Args:
        path: the file.
        **kwargs: passed on to ``pandas.read_csv`` (``sep``, ``header``, ``quoting``).
    """
    import pandas as pd

    try:
        # utf-8-sig: files saved by spreadsheet programs start with a byte-order mark.
        return pd.read_csv(
            path, dtype=str, keep_default_na=False, na_filter=False, engine="c",
            encoding="utf-8-sig", **kwargs,
        )
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        detail = " ".join(str(err).split())[:200]
        raise DataError(f"{path}: cannot be parsed ({detail})") from None


def split_holdout(
    data: RawText, fraction: float, seed: int = SPLIT_SEED
) -> tuple[RawText, RawText]:
    """(kept, held out): ``fraction`` of the rows, stratified by label whenever possible.

    Args:
        data: the split to cut.
        fraction: share of rows to hold out (0 gives an empty held-out split).
        seed: shuffling seed; the default is the fixed :data:`SPLIT_SEED`.
    """
    n = len(data)
    n_out = int(np.ceil(fraction * n)) if fraction > 0 else 0
    if n_out == 0:
        return data, data.take(np.arange(0))
    if n_out >= n:
        raise DataError(f"holding out {fraction:.0%} of {n} examples leaves none for training")
    from sklearn.model_selection import train_test_split

    rows = np.arange(n)
    counts = np.bincount(data.labels)
    counts = counts[counts > 0]
    # Stratification needs two examples per class and room for every class on both sides.
    stratified = counts.min() >= 2 and min(n_out, n - n_out) >= len(counts)
    kept, held = train_test_split(
        rows, test_size=n_out, random_state=seed, stratify=data.labels if stratified else None
    )
    return data.take(np.sort(kept)), data.take(np.sort(held))
