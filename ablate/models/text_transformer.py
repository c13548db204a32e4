"""The official text transformers without a convolutional tokenizer: ``text_transformer_{2,4,6}``.

The word vectors *are* the tokens: ids ``(B, L)`` -> ``embedder.embeddings`` (word vectors,
``word_dim`` wide) -> a zero-initialised class token in front -> fixed sine positional
embedding -> encoder blocks -> final norm -> the class token's row -> ``fc``. The embedding
dim of the transformer is the word-vector width (300 with the official 300-d vectors), so a
model's head count must divide ``word_dim``.

Sizes, parameter counts and state-dict keys follow the official ``text_transformer_*``
(``embedder.embeddings.weight``, ``classifier.class_emb``, ``classifier.positional_emb``,
``classifier.blocks.{i}.*``, ``classifier.norm.*``, ``classifier.fc.*``; see
``cct_model_table.json``): 2 layers / 2 heads / MLP ratio 1, 4 / 2 / 1, 6 / 4 / 2. The
official positional table has one surplus row (64 words + class token = 65 rows used of
66); it is dropped on load, as for the other official text models.

Everything is reused from :mod:`ablate.models.text`: the embedder, the shared
:class:`~ablate.models._blocks.TransformerClassifier` with its padding mask (padded words
are exact zeros, padded keys get no attention weight and stay out of softmax^T(V); the
class token is always real), the length checks and the official-checkpoint load hook. Only
the tokenizer is an identity here.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ablate.exceptions import ConfigError
from ablate.models._blocks import TransformerClassifier
from ablate.models._contract import variant_arch
from ablate.models._registry import register_model
from ablate.models.text import TextCompactTransformer, WordEmbedder, word_table
from variants import VariantSpec

__all__ = ["WordTokens", "build_text_transformer", "TEXT_TRANSFORMER_SIZES"]

# Official sizes: layers, heads, MLP ratio (the embedding dim is the word-vector width).
TEXT_TRANSFORMER_SIZES: dict[int, dict[str, Any]] = {
    2: dict(num_layers=2, num_heads=2, mlp_ratio=1.0),
    4: dict(num_layers=4, num_heads=2, mlp_ratio=1.0),
    6: dict(num_layers=6, num_heads=4, mlp_ratio=2.0),
}


class WordTokens(nn.Module):
    """The identity tokenizer: every word is a token; padded words become exact zeros.

    Same interface as :class:`~ablate.models.text.TextConvTokenizer`:
    ``(B, L, word_dim), (B, L) -> (B, L, word_dim), (B, L)``; no parameters.
    """

    def sequence_length(self, length: int) -> int:
        return length

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = mask.to(torch.bool)
        # Zeros whatever the embedding row holds: a padded word never carries a value.
        return torch.where(mask.unsqueeze(-1), x, x.new_zeros(())), mask


def build_text_transformer(
    *,
    name: str,
    num_layers: int,
    num_heads: int,
    mlp_ratio: float,
    num_classes: int = 4,
    vocab_size: int | None = None,
    word_dim: int | None = None,
    embedding_matrix: Any = None,
    max_len: int = 64,
    pad_index: int = 0,
    freeze_embeddings: bool = False,
    positional_embedding: str = "sine",
    norm_placement: str = "cct",
    dropout: float = 0.0,
    attention_dropout: float = 0.1,
    stochastic_depth: float = 0.1,
    variant: VariantSpec = VariantSpec(),
    apply_to: str = "attention",
    **unknown: Any,
) -> TextCompactTransformer:
    """Build one ``text_transformer_*``; the registered names fill in the sizes.

    Args:
        vocab_size / word_dim / embedding_matrix: the word-vector table (sizes are taken
            from the matrix when omitted); ``word_dim`` is also the embedding dim.
        max_len: longest input in words; the positional table has ``max_len + 1`` rows.
        pad_index: padding id (masked out everywhere).
        apply_to: only ``attention``: the model pools with its class token.
        Other arguments as for the other text models.
    """
    if unknown:
        raise TypeError(f"{name}: unknown argument(s) {', '.join(sorted(unknown))}")
    if apply_to != "attention":
        raise ConfigError(
            f"{name}: apply_to={apply_to!r} needs sequence pooling, but this model uses a class "
            "token; use apply_to='attention'"
        )
    matrix, vocab_size, word_dim = word_table(name, vocab_size, word_dim, embedding_matrix)
    if word_dim % num_heads:
        raise ConfigError(
            f"{name}: its {num_heads} heads must divide the word-vector width, got "
            f"word_dim={word_dim}; use vectors whose width is a multiple of {num_heads} "
            "(e.g. --embeddings glove.6B.300d.txt)"
        )
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ConfigError(f"{name}: max_len must be an integer >= 1; got {max_len!r}")
    if not 0 <= pad_index < vocab_size:
        raise ConfigError(f"{name}: pad_index must be in [0, {vocab_size}); got {pad_index!r}")
    arch = dict(
        name=name, num_layers=num_layers, num_heads=num_heads, mlp_ratio=mlp_ratio,
        num_classes=num_classes, vocab_size=vocab_size, word_dim=word_dim, max_len=max_len,
        pad_index=pad_index, freeze_embeddings=freeze_embeddings,
        positional_embedding=positional_embedding, norm_placement=norm_placement,
        dropout=dropout, attention_dropout=attention_dropout, stochastic_depth=stochastic_depth,
        **variant_arch(variant), apply_to=apply_to,
    )
    embedder = WordEmbedder(vocab_size, word_dim, pad_index, matrix, freeze=freeze_embeddings)
    tokenizer = WordTokens()
    classifier = TransformerClassifier(
        dim=word_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        mlp_hidden=int(word_dim * mlp_ratio),
        num_classes=num_classes,
        seq_len=tokenizer.sequence_length(max_len),
        seq_pool=False,
        positional_embedding=positional_embedding,
        dropout=dropout,
        attention_dropout=attention_dropout,
        stochastic_depth=stochastic_depth,
        norm_placement=norm_placement,
        variant=variant,
        apply_to=apply_to,
        variable_length=True,
    )
    return TextCompactTransformer(
        embedder, tokenizer, classifier, name=name, arch=arch, max_len=max_len, pad_index=pad_index
    )


def _register(layers: int) -> None:
    name = f"text_transformer_{layers}"
    defaults = dict(TEXT_TRANSFORMER_SIZES[layers], name=name)

    def builder(**kwargs: Any) -> TextCompactTransformer:
        return build_text_transformer(**{**defaults, **kwargs})

    sizes = TEXT_TRANSFORMER_SIZES[layers]
    doc = (
        f"text transformer with {layers} layers, {sizes['num_heads']} heads: word vectors as "
        "tokens (no conv tokenizer), class token."
    )
    shown = dict(defaults, seq_pool=False, max_len=64, positional_embedding="sine")
    register_model(name, builder, task="text", defaults=shown, doc=doc)


for _layers in TEXT_TRANSFORMER_SIZES:
    _register(_layers)
