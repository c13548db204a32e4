"""Data sets as preloaded tensors, plus the batch iterator the training loop uses.

Every data set, image or text, is loaded once into a :class:`DataBundle` of three
:class:`Split` tensors (train / validation / test). Images are stored as uint8
``(N, C, H, W)`` at the model's resolution; text as int64 token ids ``(N, L)`` padded
with ``pad_index``. Per-batch work (augmentation, normalisation, MixUp/CutMix) happens on
whole batches on the training device, never per sample in a DataLoader worker.

Data flow: ``load_data(cfg)`` -> ``DataBundle`` -> ``iterate_batches(split, ...)`` ->
``bundle.train_transform(x, y)`` / ``bundle.eval_transform(x)`` -> model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Mapping

import torch

from ablate.data.bundle import DataBundle, Split

if TYPE_CHECKING:
    from ablate.config import RunConfig

__all__ = [
    "Split", "DataBundle", "load_data", "iterate_batches", "IMAGE_DATASETS", "TEXT_DATASETS",
    "dataset_task", "preferred_img_size",
]

# Names accepted by --dataset besides the prefixed forms `folder:PATH` (images) and
# `csv:PATH` / `tsv:PATH` / `jsonl:PATH` (text).
IMAGE_DATASETS = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn")
TEXT_DATASETS = ("ag_news", "trec", "sst2", "imdb", "dbpedia", "yelp_polarity")
TEXT_PREFIXES = ("csv:", "tsv:", "jsonl:")


def preferred_img_size(name: str) -> int | None:
    """The data set's own default input resolution, or None to use the model's."""
    # The model's own 32 px would be wasteful on the 8x8 digits: upsampled 2x they keep two
    # conv+pool stages meaningful (16 -> 8 -> 4 = 16 tokens) at a quarter of the cost.
    return 16 if name == "digits" else None


def dataset_task(name: str) -> str:
    """'image' or 'text' for a --dataset value (raises ConfigError listing the choices)."""
    from ablate.exceptions import ConfigError

    if name in IMAGE_DATASETS or name.startswith("folder:"):
        return "image"
    if name in TEXT_DATASETS or name.startswith(TEXT_PREFIXES):
        return "text"
    raise ConfigError(f"unknown dataset {name!r}; choose one of "
                      f"{', '.join(IMAGE_DATASETS + TEXT_DATASETS)}, folder:PATH (an ImageFolder "
                      "directory) or csv:PATH / tsv:PATH / jsonl:PATH (text)")


def load_data(
    cfg: "RunConfig", *, task: str | None = None, img_size: int | None = None,
    in_chans: int | None = None, preprocessing: Mapping[str, Any] | None = None,
) -> DataBundle:
    """Load the data set named by ``cfg.dataset`` (``val_split`` resolved) at the
    ``img_size`` / ``in_chans`` the model and its initial weights expect (images);
    ``preprocessing``: a timm / Hugging Face model's own input pipeline (normalisation,
    tokenizer). Lazy imports keep `import ablate` light."""
    task = task or dataset_task(cfg.dataset)
    extra = {"preprocessing": preprocessing} if preprocessing else {}
    if task == "image":
        from ablate.data.images import load_image_data

        return load_image_data(cfg, img_size=img_size, in_chans=in_chans, **extra)
    from ablate.data.text import load_text_data

    return load_text_data(cfg, **extra)


def iterate_batches(
    split: Split, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` slices of a preloaded split; shuffling uses ``generator`` (seeded).

    The permutation is drawn on the CPU generator and moved to the split's device, so the
    same seed gives the same batches on every device.
    """
    n = len(split)
    order = torch.randperm(n, generator=generator).to(split.y.device) if shuffle else None
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        idx = slice(start, start + batch_size)
        idx = idx if order is None else order[idx]
        yield split.x[idx], split.y[idx]
