"""Text classification data: tokenizer, vocabulary, corpus readers and ``load_text_data``.

Pipeline: raw texts + labels (a known corpus or a local csv/tsv/jsonl) -> fixed train /
validation / test split -> GloVe-style tokens -> vocabulary -> int64 ids ``(N, max_len)``
padded with 0 -> :class:`~ablate.data.DataBundle` with the data set's embedding table.

Tokenizer: lowercased, split the way GloVe's 6B corpus was (Stanford PTB tokenizer,
lowercased): punctuation is its own token, PTB contractions are split (``don't`` -> ``do
n't``, ``it's`` -> ``it 's``, ``can't`` -> ``ca n't``), numbers (``1,000``, ``3.5``),
hyphenated words (``well-known``), dotted abbreviations (``u.s.``, ``e.g.``) and common
titles (``mr.``, ``dr.``) stay whole. Each of those forms has its own GloVe 6B vector.

Vocabulary policy: every token of the training split (within the first ``max_len`` tokens
of an example, the only ones a model sees) plus the validation / test tokens that have a
GloVe vector. The latter adds no label information -- their vectors were pretrained on
unrelated text -- and keeps test words like "magnificent" from collapsing into ``<unk>``
just because training happened not to contain them. Index 0 is ``<pad>``, 1 is ``<unk>``.

Splits: a data set without its own validation (or test) split has one held out from the
training data, stratified by label, with the fixed seed :data:`SPLIT_SEED` -- never
``cfg.seed`` -- so every run of a comparison sees exactly the same examples.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from ablate.data import DataBundle, Split
from ablate.data.glove import PAD_TOKEN, UNK_TOKEN, build_embedding_matrix, load_glove
from ablate.exceptions import ConfigError, DataError

if TYPE_CHECKING:
    from ablate.config import RunConfig

__all__ = [
    "tokenize",
    "tokenize_batch",
    "Vocabulary",
    "build_vocab",
    "RawText",
    "RawCorpus",
    "RemoteFile",
    "CorpusSpec",
    "CORPORA",
    "SPLIT_SEED",
    "read_ag_news",
    "read_dbpedia",
    "read_yelp_polarity",
    "read_trec",
    "read_sst2",
    "read_imdb",
    "read_local",
    "ensure_corpus",
    "split_holdout",
    "load_text_data",
]

SPLIT_SEED = 1234  # fixed: the held-out examples must not change with cfg.seed

# -- tokenizer ---------------------------------------------------------------------------

_QUOTES = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u201b": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"'}
)
_PTB_QUOTES = re.compile(r"``|''")  # PTB-style quotes (TREC, SST) -> the plain '"' token
# don't -> do n't, can't -> ca n't, it's -> it 's (as PTB). Both patterns start with a
# literal so the scan is fast; the callback checks that a word character comes before.
_CONTRACTION = re.compile(r"n't(?!\w)|'(?:s|re|ve|ll|d|m)(?!\w)")
_TITLES = ("mr|mrs|ms|dr|prof|st|jr|sr|vs|inc|corp|ltd|co|gov|gen|sen|rep|mt|ft|etc"
           "|jan|feb|aug|sep|sept|oct|nov|dec")
_TOKEN = re.compile(
    r"n't(?!\w)|'(?:s|re|ve|ll|d|m|em)(?!\w)"  # split-off clitics
    r"|\.{3,}|-{2,}"  # ellipsis, dashes
    r"|(?:[^\W\d_]\.){2,}"  # u.s., e.g., p.m.
    rf"|(?:{_TITLES})\.|no\.(?=\s*\d)"  # mr., dr., no. 5
    r"|\d+(?:[.,:/]\d+)+"  # 1,000  3.5  10:30  1/2
    r"|\w+(?:['-]\w+)*"  # words, well-known, o'neill
    r"|[^\w\s]"  # any other symbol on its own
)
_SEP = "\x00"


def _split_contraction(match: re.Match) -> str:
    start = match.start()
    before = match.string[start - 1] if start else " "
    # str.isalnum() or "_" is exactly what \w means for str patterns.
    attached = before.isalnum() or before == "_"
    return " " + match.group(0) if attached else match.group(0)


def _normalise(text: str) -> str:
    """Lowercase, unify quotes and split PTB contractions (whole string at once)."""
    text = _PTB_QUOTES.sub('"', text.lower().translate(_QUOTES))
    return _CONTRACTION.sub(_split_contraction, text)


def tokenize(text: str) -> list[str]:
    """GloVe-6B-style tokens of one text (see the module docstring)."""
    return tokenize_batch([text])[0]


def _join(texts: Sequence[str]) -> str:
    """All texts joined by NUL, after turning any NUL inside a text into a space."""
    joined = _SEP.join(texts)
    if joined.count(_SEP) != len(texts) - 1:
        joined = _SEP.join(t.replace(_SEP, " ") for t in texts)
    return joined


def tokenize_batch(texts: Sequence[str], max_tokens: int | None = None) -> list[list[str]]:
    """Tokenize many texts; with ``max_tokens`` each list is cut to that many tokens.

    The lowercasing and contraction rules run once over all texts joined together, and
    with ``max_tokens`` a long text is first tokenized from a prefix only -- redone on the
    full text when the prefix yields too few tokens, so the result is always exact.

    Args:
        texts: raw strings.
        max_tokens: keep at most this many tokens per text (``None`` = all).
    """
    if not texts:
        return []
    pieces = _normalise(_join(texts)).split(_SEP)
    findall = _TOKEN.findall
    if max_tokens is None:
        return [findall(p) for p in pieces]
    # Natural tokens average < 8 characters, so 24 per token is a wide margin. Cutting the
    # text can only change the tokens that touch the cut: at most 3 ("u.s." cut to "u.s"
    # gives "u" "." "s"), so a prefix with max_tokens + 4 tokens has the exact first ones.
    spare = 4
    window = 24 * (max_tokens + spare)
    out = []
    for p in pieces:
        if len(p) > window:
            toks = findall(p, 0, window)
            if len(toks) < max_tokens + spare:
                toks = findall(p)
        else:
            toks = findall(p)
        out.append(toks[:max_tokens])
    return out


# -- vocabulary --------------------------------------------------------------------------


class Vocabulary:
    """Token <-> id mapping with ``<pad>`` at 0 and ``<unk>`` at 1.

    Args:
        tokens: index -> token; must start with ``<pad>``, ``<unk>``.
    """

    pad_index = 0
    unk_index = 1

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tokens[:2] != [PAD_TOKEN, UNK_TOKEN]:
            raise ValueError(f"a vocabulary starts with {PAD_TOKEN}, {UNK_TOKEN}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be unique")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.index

    def encode(self, docs: Sequence[Sequence[str]], max_len: int) -> np.ndarray:
        """Ids (N, max_len) int64: cut after max_len, padded with 0, unknown -> 1.

        An example without tokens becomes a single ``<unk>`` so no row is all padding.
        """
        n = len(docs)
        lengths = np.fromiter((min(len(d), max_len) for d in docs), dtype=np.int64, count=n)
        flat = list(chain.from_iterable(d[:max_len] for d in docs))
        ids = np.fromiter(map(self.index.get, flat, repeat(self.unk_index)), np.int64, len(flat))
        out = np.full((n, max_len), self.pad_index, dtype=np.int64)
        # Row-major boolean assignment fills each row's first `length` slots in order.
        out[np.arange(max_len)[None, :] < lengths[:, None]] = ids
        out[lengths == 0, 0] = self.unk_index
        return out


def build_vocab(
    train_docs: Sequence[Sequence[str]],
    *,
    extra_docs: Sequence[Sequence[str]] = (),
    has_vector: Callable[[list[str]], np.ndarray] | None = None,
    min_freq: int = 1,
) -> Vocabulary:
    """Vocabulary of the training tokens plus held-out tokens that have a pretrained vector.

    Order: ``<pad>``, ``<unk>``, training tokens by falling frequency (ties: first seen),
    then the extra tokens by falling frequency. Deterministic for a given input.

    Args:
        train_docs: tokenized training examples.
        extra_docs: tokenized validation / test examples; only tokens with a vector join.
        has_vector: tokens -> bool array, True where a pretrained vector exists.
        min_freq: training tokens without a pretrained vector need this many occurrences
            (a random vector seen once cannot be learned); pretrained ones always join.
    """
    counts = Counter(chain.from_iterable(train_docs))
    ranked = [t for t, _ in counts.most_common() if t not in (PAD_TOKEN, UNK_TOKEN)]
    if min_freq > 1:
        rare = [t for t in ranked if counts[t] < min_freq]
        keep: set[str] = set()
        if has_vector is not None and rare:
            keep = {t for t, ok in zip(rare, has_vector(rare)) if ok}
        ranked = [t for t in ranked if counts[t] >= min_freq or t in keep]
    tokens = [PAD_TOKEN, UNK_TOKEN] + ranked
    if has_vector is not None and extra_docs:
        seen = set(tokens)
        extra = Counter(t for t in chain.from_iterable(extra_docs) if t not in seen)
        candidates = [t for t, _ in extra.most_common()]
        if candidates:
            mask = has_vector(candidates)
            tokens += [t for t, ok in zip(candidates, mask) if ok]
    return Vocabulary(tokens)


# -- raw data ------------------------------------------------------------------------------


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


def _read_csv(path: Path, **kwargs):
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
    joined = _join(texts).replace("\\n", " ").replace("\\", " ")
    joined = _HTML_NUM.sub(_html_char, joined)
    joined = _HTML_NAMED.sub(lambda m: _NAMED[m.group(1)], joined)
    return joined.split(_SEP) if texts else []


def _read_zhang_split(path: Path, n_classes: int) -> RawText:
    frame = _read_csv(path, header=None)
    if frame.shape[1] < 2:
        raise DataError(f"{path}: expected 'class,text' or 'class,title,text' rows")
    text = frame[1]
    for col in frame.columns[2:]:  # title + description / content
        text = text + " " + frame[col]
    labels = _zhang_labels(path, frame[0], n_classes)
    return RawText(_clean_zhang(text.tolist()), labels)


AG_NEWS_CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
DBPEDIA_CLASSES = [
    "Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
    "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal", "Plant",
    "Album", "Film", "WrittenWork",
]
TREC_CLASSES = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
SENTIMENT_CLASSES = ["negative", "positive"]


def read_ag_news(root: Path) -> RawCorpus:
    """AG News: ``train.csv`` / ``test.csv`` rows of ``class(1-4),title,description``."""
    return RawCorpus(
        _read_zhang_split(root / "train.csv", 4),
        None,
        _read_zhang_split(root / "test.csv", 4),
        list(AG_NEWS_CLASSES),
        "ag_news",
    )


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
    return RawCorpus(
        _read_zhang_split(base / "train.csv", 14),
        None,
        _read_zhang_split(base / "test.csv", 14),
        names,
        "dbpedia",
    )


def read_yelp_polarity(root: Path) -> RawCorpus:
    """Yelp polarity: ``yelp_review_polarity_csv/{train,test}.csv`` rows of ``class(1-2),text``."""
    base = root / "yelp_review_polarity_csv"
    return RawCorpus(
        _read_zhang_split(base / "train.csv", 2),
        None,
        _read_zhang_split(base / "test.csv", 2),
        list(SENTIMENT_CLASSES),
        "yelp_polarity",
    )


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
            raise DataError(
                f"{path}: line {line_no} is not 'COARSE:fine question' with COARSE one of "
                f"{', '.join(TREC_CLASSES)}"
            )
        texts.append(question)
        labels.append(index[coarse])
    return RawText(texts, np.asarray(labels, dtype=np.int64))


def read_trec(root: Path) -> RawCorpus:
    """TREC-6: ``train_5500.label`` / ``TREC_10.label`` lines of ``COARSE:fine question``."""
    return RawCorpus(
        _read_trec_file(root / "train_5500.label"),
        None,
        _read_trec_file(root / "TREC_10.label"),
        list(TREC_CLASSES),
        "trec",
    )


def _read_sst2_file(path: Path) -> RawText:
    frame = _read_csv(path, sep="\t", quoting=csv.QUOTE_NONE)
    missing = [c for c in ("sentence", "label") if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column {', '.join(missing)}; "
            f"columns: {', '.join(map(str, frame.columns))}"
        )
    labels = frame["label"].to_numpy()
    if not np.isin(labels, ["0", "1"]).all():
        raise DataError(f"{path}: SST-2 labels must be 0 or 1")
    return RawText(frame["sentence"].tolist(), labels.astype(np.int64))


def read_sst2(root: Path) -> RawCorpus:
    """SST-2 (GLUE): ``SST-2/train.tsv`` and ``SST-2/dev.tsv`` with ``sentence<TAB>label``.

    GLUE's ``test.tsv`` has no labels, so the public dev set is the test split (as in most
    papers) and the validation split is held out from training.
    """
    base = root / "SST-2"
    return RawCorpus(
        _read_sst2_file(base / "train.tsv"),
        None,
        _read_sst2_file(base / "dev.tsv"),
        list(SENTIMENT_CLASSES),
        "sst2",
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
    return RawCorpus(
        _read_imdb_split(base / "train"),
        None,
        _read_imdb_split(base / "test"),
        list(SENTIMENT_CLASSES),
        "imdb",
    )


# -- known corpora -------------------------------------------------------------------------


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


# URLs and checksums: the SHA-256 values are those published in the HuggingFace `datasets`
# dataset_infos.json files for exactly these URLs (the MD5s of AG News are also torchtext's).
# Every file therefore has a published checksum; none needs pinning on first download.
_AG_NEWS_URL = "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv"
CORPORA: dict[str, CorpusSpec] = {
    "ag_news": CorpusSpec(
        "ag_news",
        (
            RemoteFile(
                f"{_AG_NEWS_URL}/train.csv",
                "train.csv",
                sha256="76a0a2d2f92b286371fe4d4044640910a04a803fdd2538e0f3f29a5c6f6b672e",
            ),
            RemoteFile(
                f"{_AG_NEWS_URL}/test.csv",
                "test.csv",
                sha256="521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699",
            ),
        ),
        ("train.csv", "test.csv"),
        read_ag_news,
    ),
    "trec": CorpusSpec(
        "trec",
        (
            RemoteFile(
                "https://cogcomp.seas.upenn.edu/Data/QA/QC/train_5500.label",
                "train_5500.label",
                sha256="9e4c8bdcaffb96ed61041bd64b564183d52793a8e91d84fc3a8646885f466ec3",
            ),
            RemoteFile(
                "https://cogcomp.seas.upenn.edu/Data/QA/QC/TREC_10.label",
                "TREC_10.label",
                sha256="033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e",
            ),
        ),
        ("train_5500.label", "TREC_10.label"),
        read_trec,
    ),
    "sst2": CorpusSpec(
        "sst2",
        (
            RemoteFile(
                "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
                "SST-2.zip",
                sha256="d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa",
                extract=True,
            ),
        ),
        ("SST-2/train.tsv", "SST-2/dev.tsv"),
        read_sst2,
    ),
    "imdb": CorpusSpec(
        "imdb",
        (
            RemoteFile(
                "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                "aclImdb_v1.tar.gz",
                sha256="c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
                extract=True,
            ),
        ),
        ("aclImdb/train/pos", "aclImdb/train/neg", "aclImdb/test/pos", "aclImdb/test/neg"),
        read_imdb,
    ),
    "dbpedia": CorpusSpec(
        "dbpedia",
        (
            RemoteFile(
                "https://s3.amazonaws.com/fast-ai-nlp/dbpedia_csv.tgz",
                "dbpedia_csv.tgz",
                sha256="42db5221ddedddb673a4cabcc5f3a7d869714c878bcfe4ba94b29d14aa38e417",
                extract=True,
            ),
        ),
        ("dbpedia_csv/train.csv", "dbpedia_csv/test.csv"),
        read_dbpedia,
    ),
    "yelp_polarity": CorpusSpec(
        "yelp_polarity",
        (
            RemoteFile(
                "https://s3.amazonaws.com/fast-ai-nlp/yelp_review_polarity_csv.tgz",
                "yelp_review_polarity_csv.tgz",
                sha256="528f22e286cad085948acbc3bea7e58188416546b0e364d0ae4ca0ce666abe35",
                extract=True,
            ),
        ),
        ("yelp_review_polarity_csv/train.csv", "yelp_review_polarity_csv/test.csv"),
        read_yelp_polarity,
    ),
}


def ensure_corpus(
    spec: CorpusSpec, data_dir: str | Path, *, download: bool, progress: bool = True
) -> Path:
    """Make sure ``data_dir/<name>/`` holds the corpus; return that directory.

    Files already extracted are used as they are. An archive that is present (downloaded
    earlier or placed by hand) is verified and extracted. Anything else is fetched only
    with ``download=True``; otherwise DataError says which files are expected where.

    Args:
        spec: the corpus.
        data_dir: root data directory (``cfg.data_dir``).
        download: allowed to fetch missing files.
        progress: show download progress bars.
    """
    from ablate.data.download import download as fetch
    from ablate.data.download import extract_archive, is_extracted, verify_file

    root = Path(data_dir).expanduser() / spec.name
    # An archive that is present but not fully extracted (an interrupted run) is redone.
    unpacked = all(
        is_extracted(root / f.filename, root)
        for f in spec.files
        if f.extract and (root / f.filename).is_file()
    )
    if unpacked and all((root / r).exists() for r in spec.required):
        return root
    for remote in spec.files:
        target = root / remote.filename
        if not target.is_file():
            if not download:
                continue  # reported below with everything else that is missing
            fetch(remote.url, target, sha256=remote.sha256, md5=remote.md5, progress=progress)
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
            raise DataError(
                f"{spec.name} is not in {root} (expected {', '.join(missing)}); pass --download "
                f"to fetch {wanted} there, or place those files yourself"
            )
        raise DataError(
            f"{spec.name}: {', '.join(missing)} still missing in {root} after fetching "
            f"{', '.join(f.filename for f in spec.files)}"
        )
    return root


# -- local files ---------------------------------------------------------------------------

_FORMATS = {"csv": (".csv",), "tsv": (".tsv",), "jsonl": (".jsonl", ".json")}
_SPLIT_NAMES = {
    "train": ("train",),
    "val": ("val", "valid", "validation", "dev"),
    "test": ("test",),
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
        frame = _read_csv(path, sep="," if fmt == "csv" else "\t")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    for col, flag in ((text_col, "--text-col"), (label_col, "--label-col")):
        if col not in columns:
            raise DataError(
                f"{path}: no column {col!r} (set {flag}); columns: {', '.join(columns) or 'none'}"
            )
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
    """A ``csv:PATH`` / ``tsv:PATH`` / ``jsonl:PATH`` data set.

    PATH is one file (all splits are held out from it later) or a directory with
    ``train.EXT`` and optionally ``val|valid|validation|dev.EXT`` and ``test.EXT``.
    Labels may be strings or integers; classes are sorted (numerically when all are
    integers) and that order gives the class ids.

    Args:
        spec: ``FORMAT:PATH``.
        text_col: name of the text column.
        label_col: name of the label column.
    """
    fmt, _, raw_path = spec.partition(":")
    if fmt not in _FORMATS or not raw_path:
        raise ConfigError(f"dataset {spec!r}: use csv:PATH, tsv:PATH or jsonl:PATH")
    path = Path(raw_path).expanduser()
    exts = _FORMATS[fmt]
    if path.is_dir():
        files = {s: _find_split_file(path, s, exts) for s in ("train", "val", "test")}
        if files["train"] is None:
            raise DataError(
                f"{path}: no train{exts[0]} file (a {fmt} data set directory holds train{exts[0]} "
                f"and optionally val{exts[0]} / dev{exts[0]} and test{exts[0]})"
            )
    elif path.is_file():
        files = {"train": path, "val": None, "test": None}
    else:
        raise DataError(
            f"{path} does not exist; give a {fmt} file or a directory with train{exts[0]} "
            f"(and optionally val{exts[0]}, test{exts[0]})"
        )
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


# -- splitting and the bundle ----------------------------------------------------------------


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


def _raw_corpus(cfg: "RunConfig") -> RawCorpus:
    if cfg.dataset in CORPORA:
        spec = CORPORA[cfg.dataset]
        root = ensure_corpus(spec, cfg.data_dir, download=cfg.download, progress=not cfg.quiet)
        return spec.reader(root)
    if cfg.dataset.startswith(("csv:", "tsv:", "jsonl:")):
        return read_local(cfg.dataset, cfg.text_col, cfg.label_col)
    raise ConfigError(
        f"unknown text dataset {cfg.dataset!r}; choose one of {', '.join(CORPORA)}, "
        "csv:PATH, tsv:PATH or jsonl:PATH"
    )


def load_text_data(cfg: "RunConfig") -> DataBundle:
    """Load, split, tokenize and encode ``cfg.dataset``; attach its embedding table.

    Args:
        cfg: uses dataset, data_dir, download, text_col, label_col, max_len, embeddings,
            val_fraction, test_fraction, seed (for the random rows of unknown words) and quiet.
    """
    if cfg.max_len < 1:
        raise ConfigError(f"max_len: must be >= 1, got {cfg.max_len}")
    raw = _raw_corpus(cfg)
    if len(raw.train) == 0:
        raise DataError(f"{raw.source}: the training split is empty")
    train, val, test = raw.train, raw.val, raw.test
    if test is None:
        if not 0.0 < cfg.test_fraction < 1.0:
            raise ConfigError(
                f"test_fraction: must be in (0, 1) because {raw.source} has no test split, "
                f"got {cfg.test_fraction}"
            )
        train, test = split_holdout(train, cfg.test_fraction)
    if val is None:
        train, val = split_holdout(train, cfg.val_fraction)

    wv = load_glove(cfg.embeddings)
    docs = {name: tokenize_batch(part.texts, cfg.max_len)
            for name, part in (("train", train), ("val", val), ("test", test))}

    def has_vector(tokens: list[str]) -> np.ndarray:
        return wv.lookup_ids(tokens) >= 0

    vocab = build_vocab(
        docs["train"], extra_docs=docs["val"] + docs["test"], has_vector=has_vector
    )
    embedding = build_embedding_matrix(vocab.tokens, wv, cfg.seed)
    pretrained = int(has_vector(vocab.tokens[2:]).sum())

    def split(name: str, part: RawText) -> Split:
        x = torch.from_numpy(vocab.encode(docs[name], cfg.max_len))
        return Split(x, torch.from_numpy(np.ascontiguousarray(part.labels, dtype=np.int64)))

    # Token lists are already cut at max_len: a full-length one was cut or fits exactly.
    lengths = np.asarray([len(d) for d in chain(docs["train"], docs["val"], docs["test"])])
    info = {
        "source": raw.source,
        "embeddings": wv.name,
        "embedding_dim": wv.dim,
        "vocab_size": len(vocab),
        "vocab_pretrained": pretrained,
        "vocab_random": len(vocab) - 2 - pretrained,
        "train_size": len(train),
        "val_size": len(val),
        "test_size": len(test),
        "max_len": cfg.max_len,
        "full_length_fraction": round(float((lengths >= cfg.max_len).mean()), 4),
        "mean_tokens": round(float(lengths.mean()), 2),
        "split_seed": SPLIT_SEED,
    }
    return DataBundle(
        name=cfg.dataset,
        task="text",
        train=split("train", train),
        val=split("val", val),
        test=split("test", test),
        num_classes=len(raw.class_names),
        class_names=list(raw.class_names),
        vocab=vocab.tokens,
        embedding_matrix=embedding,
        pad_index=Vocabulary.pad_index,
        info=info,
    )
