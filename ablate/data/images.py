"""Image data sets, loaded once into uint8 tensors: digits, torchvision sets, ImageFolder.

:func:`load_image_data` reads a data set as it is stored (its own train / test, a folder's
train/ val/ test/), holds out the splits it lacks, resizes and converts the channels once,
and returns a :class:`~ablate.data.DataBundle` of uint8 ``(N, C, H, W)`` splits plus its
batched transforms. This file reads in that order: loading, reading, splits, resolution,
then the transforms.

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

``cfg.val_split`` (resolved by the caller; "auto" reads as "train"): "train" holds
validation out of the training split as above; "test_half" makes validation and test two
fixed stratified halves of the official test split and trains on the whole training split,
the leak-free choice when the initial weights were trained on all training images (the
official CIFAR checkpoints were). Only data sets with an official test split have it.
``bundle.info`` records the choice (``val_split``, ``val_source``, ``test_source``, sizes).

Resolution. ``img_size`` (the model's) is applied once at load time with antialiased
resizing; folder images are resized so the shorter side is ``img_size`` and then
centre-cropped. ``img_size=None`` keeps the native size. Channels: ``in_chans=None`` keeps
the data set's own; 1 -> 3 repeats the grey channel, 3 -> 1 takes ITU-R 601 luminance.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch

from ablate.config import AUGMENT_CHOICES
from ablate.data.bundle import SPLIT_SEED, DataBundle, RawImages, Split, holdout_rows
from ablate.data.policies import to_device
from ablate.exceptions import ConfigError, DataError

if TYPE_CHECKING:
    from ablate.config import RunConfig

__all__ = [
    "load_image_data", "SPLIT_SEED", "DATASET_STATS", "CIFAR_LIKE", "FLIP_SAFE", "AugmentPlan",
    "resolve_augment", "derive_seed", "channel_stats", "normalisation", "library_normalisation",
    "random_crop", "random_hflip", "random_crop_flip", "ImageEvalTransform",
    "ImageTrainTransform",
]

_CHUNK = 4096  # images per resize / colour-conversion call: bounds the float temporaries


def load_image_data(
    cfg: "RunConfig", *, img_size: int | None, in_chans: int | None,
    preprocessing: Mapping[str, Any] | None = None,
) -> DataBundle:
    """Load ``cfg.dataset`` as uint8 splits at ``img_size`` with ``in_chans`` channels (None:
    the data set's own); ``preprocessing``: a timm: / hf: model's own pipeline, whose mean /
    std replace the data set's normalisation (the constants its pretrained weights expect).

    Raises DataError for missing files (saying where and ``--download``), a failed download
    or a folder that is not an ImageFolder layout; ConfigError for an invalid img_size /
    in_chans / test_fraction, or val_split "test_half" without an official test split.
    """
    if img_size is not None and (
        isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1
    ):
        raise ConfigError(f"img_size: must be a positive integer, got {img_size!r}")
    if in_chans not in (None, 1, 3):
        raise ConfigError(f"in_chans: image models take 1 or 3 channels, got {in_chans!r}")
    name = cfg.dataset
    val_split = _check_val_split(cfg)
    raw = _read(name, cfg.data_dir, cfg.download, img_size)
    if val_split == "test_half":
        train, val, test, stratified, sources = _test_halves(raw, name)
    else:
        train, val, test, stratified, sources = _hold_out(raw, cfg)
    native_chans, native_size = int(train.x.shape[1]), int(train.x.shape[-1])
    chans = native_chans if in_chans is None else in_chans
    size = _target_size(name, train, img_size)
    train, val, test = (
        Split(_convert_channels(_resize(s.x, size), chans), s.y) for s in (train, val, test)
    )
    mean, std, stats_source = normalisation(name, train.x, native_chans, chans, preprocessing)
    plan = resolve_augment(name, cfg.augment, size, mixup=cfg.mixup, cutmix=cfg.cutmix)
    info = {
        "source": raw.source, "train_size": len(train), "val_size": len(val),
        "test_size": len(test), "split_seed": SPLIT_SEED, "split_stratified": stratified,
        "val_split": val_split, "val_source": sources[0], "test_source": sources[1],
        "test_held_out": sources[1].startswith("holdout"),  # test_fraction shaped the test set
        "native_img_size": native_size, "native_in_chans": native_chans,
        "augment": plan.describe(), "norm_mean": ",".join(f"{m:.4f}" for m in mean),
        "norm_std": ",".join(f"{s:.4f}" for s in std), "norm_source": stats_source,
    }
    classes = len(raw.class_names)
    train_transform = ImageTrainTransform(plan, mean, std, classes,
                                          seed=derive_seed(cfg.seed, "augment"))
    return DataBundle(
        name=name, task="image", train=train, val=val, test=test, num_classes=classes,
        class_names=list(raw.class_names), in_chans=chans, img_size=size,
        train_transform=train_transform, eval_transform=ImageEvalTransform(mean, std), info=info,
    )


# ------------------------------------------------------------------- reading from disk


def _read(name: str, data_dir: str, download: bool, img_size: int | None) -> RawImages:
    if name == "digits":
        return _read_digits()
    from ablate.data.readers import TORCHVISION_DATASETS, read_folder, read_torchvision

    if name.startswith("folder:"):
        return read_folder(name[len("folder:") :], img_size)
    if name in TORCHVISION_DATASETS:
        return read_torchvision(name, Path(data_dir).expanduser(), download)
    # dataset_task() validates names before we are called; this guards direct use
    raise ConfigError(f"unknown image dataset {name!r}; choose one of digits, "
                      f"{', '.join(TORCHVISION_DATASETS)} or folder:PATH")


def _read_digits() -> RawImages:
    """scikit-learn's digits: 1,797 8x8 grey images with values 0..16 -> uint8 0..255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float64)  # (N, 8, 8), 0..16
    x = (images * (255.0 / 16.0)).round_().clamp_(0, 255).to(torch.uint8).unsqueeze(1)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    names = [str(int(t)) for t in bunch.target_names]
    return RawImages(Split(x, y), None, None, names, "sklearn.datasets.load_digits")


# ---------------------------------------------------------------------- held-out splits

# (train, val, test, stratified, (val_source, test_source))
_Splits = tuple[Split, Split, Split, bool, tuple[str, str]]


def _check_val_split(cfg: "RunConfig") -> str:
    """The val_split to use ("auto" unresolved reads as "train"); errors before any decoding."""
    from ablate.config import VAL_SPLIT_CHOICES

    choice, name = cfg.val_split, cfg.dataset
    if choice not in VAL_SPLIT_CHOICES:
        raise ConfigError(f"val_split: {choice!r} is not valid; choose one of "
                          f"{', '.join(VAL_SPLIT_CHOICES)}")
    if choice != "test_half":
        return "train"
    if name == "digits":
        raise ConfigError("val_split: 'test_half' needs an official test split and digits has "
                          "none (its test set is held out of the same 1,797 images); the valid "
                          "choice is 'train'")
    if name.startswith("folder:"):
        root = Path(name[len("folder:") :]).expanduser()
        if not (root / "test").is_dir():
            raise ConfigError(f"val_split: 'test_half' needs an official test split and {name} "
                              "has no test/ folder; the valid choice is 'train' (or add "
                              "PATH/train and PATH/test)")
        from ablate.data.readers import VAL_DIR_NAMES

        if any((root / d).is_dir() for d in VAL_DIR_NAMES):
            raise ConfigError("val_split: 'test_half' would leave the validation folder of "
                              f"{name} unused; the valid choice is 'train' (it uses that folder "
                              "for validation)")
    return "test_half"


def _hold_out(raw: RawImages, cfg: "RunConfig") -> _Splits:
    """Missing test / val splits held out of train, stratified, with :data:`SPLIT_SEED`."""
    train, test, val, stratified = raw.train, raw.test, raw.val, True
    test_source = "folder test/" if cfg.dataset.startswith("folder:") else "official test split"
    if test is None:
        if not 0.0 < cfg.test_fraction < 1.0:
            raise ConfigError(f"test_fraction: must be in (0, 1) for {cfg.dataset} (it has no "
                              f"test split), got {cfg.test_fraction}")
        train, test, stratified = _split(train, cfg.test_fraction, cfg.dataset, "test")
        test_source = f"holdout of all images ({cfg.test_fraction:g}, seed {SPLIT_SEED})"
    val_source = "folder validation split"
    if val is None:
        train, val, ok = _split(train, cfg.val_fraction, cfg.dataset, "validation")
        stratified &= ok
        val_source = f"train holdout ({cfg.val_fraction:g}, seed {SPLIT_SEED})"
    return train, val, test, stratified, (val_source, test_source)


def _test_halves(raw: RawImages, name: str) -> _Splits:
    """val_split="test_half": the whole training split; the test split halved, stratified,
    by :data:`SPLIT_SEED` only (half A validates, half B tests)."""
    if raw.test is None or raw.val is not None:  # _check_val_split rules these out first
        raise ConfigError(f"val_split: 'test_half' is not available for {name}")
    test, val, stratified = _split(raw.test, 0.5, name, "validation", pool="test")
    sources = tuple(f"official test split, stratified half {h} (seed {SPLIT_SEED})" for h in "AB")
    return raw.train, val, test, stratified, sources  # type: ignore[return-value]


def _split(
    data: Split, fraction: float, name: str, what: str, *, pool: str = "training"
) -> tuple[Split, Split, bool]:
    """(kept, held out, stratified) by :func:`~ablate.data.bundle.holdout_rows`; a warning
    when some class is too small to stratify."""
    try:
        keep, held, stratified = holdout_rows(data.y.numpy(), fraction)
    except ValueError:
        raise DataError(f"{name}: {len(data)} {pool} images are too few to hold out "
                        f"{fraction:g} for {what}") from None
    if not stratified:
        warnings.warn(f"{name}: some class has too few images to stratify the {what} split; "
                      "using a random (unstratified) split", stacklevel=3)
    keep_t, held_t = torch.from_numpy(keep), torch.from_numpy(held)
    return Split(data.x[keep_t], data.y[keep_t]), Split(data.x[held_t], data.y[held_t]), stratified


# ------------------------------------------------------------- resolution and channels


def _target_size(name: str, train: Split, img_size: int | None) -> int:
    """``img_size``, else the native size of square images (non-square ones need one)."""
    if img_size is None and train.x.shape[-2] != train.x.shape[-1]:
        raise DataError(f"{name}: images are {train.x.shape[-2]}x{train.x.shape[-1]} (not "
                        "square); pass --img-size")
    return int(train.x.shape[-1]) if img_size is None else img_size


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


# ------------------------------------------------------------------ batched transforms
# Whole uint8 batches (B, C, H, W) on the batch's device (airbench: no DataLoader workers),
# never waiting for it: random choices are drawn on the CPU and copied over non-blocking
# (ablate.data.policies.to_device); nothing reads a device value back. ImageTrainTransform,
# each stage optional (an AugmentPlan): random crop (zero padding, per-sample offsets) and
# horizontal flip as one gather -> RandAugment / AutoAugment (ablate.data.policies) ->
# float32, normalised -> MixUp or CutMix, one picked per batch (torchvision v2). Every random
# choice comes from a private CPU generator seeded from cfg.seed (derive_seed): the same on
# every device, never shifting the global stream; state_dict carries it across a resume.

# Per-channel mean / std of the official training splits, in [0, 1] units (the values
# used throughout the CIFAR / MNIST literature, including the CCT training scripts).
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
}

# Data sets on which "auto" means the paper's full CIFAR recipe.
CIFAR_LIKE = ("cifar10", "cifar100", "svhn")
# Data sets whose classes survive a horizontal flip (digits and house numbers do not;
# Fashion-MNIST is kept flip-free to match the brief's "auto = crop only" for MNIST-likes).
FLIP_SAFE = ("cifar10", "cifar100", "folder")

# The paper's recipe (CCT on CIFAR): RandAugment(2, 9), MixUp 0.8, CutMix 1.0.
_RECIPE_MIXUP, _RECIPE_CUTMIX = 0.8, 1.0
_RANDAUGMENT_OPS, _RANDAUGMENT_MAGNITUDE = 2, 9


@dataclass(frozen=True)
class AugmentPlan:
    """What the training transform does; resolved once from the config and data set."""

    crop_padding: int = 0  # zero padding (pixels) of the random crop; 0 = no crop
    flip: bool = False  # random horizontal flip, p = 0.5 per sample
    policy: str | None = None  # "randaugment", "autoaugment" or None
    autoaugment_policy: str = "CIFAR10"  # torchvision's AutoAugmentPolicy name
    mixup_alpha: float = 0.0  # MixUp Beta(alpha, alpha); 0 = off
    cutmix_alpha: float = 0.0  # CutMix Beta(alpha, alpha); 0 = off

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def describe(self) -> str:
        """One short line for logs / MLflow params, e.g. 'crop(pad=4)+flip+randaugment(2,9)'."""
        parts = [f"crop(pad={self.crop_padding})"] if self.crop_padding else []
        parts += ["flip"] if self.flip else []
        if self.policy == "randaugment":
            parts.append(f"randaugment({_RANDAUGMENT_OPS},{_RANDAUGMENT_MAGNITUDE})")
        elif self.policy == "autoaugment":
            parts.append(f"autoaugment({self.autoaugment_policy.lower()})")
        parts += [f"mixup({self.mixup_alpha:g})"] if self.mixup_alpha > 0 else []
        parts += [f"cutmix({self.cutmix_alpha:g})"] if self.cutmix_alpha > 0 else []
        return "+".join(parts) or "none"


def resolve_augment(
    dataset: str, augment: str, img_size: int, *, mixup: float | None = None,
    cutmix: float | None = None,
) -> AugmentPlan:
    """Turn ``--augment`` / ``--mixup`` / ``--cutmix`` into a concrete :class:`AugmentPlan`.

    "auto": CIFAR-like sets (cifar10/100, svhn) get the paper's recipe: crop + flip (not
    for svhn) + RandAugment(2, 9) + MixUp 0.8 / CutMix 1.0; digits / mnist /
    fashion_mnist get a small random translation (crop) only; folder:PATH gets crop + flip.
    "crop", "crop_flip": exactly that. "randaugment" / "autoaugment": crop, flip where the
    data set is flip-safe, then the policy. "none": nothing. MixUp/CutMix default to the
    recipe's alphas only for "auto" on CIFAR-like sets and are off otherwise; an explicit
    ``mixup`` / ``cutmix`` value always wins (0 = off). ``img_size``: the stored side;
    the crop padding is 4 px at 32 px and scales with it.
    """
    if augment not in AUGMENT_CHOICES:
        raise ConfigError(f"augment: {augment!r} is not valid; choose one of "
                          f"{', '.join(AUGMENT_CHOICES)}")
    for key, value in (("mixup", mixup), ("cutmix", cutmix)):
        if value is not None and not value >= 0:
            raise ConfigError(f"{key}: alpha must be >= 0 (0 = off), got {value}")
    kind = "folder" if dataset.startswith("folder:") else dataset
    # 4 px of padding at 32 px (the CIFAR recipe), scaled to the stored resolution.
    padding = max(1, round(4 * img_size / 32))
    flip_safe = kind in FLIP_SAFE
    recipe = augment == "auto" and kind in CIFAR_LIKE
    grey = ("svhn", "mnist", "fashion_mnist", "digits")
    policy_name = "IMAGENET" if kind == "folder" else "SVHN" if kind in grey else "CIFAR10"
    if augment == "none":
        plan = AugmentPlan()
    elif augment == "crop":
        plan = AugmentPlan(crop_padding=padding)
    elif augment == "crop_flip":
        plan = AugmentPlan(crop_padding=padding, flip=True)
    elif augment in ("randaugment", "autoaugment"):
        plan = AugmentPlan(
            crop_padding=padding, flip=flip_safe, policy=augment, autoaugment_policy=policy_name
        )
    elif recipe:
        plan = AugmentPlan(crop_padding=padding, flip=flip_safe, policy="randaugment")
    else:  # auto on digits / mnist / fashion_mnist / folder
        plan = AugmentPlan(crop_padding=padding, flip=kind == "folder")
    return replace(
        plan, mixup_alpha=(_RECIPE_MIXUP if recipe else 0.0) if mixup is None else float(mixup),
        cutmix_alpha=(_RECIPE_CUTMIX if recipe else 0.0) if cutmix is None else float(cutmix),
    )


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one purpose, so generators seeded from one ``cfg.seed`` differ."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def channel_stats(
    x: torch.Tensor, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a uint8 batch ``(N, C, H, W)`` in [0, 1] units.

    Accumulates in float64 over chunks so a 50k-image split never becomes one float copy.
    A channel with zero spread gets std 1.0 (normalising it would divide by zero).
    """
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"channel_stats needs uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    c, count = x.shape[1], 0
    total, total_sq = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for part in x.split(chunk):
        v = part.to(torch.float64).div_(255.0).transpose(0, 1).reshape(c, -1)  # (C, n*H*W)
        total += v.sum(1)
        total_sq += v.square().sum(1)
        count += v.shape[1]
    if count == 0:
        raise ValueError("channel_stats needs at least one image")
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


def normalisation(
    name: str, train_x: torch.Tensor, native_chans: int, chans: int,
    preprocessing: Mapping[str, Any] | None,
) -> tuple[Any, Any, str]:
    """(mean, std, where they come from): the model's own pipeline, else the literature's
    constants when the stored channels are the data set's own (repeated for grey -> RGB),
    else measured on the training split."""
    library = library_normalisation(preprocessing, chans)
    if library is not None:
        return (*library, "model")
    if name in DATASET_STATS and (chans == native_chans or native_chans == 1):
        mean, std = DATASET_STATS[name]
        repeat = chans // native_chans  # grey constants repeated for RGB
        return mean * repeat, std * repeat, "published"
    mean, std = channel_stats(train_x)
    return mean, std, "train split"


def library_normalisation(
    preprocessing: Mapping[str, Any] | None, in_chans: int
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` per channel from a model library's preprocessing (timm's pretrained
    data config, a Hugging Face image processor), or None. A 3-channel constant is averaged
    for 1-channel images (the weights' first layer was adapted the same way)."""
    if not preprocessing or preprocessing.get("mean") is None or preprocessing.get("std") is None:
        return None
    mean = tuple(float(m) for m in preprocessing["mean"])
    std = tuple(float(s) for s in preprocessing["std"])
    if len(mean) != len(std):
        raise ConfigError(f"preprocessing: mean {mean} and std {std} differ in length")
    if len(mean) == in_chans:
        return mean, std
    if in_chans == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    raise ConfigError(f"preprocessing: the model normalises {len(mean)} channels but the images "
                      f"have {in_chans}; pass --in-chans {len(mean)}")


def random_crop_flip(
    x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator, p: float = 0.5
) -> torch.Tensor:
    """Random crop with zero padding, then a random horizontal flip, in one ``gather``.

    Each sample of ``x`` (B, C, H, W) is translated by its own offset in
    [-padding, padding]^2 (zero fill; 0 = no crop) and, when ``flip``, mirrored with
    probability ``p``: the same draws, in the same order, and the same result as
    :func:`random_crop` followed by :func:`random_hflip`, as one gather over the padded image
    plane (a flip only reverses the column index). The draws come from ``generator`` (CPU);
    only they are copied to ``x.device``, without a sync.
    """
    b, c, h, w = x.shape
    padding = max(0, int(padding))
    if b == 0 or (padding == 0 and not flip):
        return x
    dev = x.device
    if padding:
        offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
        offsets = to_device(offsets, dev)  # (2, B): row and column shift
    else:
        offsets = torch.zeros(2, b, dtype=torch.int64, device=dev)
    cols = torch.arange(w, device=dev).expand(b, w)  # (B, W)
    if flip:
        mirrored = to_device(torch.rand(b, generator=generator) < p, dev)  # (B,)
        cols = torch.where(mirrored[:, None], w - 1 - cols, cols)
    rows = offsets[0, :, None] + torch.arange(h, device=dev)  # (B, H)
    cols = offsets[1, :, None] + cols  # (B, W)
    index = rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]  # (B, H, W) in the plane
    padded = torch.nn.functional.pad(x, (padding,) * 4) if padding else x  # (B, C, H+2p, W+2p)
    flat = padded.reshape(b, c, -1)  # (B, C, (H+2p)(W+2p))
    return flat.gather(2, index.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad (B, C, H, W) by ``padding`` and crop back at an offset per sample."""
    return random_crop_flip(x, padding, False, generator)


def random_hflip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p`` (independent coin per sample)."""
    return random_crop_flip(x, 0, True, generator, p)


class ImageEvalTransform:
    """uint8 ``(B, C, H, W)`` -> float32 normalised with per-channel mean / std in [0, 1]
    units (deterministic)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} vs {len(std)}")
        if not all(s > 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # (C, 1, 1) float32 per device, copied once: F.normalize would build them from the
        # Python lists on every call, a blocking host-to-device copy on CUDA.
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _device_stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._stats:
            self._stats[device] = tuple(  # type: ignore[assignment]
                to_device(torch.tensor(v, dtype=torch.float32).view(-1, 1, 1), device)
                for v in (self.mean, self.std)
            )
        return self._stats[device]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        if x.dtype != torch.uint8:
            raise TypeError(f"image batches must be uint8 (B, C, H, W), got {x.dtype}")
        if x.ndim != 4 or x.shape[1] != len(self.mean):
            raise ValueError(f"expected a (B, {len(self.mean)}, H, W) batch, got {tuple(x.shape)}")
        mean, std = self._device_stats(x.device)
        x = F.to_dtype(x, torch.float32, scale=True)  # [0, 255] -> [0, 1]
        return x.sub_(mean).div_(std)  # the arithmetic of F.normalize

    def __repr__(self) -> str:
        return f"ImageEvalTransform(mean={self.mean}, std={self.std})"


class ImageTrainTransform:
    """``(x_uint8, y_int64) -> (x_float32, target)`` following an :class:`AugmentPlan`.

    ``target`` is ``y`` (int64, (B,)) when the plan does not mix, else soft labels
    (float32, (B, num_classes), rows sum to 1) for every batch. ``seed``: of the private
    generator (``derive_seed(cfg.seed, "augment")``).
    """

    def __init__(
        self, plan: AugmentPlan, mean: Sequence[float], std: Sequence[float], num_classes: int,
        seed: int,
    ) -> None:
        from torchvision.transforms import v2

        from ablate.data.policies import BatchedAutoAugment, BatchedRandAugment

        self.plan, self.num_classes = plan, int(num_classes)
        self.normalize = ImageEvalTransform(mean, std)
        self.generator = torch.Generator().manual_seed(int(seed))
        self._policy: BatchedRandAugment | BatchedAutoAugment | None = None
        if plan.policy == "randaugment":
            self._policy = BatchedRandAugment(_RANDAUGMENT_OPS, _RANDAUGMENT_MAGNITUDE)
        elif plan.policy == "autoaugment":
            self._policy = BatchedAutoAugment(plan.autoaugment_policy)
        elif plan.policy is not None:
            raise ValueError(f"unknown augmentation policy {plan.policy!r}")
        mixers = []
        if plan.mixup_alpha > 0:
            mixers.append(v2.MixUp(alpha=plan.mixup_alpha, num_classes=self.num_classes))
        if plan.cutmix_alpha > 0:
            mixers.append(v2.CutMix(alpha=plan.cutmix_alpha, num_classes=self.num_classes))
        # Both enabled: one of them, chosen uniformly per batch (the timm / CCT recipe).
        self._mix: Callable[..., Any] | None = (
            v2.RandomChoice(mixers) if len(mixers) > 1 else (mixers[0] if mixers else None)
        )

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dtype != torch.uint8:
            raise TypeError(f"image batches must be uint8 (B, C, H, W), got {x.dtype}")
        plan = self.plan
        x = random_crop_flip(x, plan.crop_padding, plan.flip, self.generator)
        if self._policy is not None:
            # Independent ops per image, each op run once on the sub-batch that drew it.
            x = self._policy(x, self.generator)
        out = self.normalize(x)
        if self._mix is None:
            return out, y
        # torchvision's MixUp/CutMix use the global CPU RNG: seed it from our generator
        # inside a fork so the caller's global stream is left exactly as it was.
        batch_seed = int(torch.randint(0, 2**63 - 1, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_seed)
            if out.shape[0] > 0:
                out, y = self._mix(out, y)
            else:  # keep the soft-label shape contract for an empty batch
                y = torch.zeros(0, self.num_classes, device=out.device)
        return out, y

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Generator state, so a resumed run continues the same augmentation stream."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        n = self.normalize
        return f"ImageTrainTransform({self.plan.describe()}, mean={n.mean}, std={n.std})"
