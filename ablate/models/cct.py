"""CCT: Compact Convolutional Transformers (Hassani et al., 2021), and the one builder behind
every image family's named sizes (CVT and ViT-Lite use it too).

A convolutional tokenizer (Conv k x k -> ReLU -> MaxPool, 1 or 2 layers) feeds a
transformer encoder whose output is sequence-pooled. Names ``cct_{L}_{k}x{n}_{img}``:
L encoder layers, kernel k, n conv layers, native image size; ``_sine`` uses the fixed
sinusoidal embedding (the official code silently ignores that request; we honour it),
``_c100`` has 100 classes, ``_fl`` 102 (Flowers-102).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ablate.models._blocks import (
    COMPACT_DEFAULTS,
    CompactTransformer,
    ConvTokenizer,
    TransformerClassifier,
)
from ablate.models._contract import builder_args, plain_arch
from ablate.models._registry import register_model

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ablate.models._contract import BuilderKwargs

__all__ = ["SIZES", "PATCH_TOKENIZER", "build_image_model", "register_image_model"]


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

# (layers, kernel, conv layers, image size, default classes, suffixes)
_NAMES = [
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


for _layers, _kernel, _n_conv, _img, _classes, _suffixes in _NAMES:
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
