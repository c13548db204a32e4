"""Image data sets read from disk as stored: the torchvision sets (CIFAR, MNIST, SVHN ...,
downloaded with ``--download``) and ImageFolder trees. :mod:`ablate.data.images` holds them
out, resizes and augments them like every image data set.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ablate.data.bundle import RawImages, Split
from ablate.data.download import prepare_lock
from ablate.exceptions import DataError

__all__ = ["TORCHVISION_DATASETS", "read_torchvision", "read_folder"]

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


def read_torchvision(name: str, root: Path, download: bool) -> RawImages:
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
    return RawImages(splits[0], None, splits[1], list(classes), str(where))


def read_folder(path: str, img_size: int | None) -> RawImages:
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
    return RawImages(train, held[0], held[1], classes, str(root.resolve()))


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
