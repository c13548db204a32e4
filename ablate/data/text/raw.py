"""Texts before encoding: :class:`RawText` / :class:`RawCorpus`, the fixed hold-out split,
and the readers of local files (``csv:PATH``, ``tsv:PATH``, ``jsonl:PATH``).

A data set without its own validation (or test) split has one held out from the training
data, stratified by label, with the fixed seed :data:`SPLIT_SEED` -- never ``cfg.seed`` --
so every run of a comparison sees exactly the same examples.

A local PATH is one file (every split is held out from it later) or a directory of split
files (``train.EXT`` and optionally ``val|valid|validation|dev.EXT`` and ``test.EXT``).
Labels may be strings or integers; the sorted class names give the class ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from ablate.data.bundle import SPLIT_SEED, holdout_rows
from ablate.exceptions import ConfigError, DataError

__all__ = [
    "RawText", "RawCorpus", "SPLIT_SEED", "split_holdout", "read_delimited", "read_local",
    "LOCAL_FORMATS",
]


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
    """Every cell of a CSV / TSV file as a string (a pandas DataFrame; ``kwargs`` go to
    ``pandas.read_csv``); DataError if unreadable."""
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
    """(kept, held out) by :func:`~ablate.data.bundle.holdout_rows`."""
    try:
        kept, held, _ = holdout_rows(data.labels, fraction, seed)
    except ValueError as err:
        raise DataError(str(err)) from None
    return data.take(kept), data.take(held)


# -- local files: csv:PATH, tsv:PATH, jsonl:PATH ----------------------------------------

LOCAL_FORMATS = {"csv": (".csv",), "tsv": (".tsv",), "jsonl": (".jsonl", ".json")}
_SPLIT_NAMES = {
    "train": ("train",), "val": ("val", "valid", "validation", "dev"), "test": ("test",),
}


def _read_table(
    fmt: str, path: Path, text_col: str, label_col: str
) -> tuple[list[str], list[str]]:
    """Texts and labels (as strings) of one csv / tsv / jsonl file."""
    import pandas as pd

    if fmt == "jsonl":
        try:
            # dtype=False keeps values as JSON typed them (no date or number guessing).
            frame = pd.read_json(path, lines=True, dtype=False, encoding="utf-8-sig")
        except ValueError as err:
            detail = " ".join(str(err).split())[:200]
            raise DataError(f"{path}: not JSON lines ({detail})") from None
    else:
        frame = read_delimited(path, sep="," if fmt == "csv" else "\t")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    for col, flag in ((text_col, "--text-col"), (label_col, "--label-col")):
        if col not in columns:
            raise DataError(f"{path}: no column {col!r} (set {flag}); columns: "
                            f"{', '.join(columns) or 'none'}")
    labels = frame[label_col]
    missing = labels.isna() | (labels.astype(str).str.strip() == "")
    if missing.any():
        row = int(np.flatnonzero(missing.to_numpy())[0])
        raise DataError(f"{path}: row {row + 1} has no value in label column {label_col!r}")
    texts = frame[text_col].where(frame[text_col].notna(), "").astype(str).tolist()
    return texts, [_label_str(v) for v in labels.tolist()]


def _label_str(value) -> str:
    # JSON numbers arrive as int or float; 1.0 and 1 must name the same class.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _sorted_classes(names: set[str]) -> list[str]:
    """Integer-like labels in numeric order, anything else in string order."""
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _find_split_file(directory: Path, split: str, exts: tuple[str, ...]) -> Path | None:
    for stem in _SPLIT_NAMES[split]:
        for ext in exts:
            candidate = directory / f"{stem}{ext}"
            if candidate.is_file():
                return candidate
    return None


def read_local(spec: str, text_col: str = "text", label_col: str = "label") -> RawCorpus:
    """A ``csv:PATH`` / ``tsv:PATH`` / ``jsonl:PATH`` data set (see the module docstring);
    classes sorted numerically when all labels are integers."""
    fmt, _, raw_path = spec.partition(":")
    if fmt not in LOCAL_FORMATS or not raw_path:
        raise ConfigError(f"dataset {spec!r}: use csv:PATH, tsv:PATH or jsonl:PATH")
    path = Path(raw_path).expanduser()
    exts = LOCAL_FORMATS[fmt]
    if path.is_dir():
        files = {s: _find_split_file(path, s, exts) for s in ("train", "val", "test")}
        if files["train"] is None:
            raise DataError(f"{path}: no train{exts[0]} file (a {fmt} data set directory holds "
                            f"train{exts[0]} and optionally val{exts[0]} / dev{exts[0]} and "
                            f"test{exts[0]})")
    elif path.is_file():
        files = {"train": path, "val": None, "test": None}
    else:
        raise DataError(f"{path} does not exist; give a {fmt} file or a directory with "
                        f"train{exts[0]} (and optionally val{exts[0]}, test{exts[0]})")
    tables = {
        s: _read_table(fmt, f, text_col, label_col) for s, f in files.items() if f is not None
    }
    all_labels = chain.from_iterable(labels for _, labels in tables.values())
    class_names = _sorted_classes(set(all_labels))
    index = {name: i for i, name in enumerate(class_names)}

    def to_raw(split: str) -> RawText | None:
        if split not in tables:
            return None
        texts, labels = tables[split]
        return RawText(texts, np.asarray([index[v] for v in labels], dtype=np.int64))

    return RawCorpus(to_raw("train"), to_raw("val"), to_raw("test"), class_names, f"{fmt}:{path}")
