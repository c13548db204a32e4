"""The compact transformers of "Escaping the Big Data Paradigm with Compact Transformers"
(Hassani et al., 2021): their building blocks, shared with the text models, and the three
image families, which differ only in the tokenizer and the pooling:

- CCT ``cct_{L}_{k}x{n}_{img}``: a convolutional tokenizer (Conv k x k -> ReLU -> MaxPool,
  n layers), L encoder layers, sequence pooling; ``_sine`` uses the fixed sinusoidal
  embedding (the official code silently ignores that request; we honour it), ``_c100`` has
  100 classes, ``_fl`` 102 (Flowers-102);
- CVT ``cvt_{L}_4_32``: one 4x4 patchifying conv, sequence pooling;
- ViT-Lite ``vit_lite_{L}_4_32``: the CVT tokenizer with a zero-initialised class token
  instead of sequence pooling (the official names ``vit_{L}_4_32`` are aliases).

Module and parameter names follow the official Compact-Transformers code exactly
(``tokenizer.conv_layers.0.0.weight``, ``classifier.blocks.0.self_attn.qkv.weight``, ...),
so official checkpoints load with ``strict=True``; see ``../shared/reference/README.md``.
The attention function itself is not written here: every attention site holds a
:class:`VariantAttention` that wraps a function from the ``variants`` registry, resolved once
at construction, with the variant's parameters (e.g. ``alpha``) as non-persistent buffers
(they never appear in a state dict, and a schedule changes them in place every step).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import stochastic_depth

import variants
from ablate.exceptions import ConfigError
from ablate.models._contract import VariantSitesMixin, builder_args, plain_arch
from ablate.models._registry import register_alias, register_model
from ablate.models.learned_alpha import AlphaParameter

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ablate.models._contract import BuilderKwargs

__all__ = [
    "VariantAttention", "SelfAttention", "EncoderLayer", "ConvTokenizer", "TransformerClassifier",
    "CompactTransformer", "COMPACT_DEFAULTS", "sinusoidal_embedding", "conv_output_size",
    "SIZES", "PATCH_TOKENIZER", "build_image_model", "register_image_model",
]

# The official defaults of every compact family (reference README), declared once: a builder
# merges its registered size, then the caller's BuilderKwargs, over them.
COMPACT_DEFAULTS: dict[str, Any] = dict(
    num_classes=10, positional_embedding="learnable", norm_placement="cct", dropout=0.0,
    attention_dropout=0.1, stochastic_depth=0.1, variant=variants.VariantSpec(),
    apply_to="attention",
)


class VariantAttention(nn.Module):
    """One attention site: a registered variant plus its parameters as 0-d buffers.

    Args:
        variant: registry name (see ``ablate variants``).
        params: overrides of the variant's parameter defaults, e.g. ``{"beta": 1.0}``.
        needs_bias: this site passes an additive score bias (relative position bias, additive
            mask): a variant that cannot take one is refused at construction.
        learned / heads: ``alpha=learned``: alpha is a trainable
            :class:`~ablate.models.learned_alpha.AlphaParameter` (per layer, or per head of the
            site's ``heads``) instead of a buffer, and is not among ``param_names``.
    """

    def __init__(
        self, variant: str = "softmax", params: Mapping[str, float] | None = None, *,
        needs_bias: bool = False, learned: "variants.LearnedAlpha | None" = None,
        heads: int | None = None,
    ):
        super().__init__()
        spec = variants.get_attention(variant)
        self.variant = spec.name
        self.fn = spec.fn
        self.accepts_bias = spec.accepts_bias  # variants without bias= run where none is passed
        if needs_bias and not self.accepts_bias:
            raise ConfigError(self._no_bias_message())
        self._none_params: dict[str, None] = {}
        resolved = spec.resolve_params(params)
        self.learned_alpha = None
        if learned is not None:
            resolved.pop("alpha")
            self.learned_alpha = AlphaParameter(learned, heads, f"a {variant!r} site")
        for key, value in resolved.items():
            if value is None:
                # A derived parameter (beta = 1 - alpha): a constant None, fixed at construction.
                self._none_params[key] = None
            else:
                self.register_buffer(key, torch.tensor(float(value)), persistent=False)
        self.param_names = tuple(n for n in spec.params if n in resolved)

    @classmethod
    def of(
        cls, spec: variants.VariantSpec, *, heads: int | None = None, needs_bias: bool = False
    ) -> "VariantAttention":
        """A site running a parsed variant (its values, and a learned alpha if it has one)."""
        return cls(spec.name, spec.params, needs_bias=needs_bias, learned=spec.learned,
                   heads=heads)

    def _no_bias_message(self) -> str:
        return (
            f"attention variant {self.variant!r} cannot take an additive score bias, which this "
            "model needs (relative position bias or additive attention mask); its function "
            "must accept bias= (fn(q, k, v, *, mask=None, bias=None, dropout_p=0.0, "
            "scale=None, **params), see variants/_base.py)"
        )

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None, dropout_p: float = 0.0, scale: float | None = None,
    ) -> torch.Tensor:
        """(B, H, Nq, D), (B, H, Nk, D), (B, H, Nk, Dv) -> (B, H, Nq, Dv), as in
        ``variants/_base.py``; ``bias`` is passed on only when given."""
        params = {n: getattr(self, n) for n in self.param_names if n not in self._none_params}
        params.update(self._none_params)
        if self.learned_alpha is not None:
            params["alpha"] = self.learned_alpha()  # () or (H, 1, 1)
        if bias is None:
            return self.fn(q, k, v, mask=mask, dropout_p=dropout_p, scale=scale, **params)
        if not self.accepts_bias:
            raise ConfigError(self._no_bias_message())
        return self.fn(q, k, v, mask=mask, bias=bias, dropout_p=dropout_p, scale=scale, **params)

    @torch.no_grad()
    def set_params(self, **values: float) -> None:
        """Change parameters in place (same tensors: no recompilation under torch.compile)."""
        for key, value in values.items():
            if key not in self.param_names:
                raise ValueError(f"variant {self.variant!r} has no parameter {key!r}; "
                                 f"its parameters: {', '.join(self.param_names) or 'none'}")
            if key in self._none_params:
                del self._none_params[key]
                ref = next(self.buffers(), None)
                buf = torch.tensor(float(value), device=ref.device if ref is not None else None)
                self.register_buffer(key, buf, persistent=False)
            else:
                getattr(self, key).fill_(float(value))

    def extra_repr(self) -> str:
        vals = {n: None if n in self._none_params else round(getattr(self, n).item(), 6)
                for n in self.param_names}
        return f"variant={self.variant!r}" + (f", params={vals}" if vals else "")


class SelfAttention(nn.Module):
    """Multi-head self-attention; keys ``qkv.weight`` (no bias) and ``proj.{weight,bias}``."""

    def __init__(
        self, dim: int, num_heads: int, attention_dropout: float = 0.1,
        projection_dropout: float = 0.0, core: VariantAttention | None = None,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.attn_dropout = attention_dropout
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(projection_dropout)
        self.core = core if core is not None else VariantAttention("softmax")

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, D)
        p = self.attn_dropout if self.training else 0.0
        x = self.core(q, k, v, mask=mask, dropout_p=p, scale=self.scale)  # (B, H, N, D)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class EncoderLayer(nn.Module):
    """Transformer encoder layer with the official names and a choice of norm placement.

    ``norm_placement="cct"`` is the official order: the residual stream is *replaced* by
    ``norm1(x)`` after attention (needed to reproduce official checkpoints)::

        x = x + drop_path(attn(pre_norm(x))); x = norm1(x)
        x = x + drop_path(dropout(linear2(dropout(gelu(linear1(x))))))

    ``"pre"`` is standard pre-norm: ``x = x + drop_path(mlp(norm1(x)))``.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_hidden: int, dropout: float = 0.0,
        attention_dropout: float = 0.1, drop_path: float = 0.0, norm_placement: str = "cct",
        core: VariantAttention | None = None,
    ):
        super().__init__()
        if norm_placement not in ("cct", "pre"):
            raise ValueError(f"norm_placement must be 'cct' or 'pre', got {norm_placement!r}")
        self.norm_placement = norm_placement
        self.pre_norm = nn.LayerNorm(dim)
        self.self_attn = SelfAttention(dim, num_heads, attention_dropout, dropout, core)
        self.linear1 = nn.Linear(dim, mlp_hidden)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.linear2 = nn.Linear(mlp_hidden, dim)
        self.dropout2 = nn.Dropout(dropout)
        self.drop_path = drop_path

    def _dp(self, x: torch.Tensor) -> torch.Tensor:
        # Per-sample stochastic depth (torchvision's implementation), identity in eval.
        return stochastic_depth(x, self.drop_path, "row", self.training) if self.drop_path else x

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self._dp(self.self_attn(self.pre_norm(x), mask))
        h = self.norm1(x)
        if self.norm_placement == "cct":
            x = h  # the official order: the residual stream is replaced by norm1(x)
        h = self.linear2(self.dropout1(F.gelu(self.linear1(h))))
        return x + self._dp(self.dropout2(h))


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class ConvTokenizer(nn.Module):
    """Image -> token sequence. Keys ``conv_layers.{i}.0.weight`` (and ``.bias`` for CVT).

    Each layer is Conv2d -> (ReLU) -> (MaxPool2d(3, 2, 1)); the CCT stacks use an
    intermediate width of 64 channels, CVT / ViT-Lite a single patchifying conv.
    """

    def __init__(
        self, in_chans: int, dim: int, n_layers: int, kernel: int, stride: int, padding: int,
        bias: bool, activation: bool, max_pool: bool, mid_chans: int = 64,
    ):
        super().__init__()
        chans = [in_chans] + [mid_chans] * (n_layers - 1) + [dim]
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.max_pool = max_pool
        self.conv_layers = nn.Sequential(*[
            nn.Sequential(
                nn.Conv2d(chans[i], chans[i + 1], kernel, stride, padding, bias=bias),
                nn.ReLU() if activation else nn.Identity(),
                nn.MaxPool2d(3, 2, 1) if max_pool else nn.Identity(),
            )
            for i in range(n_layers)
        ])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def sequence_length(self, img_size: int) -> int:
        size = img_size
        for _ in self.conv_layers:
            size = conv_output_size(size, self.kernel, self.stride, self.padding)
            if self.max_pool:
                size = conv_output_size(size, 3, 2, 1)
        if size < 1:
            raise ValueError(f"image size {img_size} is too small for this tokenizer")
        return size * size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_layers(x)  # (B, C, H', W')
        return x.flatten(2).transpose(1, 2)  # (B, N, C)


def sinusoidal_embedding(n_positions: int, dim: int) -> torch.Tensor:
    """The official fixed sine/cosine table, (1, n_positions, dim)."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    i = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(i, 2, rounding_mode="floor") / dim)
    pe = torch.empty(n_positions, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle[:, 0::2])
    pe[:, 1::2] = torch.cos(angle[:, 1::2])
    return pe.float().unsqueeze(0)


def _positional_embedding(kind: str, n_tokens: int, dim: int) -> nn.Parameter | None:
    """(1, n_tokens, dim) or None, for ``kind`` (see :class:`TransformerClassifier`)."""
    if kind == "learnable":
        table = nn.Parameter(torch.zeros(1, n_tokens, dim))
        nn.init.trunc_normal_(table, std=0.2)
        return table
    if kind == "sine":
        return nn.Parameter(sinusoidal_embedding(n_tokens, dim), requires_grad=False)
    if kind == "none":
        return None
    raise ValueError(f"positional_embedding must be learnable, sine or none; got {kind!r}")


class TransformerClassifier(nn.Module):
    """Positional embedding, encoder blocks, final norm, sequence pooling (or class token), fc.

    Args:
        seq_len: tokens coming from the tokenizer (a class token adds one more).
        positional_embedding: ``learnable`` (trunc-normal std 0.2), ``sine`` (fixed, stored
            as a non-trainable parameter like the official code) or ``none``.
        seq_pool: attention pooling over tokens (CCT/CVT); False = zero-initialised class
            token (ViT-Lite).
        variant / apply_to: which attention function runs where (a parsed
            :class:`~variants.VariantSpec`; other sites run plain softmax).
        variable_length: accept fewer tokens than ``seq_len`` (text); images must match.
        The rest as in :data:`COMPACT_DEFAULTS` and the families' sizes.
    """

    def __init__(
        self, *, dim: int, num_layers: int, num_heads: int, mlp_ratio: float, num_classes: int,
        seq_len: int, seq_pool: bool, positional_embedding: str, dropout: float,
        attention_dropout: float, stochastic_depth: float, norm_placement: str,
        variant: variants.VariantSpec, apply_to: str, variable_length: bool = False,
    ):
        super().__init__()
        self.variable_length = variable_length
        if apply_to not in ("attention", "seqpool", "both"):
            raise ConfigError(f"apply_to must be attention, seqpool or both; got {apply_to!r}")
        if apply_to != "attention" and not seq_pool:
            raise ConfigError(f"apply_to={apply_to!r} needs sequence pooling, but this model "
                              "pools with a class token; use apply_to='attention'")
        self.seq_pool, self.apply_to, plain = seq_pool, apply_to, variants.VariantSpec()
        in_layers = variant if apply_to in ("attention", "both") else plain
        if not seq_pool:
            self.class_emb = nn.Parameter(torch.zeros(1, 1, dim))
        n_tokens = seq_len + (0 if seq_pool else 1)
        self.positional_emb = _positional_embedding(positional_embedding, n_tokens, dim)
        self.dropout = nn.Dropout(dropout)
        if seq_pool:
            self.attention_pool = nn.Linear(dim, 1)
            in_pool = variant if apply_to != "attention" else plain
            self.pool_core = VariantAttention.of(in_pool, heads=1)  # one query, one head
        rates = torch.linspace(0, stochastic_depth, num_layers).tolist()
        self.blocks = nn.ModuleList(
            EncoderLayer(dim, num_heads, int(dim * mlp_ratio), dropout, attention_dropout, rate,
                         norm_placement, VariantAttention.of(in_layers, heads=num_heads))
            for rate in rates
        )
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)
        self.apply(self._init_weights)

    @classmethod
    def from_args(cls, args: Mapping[str, Any], **given: Any) -> "TransformerClassifier":
        """The encoder of a builder's resolved ``args`` (keys it does not take, such as the
        tokenizer's, are the builder's own); ``given`` (``seq_len``, ...) wins."""
        params = inspect.signature(cls.__init__).parameters
        return cls(**{k: v for k, v in args.items() if k in params and k not in given}, **given)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:  # LayerNorm starts at ones / zeros by default
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def pool(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Sequence pooling as attention: one query whose score for token i is w.x_i + b.

        With q = 1 (B, 1, 1, 1), k = scores (B, 1, N, 1) and scale 1, softmax(q k^T) is the
        official softmax(attention_pool(x), dim=1); V is the token sequence itself, so a
        variant here transforms x exactly as the first published softmax^T(V) experiment did.
        """
        B, N, C = x.shape
        scores = self.attention_pool(x)  # (B, N, 1)
        q = scores.new_ones(B, 1, 1, 1)
        out = self.pool_core(q, scores.unsqueeze(1), x.unsqueeze(1), mask=mask, scale=1.0)
        return out.reshape(B, C)  # (B, 1, 1, C) -> (B, C)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, N, C) tokens; mask: (B, N) True = real token
        if not self.seq_pool:
            x = torch.cat([self.class_emb.expand(x.shape[0], -1, -1), x], dim=1)
            if mask is not None:
                mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        if self.positional_emb is not None:
            n = x.shape[1]
            rows = self.positional_emb.shape[1]
            if n > rows or (n < rows and not self.variable_length):
                raise ValueError(f"input gives {n} tokens but the positional embedding has "
                                 f"{rows}; build the model for this input size (img_size=...)")
            x = x + self.positional_emb[:, :n]
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        x = self.pool(x, mask) if self.seq_pool else x[:, 0]
        return self.fc(x)

    def attention_sites(self) -> list[VariantAttention]:
        return [m for m in self.modules() if isinstance(m, VariantAttention)]


class CompactTransformer(VariantSitesMixin, nn.Module):
    """Tokenizer + transformer classifier, with the variant's parameters settable in place.

    ``arch`` holds the keyword arguments that rebuild this exact model (saved in our
    checkpoints); ``name`` the registry name it was created from.
    """

    def __init__(
        self, tokenizer: nn.Module, classifier: TransformerClassifier, *, name: str, arch: dict
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.classifier = classifier
        self.name = name
        self.arch = dict(arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.tokenizer(x))

    def attention_sites(self) -> list[VariantAttention]:
        return self.classifier.attention_sites()


# -- the image families ------------------------------------------------------------------
def build_image_model(
    size: Mapping[str, Any], **kwargs: "Unpack[BuilderKwargs]"
) -> CompactTransformer:
    """A registered ``size`` (layers, tokenizer, ...) with the caller's ``kwargs`` over it."""
    a = builder_args({**COMPACT_DEFAULTS, "img_size": 32, "in_chans": 3, **size}, kwargs)
    tokenizer = ConvTokenizer(
        a["in_chans"], a["dim"], a["n_conv_layers"], a["kernel"], a["stride"], a["padding"],
        bias=a["conv_bias"], activation=a["conv_activation"], max_pool=a["conv_max_pool"],
    )
    classifier = TransformerClassifier.from_args(
        a, seq_len=tokenizer.sequence_length(a["img_size"])
    )
    return CompactTransformer(tokenizer, classifier, name=a["name"], arch=plain_arch(a))


def register_image_model(size: dict, doc: str) -> None:
    """Register ``size["name"]``: a builder that merges the caller's kwargs over ``size``."""

    def builder(**kwargs: Any) -> CompactTransformer:
        return build_image_model(size, **kwargs)

    register_model(size["name"], builder, task="image", defaults=size, doc=doc)


# The CVT / ViT-Lite tokenizer: one 4x4 patchifying conv with bias, no activation, no pool.
PATCH_TOKENIZER = dict(
    kernel=4, n_conv_layers=1, stride=4, padding=0,
    conv_bias=True, conv_activation=False, conv_max_pool=False,
)

# encoder sizes: layers, heads, embedding dim, MLP ratio
SIZES = {
    2: dict(num_layers=2, num_heads=2, dim=128, mlp_ratio=1.0),
    4: dict(num_layers=4, num_heads=2, dim=128, mlp_ratio=1.0),
    6: dict(num_layers=6, num_heads=4, dim=256, mlp_ratio=2.0),
    7: dict(num_layers=7, num_heads=4, dim=256, mlp_ratio=2.0),
    14: dict(num_layers=14, num_heads=6, dim=384, mlp_ratio=3.0),
}

# CCT: (layers, kernel, conv layers, image size, default classes, suffixes)
_CCT_NAMES = [
    (2, 3, 2, 32, 10, ("", "_sine")),
    (4, 3, 2, 32, 10, ("", "_sine")),
    (6, 3, 1, 32, 10, ("", "_sine")),
    (6, 3, 2, 32, 10, ("", "_sine")),
    (7, 3, 1, 32, 10, ("", "_sine", "_c100", "_sine_c100")),
    (7, 3, 2, 32, 10, ("", "_sine")),
    (7, 7, 2, 224, 102, ("", "_sine")),
    (14, 7, 2, 224, 1000, ("",)),
    (14, 7, 2, 384, 1000, ("", "_fl")),
]

for _layers, _kernel, _n_conv, _img, _classes, _suffixes in _CCT_NAMES:
    for _suffix in _suffixes:
        register_image_model(
            dict(
                SIZES[_layers], name=f"cct_{_layers}_{_kernel}x{_n_conv}_{_img}{_suffix}",
                kernel=_kernel, n_conv_layers=_n_conv, stride=max(1, _kernel // 2 - 1),
                padding=max(1, _kernel // 2), conv_bias=False, conv_activation=True,
                conv_max_pool=True, seq_pool=True, img_size=_img,
                num_classes=100 if "c100" in _suffix else 102 if _suffix == "_fl" else _classes,
                positional_embedding="sine" if "sine" in _suffix else "learnable",
            ),
            f"CCT with {_layers} layers, {_n_conv} x {_kernel}x{_kernel} conv tokenizer.",
        )

# CVT (sequence pooling) and ViT-Lite (class token): 4x4 patches, native size 32
for _layers in (2, 4, 6, 7):
    for _suffix in ("", "_sine"):
        for _family, _seq_pool, _what in (("cvt", True, "CVT"), ("vit_lite", False, "ViT-Lite")):
            register_image_model(
                dict(
                    SIZES[_layers], **PATCH_TOKENIZER,
                    name=f"{_family}_{_layers}_4_32{_suffix}", seq_pool=_seq_pool, img_size=32,
                    num_classes=10, positional_embedding="sine" if _suffix else "learnable",
                ),
                f"{_what} with {_layers} layers, 4x4 patches, "
                f"{'sequence pooling' if _seq_pool else 'class token'}.",
            )
        register_alias(f"vit_{_layers}_4_32{_suffix}", f"vit_lite_{_layers}_4_32{_suffix}")
