"""CVT: Compact Vision Transformers: a 4x4 patchifying conv, encoder, sequence pooling.

Names ``cvt_{L}_4_32`` (and ``_sine``): L encoder layers, patch 4, native image size 32.
"""

from __future__ import annotations

from ablate.models.cct import PATCH_TOKENIZER, SIZES, register_image_model

__all__: list[str] = []

for _layers in (2, 4, 6, 7):
    for _suffix in ("", "_sine"):
        register_image_model(
            dict(
                SIZES[_layers], **PATCH_TOKENIZER,
                name=f"cvt_{_layers}_4_32{_suffix}", seq_pool=True, img_size=32, num_classes=10,
                positional_embedding="sine" if _suffix else "learnable",
            ),
            f"CVT with {_layers} layers, 4x4 patches, sequence pooling.",
        )
