"""ViT-Lite: the CVT tokenizer and encoder with a zero-initialised class token instead of
sequence pooling. Registered as ``vit_lite_{L}_4_32`` (and ``_sine``); the official names
``vit_{L}_4_32`` are accepted as aliases so official checkpoints and scripts keep working.
"""

from __future__ import annotations

from ablate.models._registry import register_alias
from ablate.models.cct import PATCH_TOKENIZER, SIZES, register_image_model

__all__: list[str] = []

for _layers in (2, 4, 6, 7):
    for _suffix in ("", "_sine"):
        _name = f"vit_lite_{_layers}_4_32{_suffix}"
        register_image_model(
            dict(
                SIZES[_layers], **PATCH_TOKENIZER,
                name=_name, seq_pool=False, img_size=32, num_classes=10,
                positional_embedding="sine" if _suffix else "learnable",
            ),
            f"ViT-Lite with {_layers} layers, 4x4 patches, class token.",
        )
        register_alias(f"vit_{_layers}_4_32{_suffix}", _name)
