"""CVT: Compact Vision Transformers: a 4x4 patchifying conv, encoder, sequence pooling.

Names ``cvt_{L}_4_32`` (and ``_sine``): L encoder layers, patch 4, native image size 32.
"""

from __future__ import annotations

from ablate.models._builder import build_image_model
from ablate.models._registry import register_model
from ablate.models.cct import _SIZES

__all__: list[str] = []


def _cvt(layers: int, suffix: str) -> None:
    name = f"cvt_{layers}_4_32{suffix}"
    arch = dict(
        _SIZES[layers],
        name=name,
        kernel=4,
        n_conv_layers=1,
        stride=4,
        padding=0,
        conv_bias=True,
        conv_activation=False,
        conv_max_pool=False,
        seq_pool=True,
        img_size=32,
        num_classes=10,
        positional_embedding="sine" if suffix else "learnable",
    )

    def builder(**kwargs):
        return build_image_model(**{**arch, **kwargs})

    builder.__doc__ = f"{name}: CVT with {layers} layers, 4x4 patches, sequence pooling."
    builder.defaults = arch
    register_model(name, builder)


for _layers in (2, 4, 6, 7):
    for _suffix in ("", "_sine"):
        _cvt(_layers, _suffix)
