"""Image data sets read from disk as uint8 tensors: digits, torchvision sets, ImageFolder.

Each reader returns a :class:`RawImages`: the splits the data set itself has (official
train / test, a folder's train/ val/ test/), before hold-outs (:mod:`ablate.data.image_splits`),
resizing and channel conversion (:mod:`ablate.data.images`).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from ablate.data.bundle import Split
from ablate.data.download import prepare_lock
from ablate.exceptions import ConfigError, DataError

__all__ = [
    "RawImages",
    "read_dataset",
    "read_digits",
    "read_torchvision",
    "read_folder",
    "TORCHVISION_DATASETS",
    "NATIVE_CHANNELS",
    "VAL_DIR_NAMES",
]

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

VAL_DIR_NAMES = ("val", "valid", "validation")

@dataclass
class RawImages:
    """A data set as read from disk, before hold-outs, resizing and channel conversion."""

    train: Split
    val: Split | None  # None -> hold out from train
    test: Split | None  # None -> hold out from train (before val)
    class_names: list[str]
    source: str



def read_dataset(name: str, data_dir: str, download: bool, img_size: int | None) -> RawImages:
    """Read ``name`` (digits, a torchvision set, or folder:PATH) as the data set stores it."""
    if name == "digits":
        return read_digits()
    if name.startswith("folder:"):
        return read_folder(name[len("folder:") :], img_size)
    if name in TORCHVISION_DATASETS:
        return read_torchvision(name, Path(data_dir).expanduser(), download)
    # dataset_task() validates names before we are called; this guards direct use
    raise ConfigError(
        f"unknown image dataset {name!r}; "
        f"choose one of {', '.join(NATIVE_CHANNELS)} or folder:PATH"
    )


def read_digits() -> RawImages:
    """scikit-learn's digits: 1,797 8x8 grey images with values 0..16 -> uint8 0..255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float64)  # (N, 8, 8), 0..16
    x = (
        (images * (255.0 / 16.0)).round_().clamp_(0, 255).to(torch.uint8).unsqueeze(1)
    )  # (N, 1, 8, 8)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    names = [str(int(t)) for t in bunch.target_names]
    return RawImages(Split(x, y), None, None, names, "sklearn.datasets.load_digits")


def read_torchvision(name: str, root: Path, download: bool) -> RawImages:
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
    return RawImages(splits[0], None, splits[1], list(classes), str(where))


def read_folder(path: str, img_size: int | None) -> RawImages:
    """An ImageFolder tree: ``PATH/<class>/<img>`` or ``PATH/{train,val,test}/<class>/<img>``."""
    root = Path(path).expanduser()
    layout = "PATH/<class>/<image> or PATH/train/<class>/<image> (+ val/, test/)"
    if not root.is_dir():
        raise DataError(
            f"folder:{path}: no such directory; expected an ImageFolder layout {layout}"
        )
    train_dir = root / "train"
    val_dir = next((root / n for n in VAL_DIR_NAMES if (root / n).is_dir()), None)
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
    return RawImages(train, held[0], held[1], classes, str(root.resolve()))


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
