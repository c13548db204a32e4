"""Text encodings: how the raw texts of the three splits become model input.

An encoding is any callable ``encode(texts, max_len) -> EncodedText`` (:class:`TextEncoding`)
that turns ``{"train": [...], "val": [...], "test": [...]}`` into padded int64 ids ``(N,
max_len)`` per split plus what the model's embedding layer needs. It sees all three splits
at once because a fitted vocabulary (:class:`GloveEncoding`) is built from the training
split and the held-out words that have a pretrained vector. :func:`encoding_for` picks
:class:`GloveEncoding` or :class:`TokenizerEncoding` for a run.

Vocabulary policy (:func:`build_vocab`): every token of the training split plus the
validation / test tokens that have a pretrained vector. The latter adds no label
information -- their vectors were pretrained on unrelated text -- and keeps test words like
"magnificent" from collapsing into ``<unk>`` just because training happened not to contain
them. Index 0 is ``<pad>``, 1 is ``<unk>``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch

from ablate.data.glove import PAD_TOKEN, UNK_TOKEN, build_embedding_matrix, load_glove
from ablate.data.text.tokenizer import tokenize_batch
from ablate.exceptions import ConfigError, DataError, first_line

if TYPE_CHECKING:
    from ablate.config import RunConfig

__all__ = [
    "EncodedText", "TextEncoding", "GloveEncoding", "TokenizerEncoding", "Vocabulary",
    "build_vocab", "encoding_for",
]


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
    """``encode(texts, max_len)``: split name (train, val, test) -> raw texts in,
    :class:`EncodedText` with the same keys out."""

    def __call__(self, texts: Mapping[str, Sequence[str]], max_len: int) -> EncodedText: ...


@dataclass(frozen=True)
class GloveEncoding:
    """GloVe-6B-style words (:mod:`ablate.data.text.tokenizer`, cut at ``max_len``) -> ids of a
    per-data-set vocabulary (:func:`build_vocab`) initialised from word vectors (a random row,
    drawn with ``seed``, for words without one); ablate's own models."""

    embeddings: str | None = None  # a GloVe file; None = the packaged 6B 50-d vectors
    seed: int = 0  # of the random rows of words without a vector

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
            lengths={k: np.array(list(map(len, d)), dtype=np.int64) for k, d in docs.items()},
            pad_index=Vocabulary.pad_index, vocab=vocab.tokens, embedding_matrix=embedding,
            info={"embeddings": wv.name, "embedding_dim": wv.dim, "vocab_size": len(vocab),
                  "vocab_pretrained": pretrained, "vocab_random": len(vocab) - 2 - pretrained},
        )


@dataclass(frozen=True)
class TokenizerEncoding:
    """Texts -> ids with a ``timm:`` / ``hf:`` model's Hugging Face tokenizer (named by its
    entry's preprocessing), padded to ``max_len``: its own special tokens and ``pad_token_id``;
    no vocabulary or embedding table (the model has its own)."""

    tokenizer: str  # a Hub id or a local directory holding the tokenizer files
    download: bool = False  # fetch it when it is not in the local cache

    def load(self) -> Any:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise ConfigError('hf:... models need the optional package transformers; install it '
                              'with pip install -e ".[hf]"') from None
        try:
            tok = AutoTokenizer.from_pretrained(self.tokenizer, local_files_only=not self.download)
        except (OSError, ValueError) as err:
            raise DataError(f"tokenizer {self.tokenizer!r} not found locally "
                            f"({first_line(err, 200)}); pass "
                            "--download to fetch it, or save it next to the model "
                            "(tokenizer.save_pretrained(DIR))") from None
        if tok.pad_token_id is None:
            raise DataError(f"tokenizer {self.tokenizer!r} has no padding token; batches of texts "
                            "need one")
        return tok

    def __call__(self, texts: Mapping[str, Sequence[str]], max_len: int) -> Any:
        tok, ids, lengths = self.load(), {}, {}
        for split, part in texts.items():
            enc = tok(
                list(part), truncation=True, max_length=max_len, padding="max_length",
                return_attention_mask=True, return_tensors="np",
            )
            ids[split] = torch.from_numpy(np.asarray(enc["input_ids"], dtype=np.int64))
            lengths[split] = np.asarray(enc["attention_mask"], dtype=np.int64).sum(axis=1)
        return EncodedText(ids, lengths, int(tok.pad_token_id),
                           info={"tokenizer": self.tokenizer, "vocab_size": len(tok)})


# -- the vocabulary of GloveEncoding --------------------------------------------------


class Vocabulary:
    """Token <-> id mapping (``tokens``: index -> token) with ``<pad>`` at 0, ``<unk>`` at 1."""

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
        """Ids (N, max_len) int64 of tokenized ``docs``: cut after max_len, padded with 0,
        unknown -> 1. An example without tokens becomes one ``<unk>``: no row is all padding."""
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
    train_docs: Sequence[Sequence[str]], *, extra_docs: Sequence[Sequence[str]] = (),
    has_vector: Callable[[list[str]], np.ndarray] | None = None, min_freq: int = 1,
) -> Vocabulary:
    """Vocabulary of the training tokens plus the held-out tokens (``extra_docs``) for which
    ``has_vector`` (tokens -> bool array) is True: ``<pad>``, ``<unk>``, training tokens by
    falling frequency (ties: first seen), then the extra tokens likewise. Training tokens
    without a vector need ``min_freq`` occurrences (a random vector seen once cannot be
    learned); pretrained ones always join."""
    counts = Counter(chain.from_iterable(train_docs))
    ranked = [t for t, _ in counts.most_common() if t not in (PAD_TOKEN, UNK_TOKEN)]
    if min_freq > 1:
        rare = [t for t in ranked if counts[t] < min_freq]
        keep = {t for t, ok in zip(rare, has_vector(rare)) if ok} if has_vector and rare else ()
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


def encoding_for(
    cfg: "RunConfig", preprocessing: Mapping[str, Any] | None = None
) -> TextEncoding:
    """The encoding a run uses: the model library's tokenizer when its preprocessing names
    one (``{"tokenizer": NAME_OR_DIR}``), else GloVe words (``cfg.embeddings``, ``cfg.seed``).
    """
    name = (preprocessing or {}).get("tokenizer")
    if name:
        return TokenizerEncoding(str(name), cfg.download)
    return GloveEncoding(cfg.embeddings, cfg.seed)
