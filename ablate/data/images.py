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

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from ablate.data import DataBundle, Split
from ablate.data.augment import (
    DATASET_STATS,
    ImageEvalTransform,
    ImageTrainTransform,
    channel_stats,
    derive_seed,
    resolve_augment,
)
from ablate.exceptions import ConfigError, DataError

if TYPE_CHECKING:
    from ablate.config import RunConfig

__all__ = ["load_image_data", "SPLIT_SEED", "TORCHVISION_DATASETS", "NATIVE_CHANNELS"]

# Seed of every held-out split. Deliberately independent of cfg.seed (see module docstring).
SPLIT_SEED = 1234

# Channels each named data set stores natively (folder:PATH images are decoded as RGB).
NATIVE_CHANNELS = {
    "digits": 1,
    "mnist": 1,
    "fashion_mnist": 1,
    "cifar10": 3,
    "cifar100": 3,
    "svhn": 3,
}


@dataclass(frozen=True)
class _TorchvisionSpec:
    cls_name: str  # attribute of torchvision.datasets
    split_kw: str  # "train" (bool) or "split" (str)
    expected: str  # what must exist under data_dir, for the "not found" message


TORCHVISION_DATASETS: dict[str, _TorchvisionSpec] = {
    "cifar10": _TorchvisionSpec(
        "CIFAR10", "train", "cifar-10-batches-py/{data_batch_1..5,test_batch}"
    ),
    "cifar100": _TorchvisionSpec("CIFAR100", "train", "cifar-100-python/{train,test}"),
    "mnist": _TorchvisionSpec(
        "MNIST",
        "train",
        "MNIST/raw/{train,t10k}-images-idx3-ubyte and {train,t10k}-labels-idx1-ubyte",
    ),
    "fashion_mnist": _TorchvisionSpec(
        "FashionMNIST",
        "train",
        "FashionMNIST/raw/{train,t10k}-images-idx3-ubyte and {train,t10k}-labels-idx1-ubyte",
    ),
    "svhn": _TorchvisionSpec("SVHN", "split", "train_32x32.mat and test_32x32.mat"),
}

_VAL_DIR_NAMES = ("val", "valid", "validation")
_CHUNK = 4096  # images per resize / colour-conversion call: bounds the float temporaries


@dataclass
class _Raw:
    """A data set as read from disk, before hold-outs, resizing and channel conversion."""

    train: Split
    val: Split | None  # None -> hold out from train
    test: Split | None  # None -> hold out from train (before val)
    class_names: list[str]
    source: str


# ----------------------------------------------------------------------------- public


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
    val_split = _check_val_split(cfg)
    if name == "digits":
        raw = _read_digits()
    elif name.startswith("folder:"):
        raw = _read_folder(name[len("folder:") :], img_size)
    elif name in TORCHVISION_DATASETS:
        raw = _read_torchvision(name, Path(cfg.data_dir).expanduser(), cfg.download)
    else:  # dataset_task() validates names before we are called; this guards direct use
        raise ConfigError(
            f"unknown image dataset {name!r}; "
            f"choose one of {', '.join(NATIVE_CHANNELS)} or folder:PATH"
        )

    if val_split == "test_half":
        train, val, test, stratified, sources = _test_halves(raw, name)
    else:
        train, val, test, stratified, sources = _hold_out(raw, cfg)
    native_chans = int(train.x.shape[1])
    native_size = int(train.x.shape[-1])
    target_chans = native_chans if in_chans is None else in_chans
    if img_size is None and train.x.shape[-2] != train.x.shape[-1]:
        raise DataError(
            f"{name}: images are {train.x.shape[-2]}x{train.x.shape[-1]} (not square); "
            "pass --img-size"
        )
    size = native_size if img_size is None else img_size
    train, val, test = (
        Split(_convert_channels(_resize(s.x, size), target_chans), s.y) for s in (train, val, test)
    )

    # Normalisation: the literature's constants when the stored channels are the data set's
    # own (repeated for grey -> RGB); otherwise measured on the training split.
    kind = "folder" if name.startswith("folder:") else name
    from ablate.data.preprocessing import library_normalisation

    library = library_normalisation(preprocessing, target_chans)
    if library is not None:
        mean, std = library
        stats_source = "model"
    elif kind in DATASET_STATS and target_chans == native_chans:
        mean, std = DATASET_STATS[kind]
        stats_source = "published"
    elif kind in DATASET_STATS and native_chans == 1:
        mean, std = DATASET_STATS[kind][0] * target_chans, DATASET_STATS[kind][1] * target_chans
        stats_source = "published"
    else:
        mean, std = channel_stats(train.x)
        stats_source = "train split"

    num_classes = len(raw.class_names)
    plan = resolve_augment(name, cfg.augment, size, mixup=cfg.mixup, cutmix=cfg.cutmix)
    train_tf = ImageTrainTransform(
        plan, mean, std, num_classes, seed=derive_seed(cfg.seed, "augment")
    )
    eval_tf = ImageEvalTransform(mean, std)
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
        train_transform=train_tf,
        eval_transform=eval_tf,
        info=info,
    )


# ---------------------------------------------------------------------------- readers


def _read_digits() -> _Raw:
    """scikit-learn's digits: 1,797 8x8 grey images with values 0..16 -> uint8 0..255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float64)  # (N, 8, 8), 0..16
    x = (
        (images * (255.0 / 16.0)).round_().clamp_(0, 255).to(torch.uint8).unsqueeze(1)
    )  # (N, 1, 8, 8)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    names = [str(int(t)) for t in bunch.target_names]
    return _Raw(Split(x, y), None, None, names, "sklearn.datasets.load_digits")


def _read_torchvision(name: str, root: Path, download: bool) -> _Raw:
    """Official train / test splits of a torchvision data set, read from its arrays."""
    import torchvision.datasets as tvd

    spec = TORCHVISION_DATASETS[name]
    cls = getattr(tvd, spec.cls_name)
    where = root.resolve()

    def open_split(train: bool):
        kwargs = (
            {"train": train}
            if spec.split_kw == "train"
            else {"split": "train" if train else "test"}
        )
        return cls(str(root), download=download, **kwargs)

    try:
        parts = [open_split(True), open_split(False)]
    except (RuntimeError, OSError) as err:
        if download:
            # torchvision's messages span lines (one per mirror): fold them into one.
            detail = " ".join(str(err).split())[:300] or type(err).__name__
            raise DataError(f"{name}: download into {where} failed: {detail}") from None
        raise DataError(
            f"{name}: files not found under {where} (expected {spec.expected}); "
            "pass --download to fetch them"
        ) from None

    splits = []
    for ds in parts:
        if name == "svhn":
            x = torch.from_numpy(ds.data)  # (N, 3, 32, 32) already channels-first
            y = torch.from_numpy(ds.labels)
        else:
            x = torch.as_tensor(ds.data)
            if x.ndim == 3:  # MNIST-likes: (N, 28, 28) -> (N, 1, 28, 28)
                x = x.unsqueeze(1)
            else:  # CIFAR: (N, 32, 32, 3) -> (N, 3, 32, 32)
                x = x.permute(0, 3, 1, 2)
            y = torch.as_tensor(ds.targets)
        splits.append(Split(x.to(torch.uint8).contiguous(), y.to(torch.int64)))
    classes = getattr(parts[0], "classes", None) or [str(i) for i in range(10)]
    return _Raw(splits[0], None, splits[1], list(classes), str(where))


def _read_folder(path: str, img_size: int | None) -> _Raw:
    """An ImageFolder tree: ``PATH/<class>/<img>`` or ``PATH/{train,val,test}/<class>/<img>``."""
    root = Path(path).expanduser()
    layout = "PATH/<class>/<image> or PATH/train/<class>/<image> (+ val/, test/)"
    if not root.is_dir():
        raise DataError(
            f"folder:{path}: no such directory; expected an ImageFolder layout {layout}"
        )
    train_dir = root / "train"
    val_dir = next((root / n for n in _VAL_DIR_NAMES if (root / n).is_dir()), None)
    test_dir = root / "test" if (root / "test").is_dir() else None
    if not train_dir.is_dir():
        if val_dir is not None or test_dir is not None:
            raise DataError(
                f"folder:{path}: has val/ or test/ but no train/ subfolder; expected {layout}"
            )
        train_dir = root
    classes = _class_folders(train_dir, path, layout)
    class_to_idx = {c: i for i, c in enumerate(classes)}

    train = _decode_split(train_dir, class_to_idx, img_size, path, require_all=True)
    size = img_size
    if size is None:  # later splits must match the training images' native size
        size = int(train.x.shape[-1])
    held = []
    for sub in (val_dir, test_dir):
        if sub is None:
            held.append(None)
            continue
        names = _class_folders(sub, path, layout)
        unknown = sorted(set(names) - set(class_to_idx))
        if unknown:
            raise DataError(
                f"folder:{path}: {sub.name}/ has classes not in train/: {', '.join(unknown)}"
            )
        held.append(
            _decode_split(sub, {c: class_to_idx[c] for c in names}, size, path, require_all=False)
        )
    return _Raw(train, held[0], held[1], classes, str(root.resolve()))


def _class_folders(directory: Path, path: str, layout: str) -> list[str]:
    """Sorted non-hidden class folder names (torchvision's find_classes, minus dot-dirs)."""
    from torchvision.datasets.folder import find_classes

    try:
        classes, _ = find_classes(directory)
    except FileNotFoundError:
        classes = []
    classes = [c for c in classes if not c.startswith(".")]
    if not classes:
        raise DataError(f"folder:{path}: no class folders in {directory}; expected {layout}")
    return classes


def _decode_split(
    directory: Path,
    class_to_idx: dict[str, int],
    img_size: int | None,
    path: str,
    *,
    require_all: bool,
) -> Split:
    """Decode every image under ``directory`` once into a uint8 (N, 3, S, S) tensor."""
    from concurrent.futures import ThreadPoolExecutor

    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    try:
        samples = make_dataset(
            str(directory), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=not require_all
        )
    except FileNotFoundError as err:  # a class folder without any image
        raise DataError(f"folder:{path}: {str(err).splitlines()[0]}") from None
    if not samples:
        raise DataError(
            f"folder:{path}: no images ({', '.join(IMG_EXTENSIONS)}) under {directory}"
        )
    # Pillow releases the GIL while decoding, so a few threads help on big folders.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda s: _decode_one(s[0], img_size, path), samples))
    if img_size is None:
        shapes = sorted({tuple(im.shape[-2:]) for im in images})
        if len(shapes) > 1:
            raise DataError(
                f"folder:{path}: images have different sizes ({shapes[0][0]}x{shapes[0][1]}, "
                f"{shapes[-1][0]}x{shapes[-1][1]}, ...); pass --img-size"
            )
    x = torch.stack(images)  # (N, 3, S, S)
    y = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return Split(x, y)


def _decode_one(file: str, img_size: int | None, path: str) -> torch.Tensor:
    """One file -> uint8 (3, S, S): shorter side resized to ``img_size``, centre crop.

    Pillow decodes (once, at load time; torchvision.io's decoders are deprecated in favour
    of torchcodec, which we do not want as a dependency for a one-off decode).
    """
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


# ------------------------------------------------------------------ splits and tensors


_Splits = tuple[Split, Split, Split, bool, tuple[str, str]]


def _check_val_split(cfg: "RunConfig") -> str:
    """The val_split to use ("auto" unresolved reads as "train"); errors before any decoding."""
    from ablate.config import VAL_SPLIT_CHOICES

    choice = cfg.val_split
    if choice not in VAL_SPLIT_CHOICES:
        raise ConfigError(
            f"val_split: {choice!r} is not valid; choose one of {', '.join(VAL_SPLIT_CHOICES)}"
        )
    if choice != "test_half":
        return "train"
    name = cfg.dataset
    if name == "digits":
        raise ConfigError(
            "val_split: 'test_half' needs an official test split and digits has none (its "
            "test set is held out of the same 1,797 images); the valid choice is 'train'"
        )
    if name.startswith("folder:"):
        root = Path(name[len("folder:") :]).expanduser()
        if not (root / "test").is_dir():
            raise ConfigError(
                f"val_split: 'test_half' needs an official test split and {name} has no "
                "test/ folder; the valid choice is 'train' (or add PATH/train and PATH/test)"
            )
        if any((root / d).is_dir() for d in _VAL_DIR_NAMES):
            raise ConfigError(
                f"val_split: 'test_half' would leave the validation folder of {name} unused; "
                "the valid choice is 'train' (it uses that folder for validation)"
            )
    return "test_half"


def _hold_out(raw: _Raw, cfg: "RunConfig") -> _Splits:
    """Fill in missing test / val splits from train with fixed-seed stratified hold-outs.

    Returns (train, val, test, stratified, (val_source, test_source)).
    """
    train, stratified = raw.train, True
    test = raw.test
    folder = cfg.dataset.startswith("folder:")
    test_source = "folder test/" if folder else "official test split"
    if test is None:
        if not 0.0 < cfg.test_fraction < 1.0:
            raise ConfigError(
                f"test_fraction: must be in (0, 1) for {cfg.dataset} (it has no test split), "
                f"got {cfg.test_fraction}"
            )
        train, test, ok = _split(train, cfg.test_fraction, cfg.dataset, "test")
        stratified &= ok
        test_source = f"holdout of all images ({cfg.test_fraction:g}, seed {SPLIT_SEED})"
    val = raw.val
    val_source = "folder validation split"
    if val is None:
        train, val, ok = _split(train, cfg.val_fraction, cfg.dataset, "validation")
        stratified &= ok
        val_source = f"train holdout ({cfg.val_fraction:g}, seed {SPLIT_SEED})"
    return train, val, test, stratified, (val_source, test_source)


def _test_halves(raw: _Raw, name: str) -> _Splits:
    """val_split="test_half": the whole training split; the test split halved, stratified.

    Half A (validation) and half B (test) depend only on :data:`SPLIT_SEED`, never on the
    run's seed, so every run of a comparison validates and tests on the same images.
    """
    if raw.test is None or raw.val is not None:  # _check_val_split rules these out first
        raise ConfigError(f"val_split: 'test_half' is not available for {name}")
    test, val, stratified = _split(raw.test, 0.5, name, "validation", pool="test")
    sources = (
        f"official test split, stratified half A (seed {SPLIT_SEED})",
        f"official test split, stratified half B (seed {SPLIT_SEED})",
    )
    return raw.train, val, test, stratified, sources


def _split(
    data: Split, fraction: float, name: str, what: str, *, pool: str = "training"
) -> tuple[Split, Split, bool]:
    """Hold out ``fraction`` of ``data``, stratified by label, with :data:`SPLIT_SEED`.

    Falls back (with a warning) to an unstratified split when some class is too small to
    stratify. Returns (kept, held_out, stratified); indices keep the original order.
    """
    from sklearn.model_selection import train_test_split

    n = len(data)
    if fraction <= 0.0:
        empty = torch.zeros(0, dtype=torch.int64)
        return data, Split(data.x[empty], data.y[empty]), True
    index = torch.arange(n).numpy()
    stratified = True
    try:
        keep, held = train_test_split(
            index, test_size=fraction, stratify=data.y.numpy(), random_state=SPLIT_SEED
        )
    except ValueError:
        stratified = False
        try:
            keep, held = train_test_split(index, test_size=fraction, random_state=SPLIT_SEED)
        except ValueError:
            raise DataError(
                f"{name}: {n} {pool} images are too few to hold out {fraction:g} for {what}"
            ) from None
        warnings.warn(
            f"{name}: some class has too few images to stratify the {what} split; "
            "using a random (unstratified) split",
            stacklevel=3,
        )
    keep_t = torch.from_numpy(keep).sort().values
    held_t = torch.from_numpy(held).sort().values
    return Split(data.x[keep_t], data.y[keep_t]), Split(data.x[held_t], data.y[held_t]), stratified


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
