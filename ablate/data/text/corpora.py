"""The named text corpora: a reader per on-disk format, where each is downloaded from and
its published checksum, and :func:`ensure_corpus`, which fetches only with ``download=True``.

Every reader takes the corpus directory (``data_dir/<name>``) and returns a
:class:`~ablate.data.text.raw.RawCorpus` with a training and a test split; none ships a
labelled validation split, so one is held out later.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ablate.data.download import download as fetch
from ablate.data.download import extract_archive, is_extracted, prepare_lock, verify_file
from ablate.data.text.raw import RawCorpus, RawText, read_delimited
from ablate.data.text.tokenizer import TEXT_SEPARATOR, join_texts
from ablate.exceptions import DataError

__all__ = [
    "RemoteFile", "CorpusSpec", "CORPORA", "ensure_corpus", "read_ag_news", "read_dbpedia",
    "read_yelp_polarity", "read_trec", "read_sst2", "read_imdb",
]

AG_NEWS_CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
DBPEDIA_CLASSES = [
    "Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
    "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal", "Plant",
    "Album", "Film", "WrittenWork",
]
TREC_CLASSES = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
SENTIMENT_CLASSES = ["negative", "positive"]


def _train_test(
    name: str, class_names: Sequence[str], read_split: Callable[[Path], RawText], train: Path,
    test: Path,
) -> RawCorpus:
    """The shape every named corpus has: a training and a test split read the same way."""
    return RawCorpus(read_split(train), None, read_split(test), list(class_names), name)


# -- Zhang et al. (2015) CSVs: AG News, DBpedia, Yelp polarity -----------------------------

_HTML_NUM = re.compile(r" ?#(\d{2,5});")
_HTML_NAMED = re.compile(r"\b(quot|amp|lt|gt|apos);")
_NAMED = {"quot": '"', "amp": "&", "lt": "<", "gt": ">", "apos": "'"}


def _html_char(match: re.Match) -> str:
    code = int(match.group(1))
    return chr(code) if code < 0x110000 else " "


def _clean_zhang(texts: list[str]) -> list[str]:
    """Undo the escaping of the AG News / DBpedia / Yelp CSVs.

    Newlines are written as a backslash (``\\n`` in Yelp) and HTML entities lost their
    ``&`` (``Paul #39;s`` -> ``Paul's``, ``quot;`` -> ``"``). Runs once over all texts
    joined by NUL, which these CSVs never contain.
    """
    joined = join_texts(texts).replace("\\n", " ").replace("\\", " ")
    joined = _HTML_NUM.sub(_html_char, joined)
    joined = _HTML_NAMED.sub(lambda m: _NAMED[m.group(1)], joined)
    return joined.split(TEXT_SEPARATOR) if texts else []


def _zhang_labels(path: Path, column, n_classes: int) -> np.ndarray:
    """Zhang et al. (2015) CSVs number classes from 1; return 0-based int64 labels."""
    try:
        labels = column.astype(np.int64).to_numpy() - 1
    except ValueError:
        raise DataError(
            f"{path}: the first column must hold class numbers 1..{n_classes}"
        ) from None
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{path}: class numbers must lie in 1..{n_classes}")
    return labels


def _read_zhang_split(path: Path, n_classes: int) -> RawText:
    frame = read_delimited(path, header=None)
    if frame.shape[1] < 2:
        raise DataError(f"{path}: expected 'class,text' or 'class,title,text' rows")
    text = frame[1]
    for col in frame.columns[2:]:  # title + description / content
        text = text + " " + frame[col]
    labels = _zhang_labels(path, frame[0], n_classes)
    return RawText(_clean_zhang(text.tolist()), labels)


def _read_zhang(name: str, base: Path, class_names: Sequence[str]) -> RawCorpus:
    read = partial(_read_zhang_split, n_classes=len(class_names))
    return _train_test(name, class_names, read, base / "train.csv", base / "test.csv")


def read_ag_news(root: Path) -> RawCorpus:
    """AG News: ``train.csv`` / ``test.csv`` rows of ``class(1-4),title,description``."""
    return _read_zhang("ag_news", root, AG_NEWS_CLASSES)


def read_dbpedia(root: Path) -> RawCorpus:
    """DBpedia-14: ``dbpedia_csv/{train,test}.csv`` rows of ``class(1-14),title,content``."""
    base = root / "dbpedia_csv"
    names = list(DBPEDIA_CLASSES)
    classes_file = base / "classes.txt"
    if classes_file.is_file():
        lines = classes_file.read_text(encoding="utf-8").splitlines()
        listed = [ln.strip() for ln in lines if ln.strip()]
        if len(listed) == len(names):
            names = listed
    return _read_zhang("dbpedia", base, names)


def read_yelp_polarity(root: Path) -> RawCorpus:
    """Yelp polarity: ``yelp_review_polarity_csv/{train,test}.csv`` rows of ``class(1-2),text``."""
    return _read_zhang("yelp_polarity", root / "yelp_review_polarity_csv", SENTIMENT_CLASSES)


# -- TREC, SST-2, IMDb -----------------------------------------------------------------------


def _read_trec_file(path: Path) -> RawText:
    texts, labels = [], []
    index = {name: i for i, name in enumerate(TREC_CLASSES)}
    # The files are ASCII except one stray 0xF0 byte ("sister\xf0city"); it becomes a space.
    raw = path.read_bytes().decode("utf-8", errors="replace").replace("\ufffd", " ")
    for line_no, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        label, _, question = line.strip().partition(" ")
        coarse = label.partition(":")[0]
        if coarse not in index or not question:
            raise DataError(f"{path}: line {line_no} is not 'COARSE:fine question' with COARSE "
                            f"one of {', '.join(TREC_CLASSES)}")
        texts.append(question)
        labels.append(index[coarse])
    return RawText(texts, np.asarray(labels, dtype=np.int64))


def read_trec(root: Path) -> RawCorpus:
    """TREC-6: ``train_5500.label`` / ``TREC_10.label`` lines of ``COARSE:fine question``."""
    return _train_test(
        "trec", TREC_CLASSES, _read_trec_file, root / "train_5500.label", root / "TREC_10.label"
    )


def _read_sst2_file(path: Path) -> RawText:
    frame = read_delimited(path, sep="\t", quoting=csv.QUOTE_NONE)
    missing = [c for c in ("sentence", "label") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column {', '.join(missing)}; "
                        f"columns: {', '.join(map(str, frame.columns))}")
    labels = frame["label"].to_numpy()
    if not np.isin(labels, ["0", "1"]).all():
        raise DataError(f"{path}: SST-2 labels must be 0 or 1")
    return RawText(frame["sentence"].tolist(), labels.astype(np.int64))


def read_sst2(root: Path) -> RawCorpus:
    """SST-2 (GLUE): ``SST-2/train.tsv`` and ``SST-2/dev.tsv`` with ``sentence<TAB>label``.

    GLUE's ``test.tsv`` has no labels, so the public dev set is the test split (as in most
    papers) and the validation split is held out from training."""
    base = root / "SST-2"
    return _train_test(
        "sst2", SENTIMENT_CLASSES, _read_sst2_file, base / "train.tsv", base / "dev.tsv"
    )


_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def _imdb_order(path: Path) -> tuple:
    match = re.fullmatch(r"(\d+)_(\d+)", path.stem)
    return (0, int(match.group(1)), int(match.group(2)), "") if match else (1, 0, 0, path.stem)


def _read_imdb_split(base: Path) -> RawText:
    texts, labels = [], []
    for label, folder in enumerate(("neg", "pos")):
        directory = base / folder
        if not directory.is_dir():
            raise DataError(f"{directory} is missing (expected the aclImdb directory tree)")
        # Sorted by the review number in 'ID_RATING.txt' so the order never depends on the disk.
        files = sorted(directory.glob("*.txt"), key=_imdb_order)
        for f in files:
            texts.append(_BR.sub(" ", f.read_text(encoding="utf-8", errors="replace")))
        labels.extend([label] * len(files))
    return RawText(texts, np.asarray(labels, dtype=np.int64))


def read_imdb(root: Path) -> RawCorpus:
    """IMDb: ``aclImdb/{train,test}/{neg,pos}/*.txt`` (the unlabelled ``unsup`` is skipped)."""
    base = root / "aclImdb"
    return _train_test("imdb", SENTIMENT_CLASSES, _read_imdb_split, base / "train", base / "test")


# -- where the corpora come from -------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One file of a corpus: where it comes from and how it is checked."""

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None
    extract: bool = False


@dataclass(frozen=True)
class CorpusSpec:
    """A downloadable corpus: its files, what must exist after fetching, and its reader."""

    name: str
    files: tuple[RemoteFile, ...]
    required: tuple[str, ...]  # paths relative to data_dir/<name> that the reader opens
    reader: Callable[[Path], RawCorpus]


def _remote(url: str, sha256: str, *, extract: bool = False) -> RemoteFile:
    """A file saved under the last part of its URL."""
    return RemoteFile(url, url.rpartition("/")[2], sha256=sha256, extract=extract)


# URLs and checksums: the SHA-256 values are those published in the HuggingFace `datasets`
# dataset_infos.json files for exactly these URLs (the MD5s of AG News are also torchtext's).
# Every file therefore has a published checksum; none needs pinning on first download.
_AG_NEWS_URL = "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv"
_TREC_URL = "https://cogcomp.seas.upenn.edu/Data/QA/QC"
_FAST_AI_URL = "https://s3.amazonaws.com/fast-ai-nlp"
_SPECS = (
    CorpusSpec("ag_news", (
        _remote(f"{_AG_NEWS_URL}/train.csv",
                "76a0a2d2f92b286371fe4d4044640910a04a803fdd2538e0f3f29a5c6f6b672e"),
        _remote(f"{_AG_NEWS_URL}/test.csv",
                "521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699"),
    ), ("train.csv", "test.csv"), read_ag_news),
    CorpusSpec("trec", (
        _remote(f"{_TREC_URL}/train_5500.label",
                "9e4c8bdcaffb96ed61041bd64b564183d52793a8e91d84fc3a8646885f466ec3"),
        _remote(f"{_TREC_URL}/TREC_10.label",
                "033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e"),
    ), ("train_5500.label", "TREC_10.label"), read_trec),
    CorpusSpec("sst2", (
        _remote("https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
                "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa", extract=True),
    ), ("SST-2/train.tsv", "SST-2/dev.tsv"), read_sst2),
    CorpusSpec("imdb", (
        _remote("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe", extract=True),
    ), tuple(f"aclImdb/{s}/{c}" for s in ("train", "test") for c in ("pos", "neg")), read_imdb),
    CorpusSpec("dbpedia", (
        _remote(f"{_FAST_AI_URL}/dbpedia_csv.tgz",
                "42db5221ddedddb673a4cabcc5f3a7d869714c878bcfe4ba94b29d14aa38e417", extract=True),
    ), ("dbpedia_csv/train.csv", "dbpedia_csv/test.csv"), read_dbpedia),
    CorpusSpec("yelp_polarity", (
        _remote(f"{_FAST_AI_URL}/yelp_review_polarity_csv.tgz",
                "528f22e286cad085948acbc3bea7e58188416546b0e364d0ae4ca0ce666abe35", extract=True),
    ), tuple(f"yelp_review_polarity_csv/{s}.csv" for s in ("train", "test")), read_yelp_polarity),
)
CORPORA: dict[str, CorpusSpec] = {spec.name: spec for spec in _SPECS}


def ensure_corpus(spec: CorpusSpec, data_dir: str | Path, *, download: bool) -> Path:
    """Make sure ``data_dir/<name>/`` holds the corpus; return that directory.

    Files already extracted are used as they are. An archive that is present (downloaded
    earlier or placed by hand) is verified and extracted. Anything else is fetched only
    with ``download=True``; otherwise DataError says which files are expected where.
    """
    root = Path(data_dir).expanduser() / spec.name
    if _is_ready(spec, root):
        return root
    # Several workers may start at once: one fetches and extracts, the others wait and
    # find the corpus ready.
    with prepare_lock(root, f"preparing the {spec.name} corpus"):
        if not _is_ready(spec, root):
            _prepare(spec, root, download)
    return root


def _is_ready(spec: CorpusSpec, root: Path) -> bool:
    """Every required file is there and no archive was left half extracted."""
    # An archive that is present but not fully extracted (an interrupted run) is redone.
    unpacked = all(is_extracted(root / f.filename, root) for f in spec.files
                   if f.extract and (root / f.filename).is_file())
    return unpacked and all((root / r).exists() for r in spec.required)


def _prepare(spec: CorpusSpec, root: Path, download: bool) -> None:
    for remote in spec.files:
        target = root / remote.filename
        if not target.is_file():
            if not download:
                continue  # reported below with everything else that is missing
            fetch(remote.url, target, sha256=remote.sha256, md5=remote.md5)
        elif remote.extract:
            # An archive from an earlier run or placed by hand: check it before unpacking.
            verify_file(target, sha256=remote.sha256, md5=remote.md5)
        if remote.extract:
            # Something is missing, so unpack again even if a marker says it was done.
            extract_archive(target, root, force=True)
    missing = [r for r in spec.required if not (root / r).exists()]
    if missing:
        if not download:
            wanted = ", ".join(f.filename for f in spec.files)
            raise DataError(f"{spec.name} is not in {root} (expected {', '.join(missing)}); pass "
                            f"--download to fetch {wanted} there, or place those files yourself")
        raise DataError(f"{spec.name}: {', '.join(missing)} still missing in {root} after "
                        f"fetching {', '.join(f.filename for f in spec.files)}")
