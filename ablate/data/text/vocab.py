"""Vocabulary: token <-> id mapping, the vocabulary policy, and padded id matrices.

Policy (:func:`build_vocab`): every token of the training split plus the validation /
test tokens that have a pretrained vector. The latter adds no label information -- their
vectors were pretrained on unrelated text -- and keeps test words like "magnificent" from
collapsing into ``<unk>`` just because training happened not to contain them. Index 0 is
``<pad>``, 1 is ``<unk>``.
"""

from __future__ import annotations

from collections import Counter
from itertools import chain, repeat
from typing import Callable, Sequence

import numpy as np

from ablate.data.glove import PAD_TOKEN, UNK_TOKEN

__all__ = ["Vocabulary", "build_vocab"]


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

        Args:
            docs: tokenized examples.
            max_len: width of the id matrix.
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
