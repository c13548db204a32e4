"""The GloVe-6B-style word tokenizer: lowercased, Stanford PTB conventions.

GloVe's 6B vectors were trained on text split by the Stanford PTB tokenizer and
lowercased, so each form below has its own vector and the tokenizer reproduces it:
punctuation is its own token, PTB contractions are split (``don't`` -> ``do n't``,
``it's`` -> ``it 's``, ``can't`` -> ``ca n't``), numbers (``1,000``, ``3.5``), hyphenated
words (``well-known``), dotted abbreviations (``u.s.``, ``e.g.``) and common titles
(``mr.``, ``dr.``) stay whole.
"""

from __future__ import annotations

import re
from typing import Sequence

__all__ = ["tokenize", "tokenize_batch", "join_texts", "TEXT_SEPARATOR"]

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
TEXT_SEPARATOR = "\x00"  # joins texts for whole-batch regex passes; never a token


def join_texts(texts: Sequence[str]) -> str:
    """All texts joined by :data:`TEXT_SEPARATOR` (a NUL inside one becomes a space), so that
    regex substitutions run once over the batch; ``split(TEXT_SEPARATOR)`` undoes it."""
    joined = TEXT_SEPARATOR.join(texts)
    if joined.count(TEXT_SEPARATOR) != len(texts) - 1:
        joined = TEXT_SEPARATOR.join(t.replace(TEXT_SEPARATOR, " ") for t in texts)
    return joined


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


def tokenize_batch(texts: Sequence[str], max_tokens: int | None = None) -> list[list[str]]:
    """Tokenize many texts, each cut to ``max_tokens`` tokens (None: all).

    The lowercasing and contraction rules run once over all texts joined together, and
    with ``max_tokens`` a long text is first tokenized from a prefix only -- redone on the
    full text when the prefix yields too few tokens, so the result is always exact.
    """
    if not texts:
        return []
    pieces = _normalise(join_texts(texts)).split(TEXT_SEPARATOR)
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
