"""Image data sets, loaded once into uint8 tensors: digits, torchvision sets, ImageFolder.

:func:`load_image_data` reads a data set as it is stored (its own train / test, a folder's
train/ val/ test/), holds out the splits it lacks, resizes and converts the channels once,
and returns a :class:`~ablate.data.DataBundle` of uint8 ``(N, C, H, W)`` splits plus the
batched transforms of :mod:`ablate.data.augment`. This file reads in that order.

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

import os
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from ablate.data.augment import (
    ImageEvalTransform,
    ImageTrainTransform,
    derive_seed,
    normalisation,
    resolve_augment,
)
from ablate.data.bundle import SPLIT_SEED, DataBundle, Split, holdout_rows
from ablate.data.download import prepare_lock
from ablate.exceptions import ConfigError, DataError

if TYPE_CHECKING:
    from ablate.config import RunConfig

__all__ = ["load_image_data", "read_torchvision", "SPLIT_SEED", "TORCHVISION_DATASETS"]

@dataclass(frozen=True)
class _TorchvisionSet:
    cls_name: str  # attribute of torchvision.datasets
    expected: str  # what must exist under data_dir, for the "not found" message


_IDX = "{train,t10k}-images-idx3-ubyte and {train,t10k}-labels-idx1-ubyte"
TORCHVISION_DATASETS = {
    "cifar10": _TorchvisionSet("CIFAR10", "cifar-10-batches-py/{data_batch_1..5,test_batch}"),
    "cifar100": _TorchvisionSet("CIFAR100", "cifar-100-python/{train,test}"),
    "mnist": _TorchvisionSet("MNIST", f"MNIST/raw/{_IDX}"),
    "fashion_mnist": _TorchvisionSet("FashionMNIST", f"FashionMNIST/raw/{_IDX}"),
    "svhn": _TorchvisionSet("SVHN", "train_32x32.mat and test_32x32.mat"),
}
VAL_DIR_NAMES = ("val", "valid", "validation")
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


@dataclass
class _RawImages:
    """A data set as stored, before hold-outs, resizing and channel conversion."""

    train: Split
    val: Split | None  # None -> hold out from train
    test: Split | None  # None -> hold out from train (before val)
    class_names: list[str]
    source: str


def _read(name: str, data_dir: str, download: bool, img_size: int | None) -> _RawImages:
    if name == "digits":
        return _read_digits()
    if name.startswith("folder:"):
        return _read_folder(name[len("folder:") :], img_size)
    if name in TORCHVISION_DATASETS:
        return read_torchvision(name, Path(data_dir).expanduser(), download)
    # dataset_task() validates names before we are called; this guards direct use
    raise ConfigError(f"unknown image dataset {name!r}; choose one of digits, "
                      f"{', '.join(TORCHVISION_DATASETS)} or folder:PATH")


def _read_digits() -> _RawImages:
    """scikit-learn's digits: 1,797 8x8 grey images with values 0..16 -> uint8 0..255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float64)  # (N, 8, 8), 0..16
    x = (images * (255.0 / 16.0)).round_().clamp_(0, 255).to(torch.uint8).unsqueeze(1)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    names = [str(int(t)) for t in bunch.target_names]
    return _RawImages(Split(x, y), None, None, names, "sklearn.datasets.load_digits")


def read_torchvision(name: str, root: Path, download: bool) -> _RawImages:
    """Official train / test splits of a torchvision data set, read from its arrays."""
    import torchvision.datasets as tvd

    spec = TORCHVISION_DATASETS[name]
    cls = getattr(tvd, spec.cls_name)
    where = root.resolve()

    def open_split(train: bool) -> Any:
        split = {"split": "train" if train else "test"} if name == "svhn" else {"train": train}
        return cls(str(root), download=download, **split)

    # --download: one process fetches and extracts into root; others wait, then reuse it
    lock = prepare_lock(root / name, f"downloading {name}") if download else nullcontext()
    try:
        with lock:
            parts = [open_split(True), open_split(False)]
    except (RuntimeError, OSError) as err:
        if download:
            # torchvision's messages span lines (one per mirror): fold them into one.
            detail = " ".join(str(err).split())[:300] or type(err).__name__
            raise DataError(f"{name}: download into {where} failed: {detail}") from None
        raise DataError(f"{name}: files not found under {where} (expected {spec.expected}); "
                        "pass --download to fetch them") from None
    splits = []
    for ds in parts:
        if name == "svhn":  # (N, 3, 32, 32) already channels-first
            x, y = torch.from_numpy(ds.data), torch.from_numpy(ds.labels)
        else:
            x, y = torch.as_tensor(ds.data), torch.as_tensor(ds.targets)
            # MNIST-likes (N, 28, 28) -> (N, 1, 28, 28); CIFAR (N, 32, 32, 3) -> (N, 3, 32, 32)
            x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        splits.append(Split(x.to(torch.uint8).contiguous(), y.to(torch.int64)))
    classes = getattr(parts[0], "classes", None) or [str(i) for i in range(10)]
    return _RawImages(splits[0], None, splits[1], list(classes), str(where))


def _read_folder(path: str, img_size: int | None) -> _RawImages:
    """An ImageFolder tree: ``PATH/<class>/<img>`` or ``PATH/{train,val,test}/<class>/<img>``."""
    root = Path(path).expanduser()
    layout = "PATH/<class>/<image> or PATH/train/<class>/<image> (+ val/, test/)"
    if not root.is_dir():
        raise DataError(f"folder:{path}: no such directory; expected an ImageFolder {layout}")
    train_dir = root / "train"
    val_dir = next((root / n for n in VAL_DIR_NAMES if (root / n).is_dir()), None)
    test_dir = root / "test" if (root / "test").is_dir() else None
    if not train_dir.is_dir():
        if val_dir is not None or test_dir is not None:
            raise DataError(f"folder:{path}: has val/ or test/ but no train/ subfolder; expected "
                            f"{layout}")
        train_dir = root
    classes = _class_folders(train_dir, path, layout)
    class_to_idx = {c: i for i, c in enumerate(classes)}
    train = _decode_split(train_dir, class_to_idx, img_size, path, require_all=True)
    # later splits must match the training images' native size
    size = int(train.x.shape[-1]) if img_size is None else img_size
    held: list[Split | None] = []
    for sub in (val_dir, test_dir):
        if sub is None:
            held.append(None)
            continue
        names = _class_folders(sub, path, layout)
        unknown = sorted(set(names) - set(class_to_idx))
        if unknown:
            raise DataError(f"folder:{path}: {sub.name}/ has classes not in train/: "
                            f"{', '.join(unknown)}")
        index = {c: class_to_idx[c] for c in names}
        held.append(_decode_split(sub, index, size, path, require_all=False))
    return _RawImages(train, held[0], held[1], classes, str(root.resolve()))


def _class_folders(directory: Path, path: str, layout: str) -> list[str]:
    """Sorted non-hidden class folder names (torchvision's find_classes, minus dot-dirs)."""
    from torchvision.datasets.folder import find_classes

    try:
        classes = [c for c in find_classes(directory)[0] if not c.startswith(".")]
    except FileNotFoundError:
        classes = []
    if not classes:
        raise DataError(f"folder:{path}: no class folders in {directory}; expected {layout}")
    return classes


def _decode_split(
    directory: Path, class_to_idx: dict[str, int], img_size: int | None, path: str, *,
    require_all: bool,
) -> Split:
    """Decode every image under ``directory`` once into a uint8 (N, 3, S, S) tensor."""
    from concurrent.futures import ThreadPoolExecutor

    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    try:
        samples = make_dataset(str(directory), class_to_idx, extensions=IMG_EXTENSIONS,
                               allow_empty=not require_all)
    except FileNotFoundError as err:  # a class folder without any image
        raise DataError(f"folder:{path}: {str(err).splitlines()[0]}") from None
    if not samples:
        raise DataError(f"folder:{path}: no images ({', '.join(IMG_EXTENSIONS)}) in {directory}")
    # Pillow releases the GIL while decoding, so a few threads help on big folders.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda s: _decode_one(s[0], img_size, path), samples))
    if img_size is None:
        shapes = sorted({tuple(im.shape[-2:]) for im in images})
        if len(shapes) > 1:
            raise DataError(f"folder:{path}: images have different sizes "
                            f"({shapes[0][0]}x{shapes[0][1]}, {shapes[-1][0]}x{shapes[-1][1]}, "
                            "...); pass --img-size")
    y = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return Split(torch.stack(images), y)  # (N, 3, S, S)


def _decode_one(file: str, img_size: int | None, path: str) -> torch.Tensor:
    """One file -> uint8 (3, S, S): shorter side resized to ``img_size``, centre crop.
    Pillow decodes (torchvision.io's decoders are deprecated in favour of torchcodec, too
    heavy a dependency for a one-off decode)."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2 import functional as F

    try:
        with Image.open(file) as pil:
            img = F.pil_to_tensor(pil.convert("RGB"))  # (3, H, W) uint8
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"folder:{path}: cannot decode {file} ({err})") from None
    if img_size is not None:
        img = F.resize(img, [img_size], antialias=True)  # shorter side -> img_size
        img = F.center_crop(img, [img_size, img_size])
    return img


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
        if any((root / d).is_dir() for d in VAL_DIR_NAMES):
            raise ConfigError("val_split: 'test_half' would leave the validation folder of "
                              f"{name} unused; the valid choice is 'train' (it uses that folder "
                              "for validation)")
    return "test_half"


def _hold_out(raw: _RawImages, cfg: "RunConfig") -> _Splits:
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


def _test_halves(raw: _RawImages, name: str) -> _Splits:
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
