"""Image data sets loaded once into uint8 tensors: digits, torchvision sets, ImageFolder.

Every loader returns three :class:`~ablate.data.Split` objects with ``x`` uint8
``(N, C, H, W)`` at the model's resolution and ``y`` int64 ``(N,)``, all on the CPU, plus
the batched train / eval transforms from :mod:`ablate.data.augment`.

Splits. Held-out splits (validation always; test when the data set has none) are
stratified by class and drawn with the FIXED seed :data:`SPLIT_SEED`, never with
``cfg.seed``: every run of a comparison sees exactly the same train / val / test images,
and ``cfg.seed`` only varies initialisation, batch order and augmentation.
- digits (scikit-learn, 1,797 8x8 images, no official test split): ``test_fraction`` of
  all images is held out for test, then ``val_fraction`` of the rest for validation.
- cifar10 / cifar100 / mnist / fashion_mnist / svhn: test = the official test split;
  validation = ``val_fraction`` of the official training split.
- folder:PATH: ``PATH/train`` (+ optional ``PATH/val`` | ``valid`` | ``validation`` and
  ``PATH/test``) are used as given, and missing ones are held out from train like above;
  a plain ``PATH/<class>/<image>`` folder is split like digits.

Where validation comes from (``cfg.val_split``, resolved by the caller; "auto" is read as
"train"):
- "train": as above, held out of the training split.
- "test_half": validation and test are two fixed halves of the official test split
  (stratified, :data:`SPLIT_SEED`), and training uses the whole training split. This is
  the leak-free choice when the initial weights were trained on all training images (the
  official CIFAR checkpoints were): a hold-out from train would be images they have seen.
  Only data sets with an official test split have it (not digits, nor a folder without
  ``test/``; nor a folder with its own ``val/``, which would go unused).
``bundle.info`` records the choice (``val_split``, ``val_source``, ``test_source`` and the
split sizes) for the run's params.

Resolution. ``img_size`` (the model's) is applied once at load time with antialiased
resizing; folder images are resized so the shorter side is ``img_size`` and then
centre-cropped to a square (keeps the aspect ratio). ``img_size=None`` keeps the native
size. Channels: ``in_chans=None`` keeps the data set's own (1 for digits / MNIST-likes,
3 otherwise); 1 -> 3 repeats the grey channel, 3 -> 1 takes ITU-R 601 luminance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from ablate.data.augment import (
    DATASET_STATS,
    ImageEvalTransform,
    ImageTrainTransform,
    channel_stats,
    derive_seed,
    resolve_augment,
)
from ablate.data.bundle import DataBundle, Split
from ablate.data.image_readers import NATIVE_CHANNELS, TORCHVISION_DATASETS, read_dataset
from ablate.data.image_splits import SPLIT_SEED, check_val_split, hold_out, test_halves
from ablate.exceptions import ConfigError, DataError

if TYPE_CHECKING:
    from ablate.config import RunConfig

__all__ = ["load_image_data", "SPLIT_SEED", "TORCHVISION_DATASETS", "NATIVE_CHANNELS"]

_CHUNK = 4096  # images per resize / colour-conversion call: bounds the float temporaries


def load_image_data(
    cfg: "RunConfig",
    *,
    img_size: int | None,
    in_chans: int | None,
    preprocessing: Mapping[str, Any] | None = None,
) -> DataBundle:
    """Load ``cfg.dataset`` as uint8 splits at ``img_size`` with ``in_chans`` channels.

    Args:
        cfg: run configuration (dataset, data_dir, download, val/test fractions,
            val_split (already resolved from "auto"), augment / mixup / cutmix, seed).
        img_size: square side the model expects; None keeps the native resolution.
        in_chans: channels the model expects (1 or 3); None keeps the data set's own.
        preprocessing: a timm: / hf: model's own pipeline; its mean / std replace the
            data set's normalisation (the constants the pretrained weights expect).

    Raises:
        DataError: files missing (with where they are expected and ``--download``), a
            download failing, or a folder that is not an ImageFolder layout.
        ConfigError: an invalid img_size / in_chans / test_fraction, or val_split
            "test_half" for a data set without an official test split.
    """
    if img_size is not None and (
        isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1
    ):
        raise ConfigError(f"img_size: must be a positive integer, got {img_size!r}")
    if in_chans not in (None, 1, 3):
        raise ConfigError(f"in_chans: image models take 1 or 3 channels, got {in_chans!r}")
    name = cfg.dataset
    val_split = check_val_split(cfg)
    raw = read_dataset(name, cfg.data_dir, cfg.download, img_size)
    if val_split == "test_half":
        train, val, test, stratified, sources = test_halves(raw, name)
    else:
        train, val, test, stratified, sources = hold_out(raw, cfg)
    native_chans, native_size = int(train.x.shape[1]), int(train.x.shape[-1])
    target_chans = native_chans if in_chans is None else in_chans
    size = _target_size(name, train, img_size)
    train, val, test = (
        Split(_convert_channels(_resize(s.x, size), target_chans), s.y) for s in (train, val, test)
    )
    mean, std, stats_source = _normalisation(
        name, train, native_chans, target_chans, preprocessing
    )
    num_classes = len(raw.class_names)
    plan = resolve_augment(name, cfg.augment, size, mixup=cfg.mixup, cutmix=cfg.cutmix)
    info = {
        "source": raw.source,
        "train_size": len(train),
        "val_size": len(val),
        "test_size": len(test),
        "split_seed": SPLIT_SEED,
        "split_stratified": stratified,
        "val_split": val_split,
        "val_source": sources[0],
        "test_source": sources[1],
        "native_img_size": native_size,
        "native_in_chans": native_chans,
        "augment": plan.describe(),
        "norm_mean": ",".join(f"{m:.4f}" for m in mean),
        "norm_std": ",".join(f"{s:.4f}" for s in std),
        "norm_source": stats_source,
    }
    return DataBundle(
        name=name,
        task="image",
        train=train,
        val=val,
        test=test,
        num_classes=num_classes,
        class_names=list(raw.class_names),
        in_chans=target_chans,
        img_size=size,
        train_transform=ImageTrainTransform(
            plan, mean, std, num_classes, seed=derive_seed(cfg.seed, "augment")
        ),
        eval_transform=ImageEvalTransform(mean, std),
        info=info,
    )


def _target_size(name: str, train: Split, img_size: int | None) -> int:
    """``img_size``, else the native size of square images (non-square ones need one)."""
    if img_size is None and train.x.shape[-2] != train.x.shape[-1]:
        raise DataError(
            f"{name}: images are {train.x.shape[-2]}x{train.x.shape[-1]} (not square); "
            "pass --img-size"
        )
    return int(train.x.shape[-1]) if img_size is None else img_size


def _normalisation(
    name: str,
    train: Split,
    native_chans: int,
    target_chans: int,
    preprocessing: Mapping[str, Any] | None,
) -> tuple[Any, Any, str]:
    """(mean, std, where they come from): the model's own pipeline, else the literature's
    constants when the stored channels are the data set's own (repeated for grey -> RGB),
    else measured on the training split."""
    from ablate.data.preprocessing import library_normalisation

    kind = "folder" if name.startswith("folder:") else name
    library = library_normalisation(preprocessing, target_chans)
    if library is not None:
        return library[0], library[1], "model"
    if kind in DATASET_STATS and target_chans == native_chans:
        return DATASET_STATS[kind][0], DATASET_STATS[kind][1], "published"
    if kind in DATASET_STATS and native_chans == 1:
        mean, std = DATASET_STATS[kind]
        return mean * target_chans, std * target_chans, "published"
    mean, std = channel_stats(train.x)
    return mean, std, "train split"


# ---------------------------------------------------------------------------- tensors


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply ``fn`` over chunks of the batch dimension (bounds float temporaries)."""
    if x.shape[0] <= _CHUNK:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(_CHUNK)])


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), antialiased; no-op when equal."""
    from torchvision.transforms.v2 import functional as F

    if x.shape[-2:] == (size, size):
        return x
    return _chunked(lambda part: F.resize(part, [size, size], antialias=True), x)


def _convert_channels(x: torch.Tensor, chans: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (N, chans, H, W): grey repeated to RGB, RGB to luminance."""
    from torchvision.transforms.v2 import functional as F

    have = x.shape[1]
    if have == chans:
        return x
    if have == 1 and chans == 3:
        return x.expand(-1, 3, -1, -1).contiguous()  # (N, 3, H, W)
    if have == 3 and chans == 1:
        return _chunked(F.rgb_to_grayscale, x)  # (N, 1, H, W)
    raise ConfigError(f"in_chans: cannot convert {have}-channel images to {chans} channels")
