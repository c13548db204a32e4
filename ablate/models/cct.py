"""CCT: Compact Convolutional Transformers (Hassani et al., 2021).

A convolutional tokenizer (Conv k x k -> ReLU -> MaxPool, 1 or 2 layers) feeds a
transformer encoder whose output is sequence-pooled. Names ``cct_{L}_{k}x{n}_{img}``:
L encoder layers, kernel k, n conv layers, native image size; ``_sine`` uses the fixed
sinusoidal embedding (the official code silently ignores that request; we honour it),
``_c100`` has 100 classes, ``_fl`` 102 (Flowers-102).
"""

from __future__ import annotations

from ablate.models._builder import register_image_model

__all__ = ["SIZES"]

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


def _cct(layers: int, kernel: int, n_conv: int, img: int, classes: int, suffix: str) -> None:
    register_image_model(
        dict(
            SIZES[layers],
            name=f"cct_{layers}_{kernel}x{n_conv}_{img}{suffix}",
            kernel=kernel,
            n_conv_layers=n_conv,
            stride=max(1, kernel // 2 - 1),
            padding=max(1, kernel // 2),
            conv_bias=False,
            conv_activation=True,
            conv_max_pool=True,
            seq_pool=True,
            img_size=img,
            num_classes=100 if "c100" in suffix else 102 if suffix == "_fl" else classes,
            positional_embedding="sine" if "sine" in suffix else "learnable",
        ),
        f"CCT with {layers} layers, {n_conv} x {kernel}x{kernel} conv tokenizer.",
    )


for _layers, _kernel, _n_conv, _img, _classes, _suffixes in _NAMES:
    for _suffix in _suffixes:
        _cct(_layers, _kernel, _n_conv, _img, _classes, _suffix)
