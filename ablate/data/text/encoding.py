"""Text encodings: how the raw texts of the three splits become model input.

An encoding is any callable ``encode(texts, max_len) -> EncodedText`` (:class:`TextEncoding`)
that turns ``{"train": [...], "val": [...], "test": [...]}`` into padded int64 ids ``(N,
max_len)`` per split plus what the model's embedding layer needs (its vocabulary and
initial vectors, or none for a model that brings its own). It sees all three splits at
once because a fitted vocabulary (:class:`GloveEncoding`) is built from the training
split and the held-out words that have a pretrained vector.

:func:`encoding_for` picks the encoding for a run; ``load_text_data`` accepts any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence

import numpy as np
import torch

from ablate.data.glove import build_embedding_matrix, load_glove
from ablate.data.text.tokenizer import tokenize_batch
from ablate.data.text.vocab import Vocabulary, build_vocab

if TYPE_CHECKING:
    from ablate.config import RunConfig

__all__ = ["EncodedText", "TextEncoding", "GloveEncoding", "encoding_for"]


@dataclass
class EncodedText:
    """The three splits as model input, plus what the model's embedding layer starts from."""

    ids: dict[str, torch.Tensor]  # split -> (N, max_len) int64, padded with pad_index
    lengths: dict[str, np.ndarray]  # split -> (N,) int64 tokens per example (<= max_len)
    pad_index: int
    vocab: list[str] | None = None  # index -> token; None if the tokenizer keeps its own
    embedding_matrix: torch.Tensor | None = None  # (V, D) float32; None = the model's own
    info: dict = field(default_factory=dict)  # facts logged as params (vectors, vocab sizes)


class TextEncoding(Protocol):
    """``encode(texts, max_len)``: split name -> raw texts in, :class:`EncodedText` out.

    ``texts`` holds ``"train"``, ``"val"`` and ``"test"``; the result has the same keys.
    """

    def __call__(self, texts: Mapping[str, Sequence[str]], max_len: int) -> EncodedText: ...


@dataclass(frozen=True)
class GloveEncoding:
    """GloVe-6B-style words -> ids of a per-data-set vocabulary initialised from word vectors.

    Words are tokenized as GloVe's corpus was (:mod:`ablate.data.text.tokenizer`) and cut
    at ``max_len``; the vocabulary (:func:`~ablate.data.text.vocab.build_vocab`) holds the
    training words plus held-out words with a vector; the embedding table has the vector
    of every word that has one and a random row (drawn with ``seed``) for the others.

    Args:
        embeddings: a GloVe file (``cfg.embeddings``); None = the packaged 6B 50-d vectors.
        seed: seed of the random rows of words without a vector.
    """

    embeddings: str | None = None
    seed: int = 0

    def __call__(self, texts: Mapping[str, Sequence[str]], max_len: int) -> EncodedText:
        wv = load_glove(self.embeddings)
        docs = {name: tokenize_batch(part, max_len) for name, part in texts.items()}

        def has_vector(tokens: list[str]) -> np.ndarray:
            return wv.lookup_ids(tokens) >= 0

        heldout = [doc for name, part in docs.items() if name != "train" for doc in part]
        vocab = build_vocab(docs["train"], extra_docs=heldout, has_vector=has_vector)
        embedding = build_embedding_matrix(vocab.tokens, wv, self.seed)
        pretrained = int(has_vector(vocab.tokens[2:]).sum())
        return EncodedText(
            ids={name: torch.from_numpy(vocab.encode(d, max_len)) for name, d in docs.items()},
            # Token lists are already cut at max_len, so these are the lengths the model sees.
            lengths={
                name: np.fromiter(map(len, d), dtype=np.int64, count=len(d))
                for name, d in docs.items()
            },
            pad_index=Vocabulary.pad_index,
            vocab=vocab.tokens,
            embedding_matrix=embedding,
            info={
                "embeddings": wv.name,
                "embedding_dim": wv.dim,
                "vocab_size": len(vocab),
                "vocab_pretrained": pretrained,
                "vocab_random": len(vocab) - 2 - pretrained,
            },
        )


def encoding_for(cfg: "RunConfig") -> TextEncoding:
    """The encoding a run uses: GloVe words for every built-in text model.

    Args:
        cfg: uses embeddings and seed.
    """
    return GloveEncoding(cfg.embeddings, cfg.seed)
