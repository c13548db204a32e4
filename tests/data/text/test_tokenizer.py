"""The GloVe-6B-style tokenizer: PTB conventions, batch cutting, speed."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ablate.data.text.tokenizer import tokenize, tokenize_batch


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("Don't stop!", ["do", "n't", "stop", "!"]),
        ("It's Mary's; they're here, we've gone", ["it", "'s", "mary", "'s", ";", "they", "'re",
                                                   "here", ",", "we", "'ve", "gone"]),
        ("I can't, won't, I'll, I'd, I'm", ["i", "ca", "n't", ",", "wo", "n't", ",", "i", "'ll",
                                              ",", "i", "'d", ",", "i", "'m"]),
        ("The U.S. economy, e.g. in 2004...", ["the", "u.s.", "economy", ",", "e.g.", "in",
                                               "2004", "..."]),
        ("Mr. Smith paid $1,000.50 (3.5%) at 10:30", ["mr.", "smith", "paid", "$", "1,000.50",
                                                      "(", "3.5", "%", ")", "at", "10:30"]),
        ("A well-known state-of-the-art -- idea", ["a", "well-known", "state-of-the-art", "--",
                                                   "idea"]),
        ("``Quoted,'' she said \u201cdouble\u201d \u2019tis O\u2019Neill\u2019s",
         ['"', "quoted", ",", '"', "she", "said", '"', "double", '"', "'", "tis", "o'neill",
          "'s"]),
        ("The students' books. No. 5 is no.", ["the", "students", "'", "books", ".", "no.", "5",
                                               "is", "no", "."]),
        ("does n't ( TREC style ) ?", ["does", "n't", "(", "trec", "style", ")", "?"]),
        ("Café NAÏVE 1990s 2-1", ["café", "naïve", "1990s", "2-1"]),
        ("", []),
        ("   \t\n ", []),
    ],
)
def test_tokenizer_follows_glove_6b_conventions(text, tokens):
    assert tokenize(text) == tokens


def test_tokenize_batch_matches_single_texts_and_cuts_exactly():
    rng = random.Random(0)
    pieces = ["u.s.", "e.g.", "no. 5", "...", "1,000", "well-known", "don't", "it's", "mr.",
              "word", "x" * 30, ",", "a-b-c-d", "ok", "\u201cq\u201d", "\x00"]
    texts = [" ".join(rng.choice(pieces) for _ in range(rng.randint(0, 120))) for _ in range(300)]
    full = [tokenize(t) for t in texts]
    assert tokenize_batch(texts) == full
    for max_tokens in (1, 3, 7, 20):
        # Long texts go through the prefix shortcut: the cut must never change a token.
        assert tokenize_batch(texts, max_tokens) == [f[:max_tokens] for f in full]
    assert tokenize_batch([]) == []


def test_tokenizer_speed_on_100k_sentences():
    rng = np.random.default_rng(0)
    words = np.array(["the", "movie", "wasn't", "great", ",", "but", "it's", "u.s.", "fun", "3.5"])
    texts = [" ".join(words[rng.integers(0, len(words), 20)]) + "." for _ in range(100_000)]
    import time

    start = time.perf_counter()
    docs = tokenize_batch(texts, 64)
    assert len(docs) == 100_000
    assert time.perf_counter() - start < 20  # a few seconds on 2 cores; generous for CI
