"""ViT-Lite: the CVT tokenizer and encoder with a zero-initialised class token instead of
sequence pooling. Registered as ``vit_lite_{L}_4_32`` (and ``_sine``); the official names
``vit_{L}_4_32`` are accepted as aliases so official checkpoints and scripts keep working.
"""

from __future__ import annotations

from ablate.models._builder import build_image_model
from ablate.models._registry import register_alias, register_model
from ablate.models.cct import _SIZES

__all__: list[str] = []


def _vit_lite(layers: int, suffix: str) -> None:
    name = f"vit_lite_{layers}_4_32{suffix}"
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
        seq_pool=False,
        img_size=32,
        num_classes=10,
        positional_embedding="sine" if suffix else "learnable",
    )

    def builder(**kwargs):
        return build_image_model(**{**arch, **kwargs})

    builder.__doc__ = f"{name}: ViT-Lite with {layers} layers, 4x4 patches, class token."
    builder.defaults = arch
    register_model(name, builder)
    register_alias(f"vit_{layers}_4_32{suffix}", name)


for _layers in (2, 4, 6, 7):
    for _suffix in ("", "_sine"):
        _vit_lite(_layers, _suffix)
