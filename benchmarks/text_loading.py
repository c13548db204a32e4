"""Time the text pipeline: GloVe loading, tokenizing, vocabulary, encoding, embedding table.

Run: ``PYTHONPATH=. python benchmarks/text_loading.py [--sentences 100000] [--no-txt]``

Rows:
  * the packaged GloVe 6B 50-d vectors, first load in this process and memoised reload;
  * the same vectors written out as a Stanford-format ``.txt`` (400k lines, ~170 MB):
    first parse (writes the binary cache) and a reload from that cache;
  * tokenize + vocabulary + encode N realistic sentences (drawn from GloVe words with a
    Zipf-like frequency, mixed case, punctuation and contractions; fixed seed);
  * the embedding table for that vocabulary (rows kept vs the 400k of the full table).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablate.data import glove  # noqa: E402
from ablate.data.glove import build_embedding_matrix, load_glove  # noqa: E402
from ablate.data.text.encoding import build_vocab  # noqa: E402
from ablate.data.text.tokenizer import tokenize_batch  # noqa: E402


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def make_sentences(words: list[str], n: int, seed: int = 0) -> list[str]:
    """n sentences of 5-40 words sampled Zipf-like from the 50k most frequent GloVe words."""
    rng = np.random.default_rng(seed)
    pool = [w for w in words[:50_000] if w.isalpha()]
    p = 1.0 / np.arange(1, len(pool) + 1)
    p /= p.sum()
    lengths = rng.integers(5, 41, n)
    picks = rng.choice(len(pool), size=int(lengths.sum()), p=p)
    extras = [",", "don't", "it's", "U.S.", "$1,000", "(", ")", "well-known", "..."]
    sentences, pos = [], 0
    for length in lengths:
        tokens = [pool[i] for i in picks[pos : pos + length]]
        pos += length
        for _ in range(int(rng.integers(0, 3))):
            tokens.insert(int(rng.integers(0, len(tokens) + 1)), extras[rng.integers(len(extras))])
        sentences.append(" ".join(tokens).capitalize() + rng.choice([".", "!", "?"]))
    return sentences


def write_glove_txt(wv: glove.WordVectors, path: Path) -> None:
    """The packaged vectors in Stanford's text format (5 decimals, as glove.6B.*.txt)."""
    vectors = np.asarray(wv.vectors)
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, len(wv), 20_000):
            block = vectors[start : start + 20_000]
            body = [" ".join(f"{v:.5f}" for v in row) for row in block]
            f.write("".join(f"{w} {b}\n" for w, b in zip(wv.words[start : start + 20_000], body)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=100_000)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--no-txt", action="store_true", help="skip the .txt parse rows")
    args = parser.parse_args()

    rows: list[tuple[str, float, str]] = []
    glove._MEMO.clear()
    wv, t = _timed(lambda: load_glove(None))
    rows.append(("packaged GloVe 6B 50d: first load", t, f"{len(wv):,} x {wv.dim}"))
    _, t = _timed(lambda: load_glove(None))
    rows.append(("packaged GloVe 6B 50d: memoised reload", t, ""))

    if not args.no_txt:
        with tempfile.TemporaryDirectory() as tmp:
            txt = Path(tmp) / "glove.6B.50d.txt"
            write_glove_txt(wv, txt)
            size = txt.stat().st_size / 2**20
            glove._MEMO.clear()
            parsed, t = _timed(lambda: load_glove(txt))
            rows.append((f"glove .txt ({size:.0f} MB): parse + write cache", t,
                         f"{len(parsed):,} x {parsed.dim}"))
            glove._MEMO.clear()
            cached, t = _timed(lambda: load_glove(txt))
            same = np.array_equal(np.asarray(cached.vectors), np.asarray(parsed.vectors))
            rows.append(("glove .txt: reload from .npy cache", t, f"identical: {same}"))
            del parsed, cached
            glove._MEMO.clear()
        wv = load_glove(None)

    sentences = make_sentences(wv.words, args.sentences)
    docs, t_tok = _timed(lambda: tokenize_batch(sentences, args.max_len))
    n_tokens = sum(len(d) for d in docs)
    rows.append((f"tokenize {len(sentences):,} sentences", t_tok, f"{n_tokens:,} tokens"))

    def has_vector(tokens: list[str]) -> np.ndarray:
        return wv.lookup_ids(tokens) >= 0

    vocab, t = _timed(lambda: build_vocab(docs, has_vector=has_vector))
    rows.append(("build vocabulary", t, f"{len(vocab):,} tokens"))
    x, t = _timed(lambda: vocab.encode(docs, args.max_len))
    rows.append((f"encode to int64 {x.shape}", t, ""))
    emb, t = _timed(lambda: build_embedding_matrix(vocab.tokens, wv, seed=0))
    found = int(has_vector(vocab.tokens[2:]).sum())
    rows.append(("embedding table for the vocabulary", t,
                 f"{emb.shape[0]:,} of {len(wv):,} rows kept ({found:,} pretrained)"))
    total = t_tok + sum(r[1] for r in rows[-3:])
    rows.append(("tokenize + vocab + encode + table", total, ""))

    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  {'seconds':>8}  detail")
    print("-" * (width + 40))
    for name, seconds, detail in rows:
        print(f"{name:<{width}}  {seconds:8.3f}  {detail}")


if __name__ == "__main__":
    main()
