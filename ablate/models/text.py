"""Text backbones over word vectors, with correct padding: text CCT / CVT / ViT-Lite and the
official ``text_transformer_*``.

A batch of int64 token ids ``(B, L)`` (padded with ``pad_index``) goes through

1. ``embedder.embeddings``: ``nn.Embedding(vocab_size, word_dim, padding_idx=pad_index)``,
   initialised from an ``embedding_matrix`` (e.g. GloVe rows for the data set's vocabulary);
2. ``tokenizer``: the word-vector sequence as a one-channel image ``(B, 1, L, word_dim)``,
   ``Conv2d(1, dim, (k, word_dim))`` -> ReLU -> MaxPool over the token axis (CCT), or a
   patchifying conv with kernel = stride = k and nothing after it (CVT / ViT-Lite); for
   ``text_transformer_*`` none: the word vectors are the tokens (``dim`` = ``word_dim``);
3. ``classifier``: the shared :class:`~ablate.models.compact.TransformerClassifier`.

Names ``text_cct_{2,4,6}``, ``text_cvt_{2,4,6}``, ``text_vit_lite_{2,4,6}`` (the official
``text_vit_{2,4,6}`` are aliases) and ``text_transformer_{2,4,6}`` with the official sizes;
``kernel_size`` 4 by default (the paper's text results), 1 and 2 also published. Parameter
and module names follow the official code (``embedder.embeddings.weight``,
``tokenizer.conv_layers.0.weight``, ``classifier.*``), see ``../shared/reference/cct_keys.json``.

Padding, where the official text models go wrong (their positional table has one row too
many, so a full-length input fails, and any mask trips an assertion):

- ``mask = ids != pad_index`` (or a mask the caller passes). Padded word vectors are set to
  exactly zero at the tokenizer input; ``padding_idx`` alone is not trusted because the
  padding row of a loaded or modified embedding table need not be zero.
- The token-level mask is True where the token's receptive field (conv window, then pool
  window) covers at least one real word; it is passed to every self-attention (padded keys
  get zero weight), to sequence pooling and to the token softmax of ``softmax_v`` /
  ``alpha_remix``.
- The word sequence is right-padded with zeros so that every conv window touching a real
  word exists, and every pool window over those; with no conv bias and ReLU >= 0 before the
  max-pool, a real token's value is then independent of how much padding follows, so
  appending padding never changes a logit (and a loop may trim all-padding columns).

Token counts for ``max_len=64``, kernel 4: CCT 34 (the official tokenizer drops the last
window over word 63 and makes 33 tokens, yet allocates 34 positional rows), CVT 16 and
ViT-Lite 16 + class token, text transformer 64 + class token (the official tables have
17, 18 and 66 rows: one surplus row, dropped on load).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ablate.exceptions import ConfigError
from ablate.models._contract import builder_args, check_token_ids, plain_arch
from ablate.models._registry import register_alias, register_model
from ablate.models.compact import (
    COMPACT_DEFAULTS,
    CompactTransformer,
    TransformerClassifier,
    conv_output_size,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ablate.models._contract import BuilderKwargs

__all__ = [
    "WordEmbedder", "TextConvTokenizer", "WordTokens", "TextCompactTransformer",
    "build_text_model", "TEXT_FAMILIES",
]

TEXT_FAMILIES = ("cct", "cvt", "vit_lite", "transformer")

# Official sizes per family and depth: heads, embedding dim, MLP ratio (layers = depth). The
# official text CVT-6 is 128-dim, unlike image CVT-6 and text CCT-6 / ViT-6; a text
# transformer's dim is the word-vector width (300 with the official vectors).
_SIZES: dict[str, dict[int, tuple[int, int | None, float]]] = {
    "cct": {2: (2, 128, 1.0), 4: (2, 128, 1.0), 6: (4, 256, 2.0)},
    "cvt": {2: (2, 128, 1.0), 4: (2, 128, 1.0), 6: (4, 128, 2.0)},
    "vit_lite": {2: (2, 128, 1.0), 4: (2, 128, 1.0), 6: (4, 256, 2.0)},
    "transformer": {2: (2, None, 1.0), 4: (2, None, 1.0), 6: (4, None, 2.0)},
}
# What every text model uses where neither its size nor the caller says otherwise.
_TEXT_DEFAULTS: dict[str, Any] = dict(
    COMPACT_DEFAULTS, num_classes=4, positional_embedding="sine", vocab_size=None,
    word_dim=None, embedding_matrix=None, max_len=64, pad_index=0, freeze_embeddings=False,
)


class WordEmbedder(nn.Module):
    """Token ids -> word vectors; key ``embeddings.weight`` (V, word_dim), initialised from
    ``embedding_matrix`` (None: N(0, 1)); the ``pad_index`` row starts at zero and gets no
    gradient; ``freeze`` keeps every vector fixed."""

    def __init__(
        self, vocab_size: int, word_dim: int, pad_index: int = 0,
        embedding_matrix: torch.Tensor | None = None, freeze: bool = False,
    ):
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, word_dim, padding_idx=pad_index)
        if embedding_matrix is not None:
            with torch.no_grad():
                self.embeddings.weight.copy_(embedding_matrix)
                self.embeddings.weight[pad_index].zero_()
        self.embeddings.weight.requires_grad_(not freeze)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings(ids)  # (B, L) -> (B, L, word_dim)


class TextConvTokenizer(nn.Module):
    """Word vectors (B, L, word_dim) + word mask (B, L) -> tokens (B, N, dim) + token mask (B, N).

    Key ``conv_layers.0.weight`` (dim, 1, kernel, word_dim); the conv has no bias, which the
    padding invariance relies on (an all-padding window must give exactly zero).

    The conv spans the word vector completely; ``kernel`` / ``stride`` / ``padding`` run
    along the token axis; CCT adds a ReLU and a MaxPool(3, 2, 1) over the token axis.
    """

    def __init__(
        self, word_dim: int, dim: int, kernel: int, stride: int, padding: int, activation: bool,
        max_pool: bool,
    ):
        super().__init__()
        if max_pool and not activation:
            # Max-pooling over a window that runs past the sequence end is only independent
            # of appended padding when every value is >= 0 (all-padding windows give 0).
            raise ValueError("the text tokenizer's max-pool needs the ReLU before it")
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.max_pool = max_pool
        self.conv_layers = nn.Sequential(
            nn.Conv2d(1, dim, (kernel, word_dim), (stride, 1), (padding, 0), bias=False),
            nn.ReLU() if activation else nn.Identity(),
            nn.MaxPool2d((3, 1), (2, 1), (1, 0)) if max_pool else nn.Identity(),
        )
        nn.init.kaiming_normal_(self.conv_layers[0].weight)

    def padded_length(self, length: int) -> int:
        """Words after right-padding so that every conv window touching a word in
        ``[0, length)`` exists, and then every pool window touching one of those.

        Without this, appending padding could create a window over the last real words
        that the shorter input never had, and the logits would depend on the padding.
        """
        k, s, p = self.kernel, self.stride, self.padding
        length = max(length, 1)
        last_conv = (length - 1 + p) // s  # last conv window touching word length-1
        n_conv = last_conv + 1
        if self.max_pool:
            # Pool window t covers conv outputs 2t-1 .. 2t+1; the last touching last_conv
            # is t = (last_conv+1)//2, which exists when n_conv >= 2t + 1.
            n_conv = max(n_conv, 2 * ((last_conv + 1) // 2) + 1)
        return max(length, (n_conv - 1) * s + k - 2 * p)

    def sequence_length(self, length: int) -> int:
        """Tokens produced for ``length`` words (the positional table needs this many rows)."""
        n = conv_output_size(self.padded_length(length), self.kernel, self.stride, self.padding)
        return conv_output_size(n, 3, 2, 1) if self.max_pool else n

    def token_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Word mask (B, L) -> token mask (B, N): True where the receptive field holds a real word.

        The same windows as the conv and the pool, applied to the 0/1 mask with max: a
        window is real iff any word in it is real. Conv zero-padding counts as padding.
        """
        length = mask.shape[1]
        m = mask.to(torch.float32).unsqueeze(1)  # (B, 1, L)
        m = F.pad(m, (self.padding, self.padding + self.padded_length(length) - length))
        m = F.max_pool1d(m, self.kernel, self.stride)  # (B, 1, N_conv)
        if self.max_pool:
            m = F.max_pool1d(m, 3, 2, 1)  # (B, 1, N)
        return m.squeeze(1) > 0

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = x.shape[1]
        mask = mask.to(torch.bool)
        # Exact zeros at padded positions, whatever the embedding row holds.
        x = torch.where(mask.unsqueeze(-1), x, x.new_zeros(()))  # (B, L, word_dim)
        x = F.pad(x, (0, 0, 0, self.padded_length(length) - length))  # (B, L', word_dim)
        x = self.conv_layers(x.unsqueeze(1))  # (B, 1, L', word_dim) -> (B, dim, N, 1)
        x = x.squeeze(-1).transpose(1, 2)  # (B, N, dim)
        token_mask = self.token_mask(mask)
        # An empty text (all padding) keeps its first token as a real key, so that attention
        # and pooling stay finite; that token is computed from zero vectors only.
        empty = ~token_mask.any(dim=1, keepdim=True)  # (B, 1)
        token_mask = torch.cat([token_mask[:, :1] | empty, token_mask[:, 1:]], dim=1)
        return x, token_mask


class WordTokens(nn.Module):
    """The ``text_transformer_*`` tokenizer: every word is a token, padded words exact zeros.

    ``(B, L, word_dim), (B, L) -> (B, L, word_dim), (B, L)``, like :class:`TextConvTokenizer`;
    no parameters.
    """

    def sequence_length(self, length: int) -> int:
        return length

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = mask.to(torch.bool)
        return torch.where(mask.unsqueeze(-1), x, x.new_zeros(())), mask


class TextCompactTransformer(CompactTransformer):
    """Embedder + text tokenizer + transformer classifier; ``forward(ids, mask=None)``.

    ``arch`` rebuilds the model except the word vectors themselves (those travel in the
    state dict). Official text checkpoints load with ``strict=True``: where their fixed sine
    table has one surplus row (CVT, ViT-Lite) that row is dropped on load (the table is the
    same, one row longer).
    """

    def __init__(
        self, embedder: WordEmbedder, tokenizer: nn.Module, classifier: TransformerClassifier, *,
        name: str, arch: dict, max_len: int, pad_index: int,
    ):
        super().__init__(tokenizer, classifier, name=name, arch=arch)
        self.embedder = embedder
        self.max_len = max_len
        self.pad_index = pad_index
        self.register_load_state_dict_pre_hook(_drop_official_surplus_pe_row)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids: (B, L) int64 with L <= max_len; mask: (B, L) bool, True = real word
        (default ``ids != pad_index``). Returns logits (B, num_classes)."""
        check_token_ids(self.name, ids, self.max_len,
                        "rebuild it with max_len>={n} or cut the texts")
        if mask is None:
            mask = ids != self.pad_index
        x = self.embedder(ids)  # (B, L, word_dim)
        tokens, token_mask = self.tokenizer(x, mask)  # (B, N, dim), (B, N)
        return self.classifier(tokens, token_mask)


def _drop_official_surplus_pe_row(module, state_dict, prefix, *_args) -> None:
    # The official text CVT / ViT-Lite tables have one row more than a max_len input makes
    # tokens. A fixed sine table's first rows are exactly ours: keep them, drop the surplus.
    key = prefix + "classifier.positional_emb"
    pe, value = module.classifier.positional_emb, state_dict.get(key)
    if (pe is not None and not pe.requires_grad and isinstance(value, torch.Tensor)
            and value.dim() == 3 and value.shape[1:] == (pe.shape[1] + 1, pe.shape[2])):
        state_dict[key] = value[:, : pe.shape[1]]


def _word_table(a: dict[str, Any]) -> torch.Tensor | None:
    """The initial word vectors; ``vocab_size`` / ``word_dim`` taken from them when omitted
    (and checked against them when given)."""
    matrix, name = a.pop("embedding_matrix"), a["name"]
    if matrix is not None:
        matrix = torch.as_tensor(matrix, dtype=torch.float32)
        if matrix.dim() != 2:
            raise ConfigError(f"{name}: embedding_matrix must be 2-D (vocab_size, word_dim); "
                              f"got shape {tuple(matrix.shape)}")
        for i, arg in enumerate(("vocab_size", "word_dim")):
            a[arg] = int(matrix.shape[i]) if a[arg] is None else a[arg]
        if tuple(matrix.shape) != (a["vocab_size"], a["word_dim"]):
            raise ConfigError(f"{name}: embedding_matrix has shape {tuple(matrix.shape)} but "
                              f"vocab_size={a['vocab_size']}, word_dim={a['word_dim']}")
    if a["vocab_size"] is None or a["word_dim"] is None:
        raise ConfigError(f"{name}: a text model needs vocab_size and word_dim, or an "
                          "embedding_matrix")
    for arg in ("vocab_size", "word_dim", "max_len", "kernel_size", "num_classes"):
        value = a.get(arg, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: {arg} must be an integer >= 1; got {value!r}")
    pad = a["pad_index"]
    if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < a["vocab_size"]:
        raise ConfigError(f"{name}: pad_index must be an integer in [0, {a['vocab_size']}); got "
                          f"{pad!r}")
    return matrix


def _tokenizer(a: dict[str, Any]) -> nn.Module:
    """The family's tokenizer, by the official rules (the CCT rule gives k4 s1 p2)."""
    family, k = a["family"], a.get("kernel_size")
    if family == "transformer":
        if a["word_dim"] % a["num_heads"]:
            raise ConfigError(f"{a['name']}: its {a['num_heads']} heads must divide the "
                              f"word-vector width, got word_dim={a['word_dim']}; use vectors "
                              f"whose width is a multiple of {a['num_heads']} (e.g. --embeddings "
                              "glove.6B.300d.txt)")
        return WordTokens()
    if family == "cct":
        return TextConvTokenizer(a["word_dim"], a["dim"], k, max(1, k // 2 - 1), max(1, k // 2),
                                 activation=True, max_pool=True)
    return TextConvTokenizer(a["word_dim"], a["dim"], k, k, 0, activation=False, max_pool=False)


def build_text_model(
    size: Mapping[str, Any], **kwargs: "Unpack[BuilderKwargs]"
) -> TextCompactTransformer:
    """A registered ``size`` (family, layers, heads, ...) with the caller's ``kwargs`` over it.

    ``vocab_size`` / ``word_dim`` come from ``embedding_matrix`` when omitted; the matrix
    itself is not part of ``arch`` (the word vectors travel in the state dict).
    """
    a = builder_args({**_TEXT_DEFAULTS, **size}, kwargs)
    if a["family"] not in TEXT_FAMILIES:
        raise ConfigError(f"text model family must be one of {', '.join(TEXT_FAMILIES)}; got "
                          f"{a['family']!r}")
    matrix = _word_table(a)
    embedder = WordEmbedder(a["vocab_size"], a["word_dim"], a["pad_index"], matrix,
                            freeze=a["freeze_embeddings"])
    tokenizer = _tokenizer(a)
    dim = a["word_dim"] if a["family"] == "transformer" else a["dim"]
    classifier = TransformerClassifier.from_args(
        a, dim=dim, seq_len=tokenizer.sequence_length(a["max_len"]), variable_length=True
    )
    return TextCompactTransformer(
        embedder, tokenizer, classifier, name=a["name"], arch=plain_arch(a),
        max_len=a["max_len"], pad_index=a["pad_index"],
    )


_FAMILY_DOC = {
    "cct": "conv(k words) + ReLU + max-pool tokenizer, sequence pooling",
    "cvt": "k-word patch tokenizer, sequence pooling",
    "vit_lite": "k-word patch tokenizer, class token",
    "transformer": "word vectors as tokens (no conv tokenizer), class token",
}


def _register(family: str, layers: int) -> None:
    name = f"text_{family}_{layers}"
    heads, dim, ratio = _SIZES[family][layers]
    size: dict[str, Any] = dict(name=name, family=family, num_layers=layers, num_heads=heads,
                                mlp_ratio=ratio, seq_pool=family in ("cct", "cvt"))
    if family != "transformer":
        size.update(dim=dim, kernel_size=4)

    def builder(**kwargs: Any) -> TextCompactTransformer:
        return build_text_model(size, **kwargs)

    doc = f"text {family.upper()} with {layers} layers, {heads} heads: {_FAMILY_DOC[family]}."
    shown = dict(size, max_len=64, positional_embedding="sine")
    register_model(name, builder, task="text", defaults=shown, doc=doc)


for _family in TEXT_FAMILIES:
    for _layers in (2, 4, 6):
        _register(_family, _layers)
for _layers in (2, 4, 6):
    register_alias(f"text_vit_{_layers}", f"text_vit_lite_{_layers}")
