"""GloVe loading (packaged 6B 50-d, text files, zips, the parse cache) and the embedding table."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.data import glove
from ablate.data.glove import (
    CACHE_SUFFIX,
    PAD_TOKEN,
    UNK_TOKEN,
    WordVectors,
    build_embedding_matrix,
    load_glove,
)
from ablate.exceptions import DataError


@pytest.fixture(autouse=True)
def _fresh_memo(tmp_path, monkeypatch):
    glove._MEMO.clear()
    # A read-only source directory falls back to this cache dir; keep it inside the test.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    yield
    glove._MEMO.clear()


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_packaged_glove_loads_offline_with_real_semantics():
    wv = load_glove(None)
    assert len(wv) == 400_000 and wv.dim == 50
    assert wv.vectors.dtype == np.float32
    assert wv.words[:3] == ["the", ",", "."]
    king, queen, carrot = (
        np.asarray(wv.vectors[wv.index[w]]) for w in ("king", "queen", "carrot")
    )
    assert _cos(king, queen) > 0.7 > _cos(king, carrot)
    # The PTB-style tokens our tokenizer emits are in the 6B vocabulary.
    for token in ("n't", "'s", "u.s.", "mr.", "1,000", "well-known", "..."):
        assert token in wv.index
    assert load_glove(None) is wv  # memoised within the process


def _write_glove(path: Path, rows: dict[str, list[float]], *, extra: str = "") -> None:
    lines = [f"{w} " + " ".join(f"{v:.6f}" for v in vec) for w, vec in rows.items()]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")


ROWS = {
    "the": [0.1, 0.2, 0.3, 0.4],
    ",": [-1.0, 0.5, 0.25, 2.0],
    '"': [3.0, -3.0, 1.5, 0.0],
    "nan": [0.5, 0.5, 0.5, 0.5],  # a word, not a missing value
    "null": [1.0, 2.0, 3.0, 4.0],
    "café": [9.0, 8.0, 7.0, 6.0],
}


def _check_rows(wv: WordVectors, rows: dict[str, list[float]]) -> None:
    for word, vec in rows.items():
        np.testing.assert_allclose(wv.vectors[wv.index[word]], vec, rtol=1e-6)


def test_text_file_is_parsed_cached_and_the_cache_reused(tmp_path):
    src = tmp_path / "glove.test.4d.txt"
    _write_glove(src, ROWS)
    wv = load_glove(src)
    assert wv.dim == 4 and len(wv) == len(ROWS)
    _check_rows(wv, ROWS)
    cache_vec = Path(str(src) + CACHE_SUFFIX + ".npy")
    cache_words = Path(str(src) + CACHE_SUFFIX + ".words")
    assert cache_vec.is_file() and cache_words.is_file()

    # Prove the second load reads the cache, not the text: change the cached numbers.
    glove._MEMO.clear()
    marked = np.load(cache_vec) + 100.0
    np.save(cache_vec, marked)
    again = load_glove(src)
    np.testing.assert_allclose(again.vectors, marked)
    assert again.words == wv.words

    # A source newer than its cache is parsed again (and the cache rewritten).
    glove._MEMO.clear()
    later = cache_vec.stat().st_mtime + 10
    os.utime(src, (later, later))
    fresh = load_glove(src)
    _check_rows(fresh, ROWS)
    np.testing.assert_allclose(np.load(cache_vec), np.asarray(fresh.vectors))


def test_tokens_with_spaces_trailing_blanks_headers_and_small_blocks(tmp_path, monkeypatch):
    # glove.840B has tokens containing spaces; the vector is always the last D fields.
    src = tmp_path / "glove.840B-like.txt"
    body = (
        "2 4\n"  # word2vec-style 'count dim' header line
        "Paris 1 2 3 4\n"
        ". . . 0.5 0.25 -1 2e-1 \n"  # token '. . .' and a trailing blank
        "\n"
        "at&t 4 3 2 1\r\n"
        "Paris 9 9 9 9"  # a repeated word (first row wins) on a last line without newline
    )
    src.write_text(body, encoding="utf-8")
    monkeypatch.setattr(glove, "_BLOCK_BYTES", 16)  # force many blocks and carried-over lines
    wv = load_glove(src)
    assert wv.words == ["Paris", ". . .", "at&t", "Paris"]
    assert wv.index["Paris"] == 0
    np.testing.assert_allclose(
        wv.vectors, [[1, 2, 3, 4], [0.5, 0.25, -1, 0.2], [4, 3, 2, 1], [9, 9, 9, 9]]
    )
    # Cased tables: a lowercase token falls back to its Capitalised form.
    assert wv.lookup_ids(["paris", "at&t", "london"]).tolist() == [0, 2, -1]


def test_zip_single_member_multiple_members_and_member_choice(tmp_path):
    one = tmp_path / "one.zip"
    with zipfile.ZipFile(one, "w") as zf:
        zf.writestr("glove.tiny.4d.txt", "the 1 2 3 4\nof 5 6 7 8\n")
    wv = load_glove(one)
    assert wv.words == ["the", "of"] and wv.dim == 4
    assert Path(str(one) + CACHE_SUFFIX + ".npy").is_file()

    many = tmp_path / "glove.6B.zip"
    with zipfile.ZipFile(many, "w") as zf:
        zf.writestr("glove.6B.2d.txt", "the 1 2\n")
        zf.writestr("glove.6B.3d.txt", "the 1 2 3\n")
    with pytest.raises(DataError, match=r"holds 2 files.*glove\.6B\.zip:MEMBER") as err:
        load_glove(many)
    assert "\n" not in str(err.value)
    assert load_glove(f"{many}:glove.6B.3d.txt").dim == 3
    with pytest.raises(DataError, match="no member 'nope.txt'"):
        load_glove(f"{many}:nope.txt")


def test_unwritable_cache_location_falls_back_to_the_user_cache(tmp_path):
    src = tmp_path / "vectors.txt"
    _write_glove(src, {"a": [1.0, 2.0], "b": [3.0, 4.0]})
    # A directory where the cache file should go makes writing next to the source fail
    # (a read-only folder would not stop root, who runs some CI containers).
    Path(str(src) + CACHE_SUFFIX + ".npy").mkdir()
    first = load_glove(src)
    fallback = list((tmp_path / "xdg-cache" / "ablate" / "glove").glob("*.npy"))
    assert len(fallback) == 1
    glove._MEMO.clear()
    np.save(fallback[0], np.load(fallback[0]) * -1)  # prove the fallback cache is read
    np.testing.assert_allclose(load_glove(src).vectors, -np.asarray(first.vectors))


@pytest.mark.parametrize(
    "body, message",
    [
        ("the 1 2 3\nof 1 2\n", "line 2 has 2 values, expected 3"),
        ("the 1 2 3\nof 1 x 3\n", "not a GloVe text file"),
        ("", "no word vectors"),
    ],
)
def test_malformed_files_raise_data_errors_naming_the_line(tmp_path, body, message):
    src = tmp_path / "bad.txt"
    src.write_text(body)
    with pytest.raises(DataError, match=message) as err:
        load_glove(src)
    assert "\n" not in str(err.value)


def test_missing_file():
    with pytest.raises(DataError, match="does not exist.*--embeddings unset"):
        load_glove("/nonexistent/glove.840B.300d.txt")


def _table() -> WordVectors:
    rng = np.random.default_rng(1)
    words = ["the", "cat", "sat", "mat", "Paris"]
    vectors = rng.normal(0.5, 2.0, size=(len(words), 8)).astype(np.float32)
    return WordVectors(words, {w: i for i, w in enumerate(words)}, vectors, "test")


def test_embedding_matrix_keeps_only_vocab_rows_and_applies_the_oov_policy():
    wv = _table()
    vocab = [PAD_TOKEN, UNK_TOKEN, "cat", "zyzzyva", "the", "paris", "qwertyuiop"]
    emb = build_embedding_matrix(vocab, wv, seed=0)
    assert emb.shape == (len(vocab), 8) and emb.dtype == torch.float32
    assert torch.count_nonzero(emb[0]) == 0  # <pad>
    mean, std = wv.stats()
    np.testing.assert_allclose(emb[1].numpy(), mean, rtol=1e-5)  # <unk> = average word
    np.testing.assert_allclose(emb[2].numpy(), wv.vectors[1])
    np.testing.assert_allclose(emb[4].numpy(), wv.vectors[0])
    np.testing.assert_allclose(emb[5].numpy(), wv.vectors[4])  # case fallback: paris -> Paris
    # Unknown words: random, seeded, different from each other and on GloVe's scale.
    again = build_embedding_matrix(vocab, wv, seed=0)
    other = build_embedding_matrix(vocab, wv, seed=1)
    assert torch.equal(emb, again)
    assert not torch.allclose(emb[3], other[3])
    assert torch.equal(emb[2], other[2])  # pretrained rows do not depend on the seed
    assert not torch.allclose(emb[3], emb[6])
    assert 0.1 < float(emb[[3, 6]].std()) < 10.0


def test_embedding_matrix_from_packaged_vectors_is_small():
    wv = load_glove(None)
    vocab = [PAD_TOKEN, UNK_TOKEN, "king", "queen", "notawordatallzz"]
    emb = build_embedding_matrix(vocab, wv, seed=3)
    assert emb.shape == (5, 50)
    np.testing.assert_allclose(emb[2].numpy(), wv.vectors[wv.index["king"]])
    _, std = wv.stats()
    assert np.all(std > 0.2) and np.all(std < 2.0)
