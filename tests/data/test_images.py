"""Image data: digits / torchvision / ImageFolder loading and the batched transforms.

Everything runs offline on real components: scikit-learn's digits, torchvision's own MNIST
reader on idx files written here, torchvision's downloader on file:// URLs, and PNGs
written with Pillow.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import pytest
import torch

from ablate.config import RunConfig
from ablate.data import load_data
from ablate.data.images import (
    SPLIT_SEED,
    AugmentPlan,
    ImageEvalTransform,
    ImageTrainTransform,
    channel_stats,
    random_crop,
    random_hflip,
    resolve_augment,
)
from ablate.data.readers import TORCHVISION_DATASETS
from ablate.exceptions import ConfigError, DataError


def _rows(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique (image, label) rows with their counts: a multiset fingerprint of a split."""
    flat = torch.cat([x.reshape(len(y), -1).long(), y[:, None]], dim=1)
    return torch.unique(flat, dim=0, return_counts=True)


# ------------------------------------------------------------------------------ digits


@pytest.fixture(scope="module")
def digits32():
    return load_data(RunConfig(seed=0), img_size=32, in_chans=None)


def test_digits_sizes_dtypes_and_classes(digits32):
    b = digits32
    assert (b.name, b.task, b.num_classes, b.in_chans, b.img_size) == (
        "digits",
        "image",
        10,
        1,
        32,
    )
    assert b.class_names == [str(i) for i in range(10)]
    # 20 % of 1,797 for test (rounded up), then 10 % of the remaining 1,437 for validation.
    assert (len(b.train), len(b.val), len(b.test)) == (1293, 144, 360)
    for split in (b.train, b.val, b.test):
        assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 32, 32) and split.x.device.type == "cpu"
        assert int(split.x.max()) > 200  # 0..16 was scaled to 0..255
    assert b.info["train_size"] == 1293 and b.info["split_seed"] == SPLIT_SEED
    assert b.info["split_stratified"] is True and b.info["augment"] == "crop(pad=4)"


def test_digits_splits_are_a_stratified_partition_independent_of_seed():
    from sklearn.datasets import load_digits

    a = load_data(RunConfig(seed=0), img_size=None, in_chans=None)
    b = load_data(RunConfig(seed=7), img_size=None, in_chans=None)
    assert a.img_size == 8
    for name in ("train", "val", "test"):
        sa, sb = getattr(a, name), getattr(b, name)
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)

    # Together the splits are exactly the 1,797 originals (as a multiset): disjoint, complete.
    digits = load_digits()
    orig_x = torch.as_tensor(digits.images * (255 / 16)).round().to(torch.uint8)
    orig = _rows(orig_x, torch.as_tensor(digits.target))
    everything = _rows(
        torch.cat([a.train.x, a.val.x, a.test.x]), torch.cat([a.train.y, a.val.y, a.test.y])
    )
    assert torch.equal(orig[0], everything[0]) and torch.equal(orig[1], everything[1])

    # Stratified: every class share in each split within one image of its expected count.
    overall = torch.bincount(torch.as_tensor(digits.target), minlength=10).double() / len(
        digits.target
    )
    for split in (a.train, a.val, a.test):
        counts = torch.bincount(split.y, minlength=10).double()
        assert (counts - overall * len(split)).abs().max() <= 1.0


@pytest.mark.parametrize("size", [16, 32])
def test_digits_resize_and_channel_conversion(size):
    grey = load_data(RunConfig(), img_size=size, in_chans=None)
    rgb = load_data(RunConfig(), img_size=size, in_chans=3)
    assert grey.train.x.shape[1:] == (1, size, size)
    assert rgb.train.x.shape[1:] == (3, size, size) and rgb.in_chans == 3
    assert torch.equal(rgb.train.x, grey.train.x.expand(-1, 3, -1, -1))
    # Upsampling keeps the ink: mean brightness within a few grey levels of the 8x8 originals.
    native = load_data(RunConfig(), img_size=None, in_chans=None)
    assert abs(grey.train.x.double().mean() - native.train.x.double().mean()) < 4.0
    # Stats repeat per channel for the grey -> RGB conversion and normalise to ~N(0, 1).
    z = rgb.eval_transform(rgb.train.x)
    assert (
        z.dtype == torch.float32 and abs(float(z.mean())) < 1e-3 and abs(float(z.std()) - 1) < 1e-3
    )


def test_bad_image_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="in_chans"):
        load_data(RunConfig(), img_size=32, in_chans=2)
    with pytest.raises(ConfigError, match="img_size"):
        load_data(RunConfig(), img_size=0, in_chans=None)
    with pytest.raises(ConfigError, match="test_fraction"):
        load_data(RunConfig(test_fraction=0.0), img_size=8, in_chans=None)


# ------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize("name", sorted(TORCHVISION_DATASETS))
def test_torchvision_set_missing_offline_names_directory_and_download(name, tmp_path):
    cfg = RunConfig(dataset=name, data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataError) as err:
        load_data(cfg, img_size=32, in_chans=None)
    message = str(err.value)
    assert "\n" not in message
    assert str((tmp_path / "nowhere").resolve()) in message and "--download" in message
    assert TORCHVISION_DATASETS[name].expected in message
    assert not (tmp_path / "nowhere").exists()  # nothing was created or fetched


def _idx_images(x: torch.Tensor) -> bytes:
    n, h, w = x.shape
    return struct.pack(">IIII", 0x00000803, n, h, w) + x.numpy().tobytes()


def _idx_labels(y: torch.Tensor) -> bytes:
    return struct.pack(">II", 0x00000801, len(y)) + y.to(torch.uint8).numpy().tobytes()


def _mnist_arrays(n_train: int = 80, n_test: int = 30):
    g = torch.Generator().manual_seed(3)
    xs = torch.randint(0, 256, (n_train + n_test, 28, 28), generator=g, dtype=torch.uint8)
    ys = torch.arange(n_train + n_test) % 10
    return (xs[:n_train], ys[:n_train]), (xs[n_train:], ys[n_train:])


def _mnist_files(n_train: int = 80, n_test: int = 30) -> tuple[dict[str, bytes], tuple]:
    (xtr, ytr), (xte, yte) = _mnist_arrays(n_train, n_test)
    files = {
        "train-images-idx3-ubyte": _idx_images(xtr),
        "train-labels-idx1-ubyte": _idx_labels(ytr),
        "t10k-images-idx3-ubyte": _idx_images(xte),
        "t10k-labels-idx1-ubyte": _idx_labels(yte),
    }
    return files, ((xtr, ytr), (xte, yte))


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_read_from_idx_files_by_torchvision(name, folder, tmp_path):
    files, ((xtr, ytr), (xte, yte)) = _mnist_files()
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    for fname, data in files.items():
        (raw / fname).write_bytes(data)

    b = load_data(
        RunConfig(dataset=name, data_dir=str(tmp_path), val_fraction=0.25),
        img_size=None,
        in_chans=None,
    )
    assert b.num_classes == 10 and b.in_chans == 1 and b.img_size == 28
    # test = the official test file, unchanged and in order
    assert torch.equal(b.test.x, xte.unsqueeze(1)) and torch.equal(b.test.y, yte)
    # validation = 25 % of train, stratified (80 images, 8 per class -> 2 per class held out)
    assert (len(b.train), len(b.val)) == (60, 20)
    assert torch.equal(torch.bincount(b.val.y, minlength=10), torch.full((10,), 2))
    together = _rows(torch.cat([b.train.x, b.val.x]), torch.cat([b.train.y, b.val.y]))
    expected = _rows(xtr.unsqueeze(1), ytr)
    assert torch.equal(together[0], expected[0])
    assert (
        b.info["norm_source"] == "published" and b.info["augment"] == "crop(pad=4)"
    )  # round(4 * 28 / 32)

    assert b.info["split_stratified"] is True

    rgb = load_data(
        RunConfig(dataset=name, data_dir=str(tmp_path), val_fraction=0.25), img_size=32, in_chans=3
    )
    assert rgb.train.x.shape[1:] == (3, 32, 32) and rgb.eval_transform(rgb.test.x).shape == (
        30,
        3,
        32,
        32,
    )


@pytest.fixture
def http_dir(tmp_path):
    """A directory served over HTTP on 127.0.0.1 (a real server, torchvision's real client)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path / "mirror"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _serve_mnist_archives(http_dir, monkeypatch, *, corrupt: bool) -> None:
    """Put gzipped idx files on the local mirror and point torchvision's MNIST at it."""
    import torchvision.datasets as tvd

    mirror, url = http_dir

    files, _ = _mnist_files()
    resources = []
    for fname, data in files.items():
        blob = gzip.compress(data)
        (mirror / f"{fname}.gz").write_bytes(blob)
        md5 = hashlib.md5(blob).hexdigest()
        resources.append((f"{fname}.gz", "0" * 32 if corrupt else md5))
    monkeypatch.setattr(tvd.MNIST, "mirrors", [url])
    monkeypatch.setattr(tvd.MNIST, "resources", resources)


def test_download_fetches_and_verifies_checksums(tmp_path, http_dir, monkeypatch):
    _serve_mnist_archives(http_dir, monkeypatch, corrupt=False)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="--download"):
        load_data(RunConfig(dataset="mnist", data_dir=str(data_dir)), img_size=None, in_chans=None)
    cfg = RunConfig(dataset="mnist", data_dir=str(data_dir), download=True, val_fraction=0.25)
    b = load_data(cfg, img_size=None, in_chans=None)
    assert len(b.test) == 30 and (data_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()


def test_download_with_bad_checksum_is_a_data_error(tmp_path, http_dir, monkeypatch):
    _serve_mnist_archives(http_dir, monkeypatch, corrupt=True)
    with pytest.raises(DataError, match="download into .* failed.*corrupted") as err:
        load_data(
            RunConfig(dataset="mnist", data_dir=str(tmp_path / "d"), download=True),
            img_size=None,
            in_chans=None,
        )
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------- ImageFolder

COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}


def _write_pngs(directory: Path, classes: dict[str, int], size=(12, 9)) -> None:
    from PIL import Image

    for cls, count in classes.items():
        (directory / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", size, COLOURS[cls]).save(directory / cls / f"{i}.png")


def _check_colours(split, class_names) -> None:
    """Every decoded image is the solid colour of its class (labels follow class names)."""
    for x, y in zip(split.x, split.y, strict=True):
        expected = torch.tensor(COLOURS[class_names[int(y)]], dtype=torch.uint8)
        assert torch.equal(x[:, 3, 3], expected)


def test_image_folder_without_subsplits(tmp_path):
    _write_pngs(tmp_path, {"cat": 10, "dog": 10, "emu": 10}, size=(12, 9))
    (tmp_path / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    b = load_data(RunConfig(dataset=f"folder:{tmp_path}"), img_size=8, in_chans=None)
    assert b.class_names == ["cat", "dog", "emu"] and b.num_classes == 3 and b.in_chans == 3
    assert (len(b.train), len(b.val), len(b.test)) == (21, 3, 6)
    assert torch.equal(torch.bincount(b.test.y, minlength=3), torch.tensor([2, 2, 2]))
    for split in (b.train, b.val, b.test):
        assert split.x.shape[1:] == (3, 8, 8) and split.x.dtype == torch.uint8
        _check_colours(split, b.class_names)
    assert b.info["source"] == str(tmp_path.resolve()) and b.info["norm_source"] == "train split"

    grey = load_data(RunConfig(dataset=f"folder:{tmp_path}"), img_size=8, in_chans=1)
    red = grey.train.x[grey.train.y == 0]
    assert grey.train.x.shape[1] == 1 and int((red.int() - 76).abs().max()) <= 1  # 0.299 * 255


def test_image_folder_with_train_and_test(tmp_path):
    _write_pngs(tmp_path / "train", {"cat": 8, "dog": 8, "emu": 8}, size=(10, 10))
    _write_pngs(tmp_path / "test", {"dog": 3, "emu": 2}, size=(16, 16))  # no cat in test
    b = load_data(
        RunConfig(dataset=f"folder:{tmp_path}", val_fraction=0.25), img_size=None, in_chans=None
    )
    assert b.img_size == 10 and b.class_names == ["cat", "dog", "emu"]
    assert (len(b.train), len(b.val), len(b.test)) == (18, 6, 5)
    assert sorted(b.test.y.tolist()) == [1, 1, 1, 2, 2]  # mapped by name to train's indices
    assert b.test.x.shape[1:] == (3, 10, 10)  # resized to the training images' size
    for split in (b.train, b.val, b.test):
        _check_colours(split, b.class_names)

    _write_pngs(tmp_path / "val", {"cat": 1, "dog": 1})
    c = load_data(RunConfig(dataset=f"folder:{tmp_path}"), img_size=8, in_chans=None)
    assert (len(c.train), len(c.val), len(c.test)) == (24, 2, 5)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        load_data(RunConfig(dataset=f"folder:{tmp_path / 'missing'}"), img_size=8, in_chans=None)
    with pytest.raises(DataError, match="no class folders"):
        load_data(RunConfig(dataset=f"folder:{tmp_path}"), img_size=8, in_chans=None)
    _write_pngs(tmp_path / "train", {"cat": 4, "dog": 4})
    _write_pngs(tmp_path / "test", {"emu": 2})
    with pytest.raises(DataError, match="test/ has classes not in train/: emu"):
        load_data(RunConfig(dataset=f"folder:{tmp_path}"), img_size=8, in_chans=None)


def test_tiny_folder_falls_back_to_unstratified_split_loudly(tmp_path):
    _write_pngs(tmp_path, {"cat": 2, "dog": 2, "emu": 2})
    with pytest.warns(UserWarning, match="too few images to stratify"):
        b = load_data(RunConfig(dataset=f"folder:{tmp_path}"), img_size=4, in_chans=None)
    assert b.info["split_stratified"] is False and len(b.train) + len(b.val) + len(b.test) == 6

    one = tmp_path / "one"
    _write_pngs(one, {"cat": 1})
    with pytest.raises(DataError, match="too few to hold out"):
        load_data(RunConfig(dataset=f"folder:{one}"), img_size=4, in_chans=None)


# -------------------------------------------------------------------------- transforms


def _is_shift(out: torch.Tensor, img: torch.Tensor, pad: int) -> bool:
    """``out`` is ``img`` translated by some (dy, dx) in [-pad, pad]^2 with zero fill."""
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    h, w = img.shape[-2:]
    return any(
        torch.equal(out, padded[..., i : i + h, j : j + w])
        for i in range(2 * pad + 1)
        for j in range(2 * pad + 1)
    )


def test_random_crop_is_per_sample_translation():
    img = torch.arange(64, dtype=torch.uint8).reshape(1, 1, 8, 8) + 1  # asymmetric, no zeros
    batch = img.expand(32, 3, 8, 8).contiguous()
    out = random_crop(batch, 2, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.dtype == torch.uint8
    assert len({o.numpy().tobytes() for o in out}) > 5  # offsets differ across samples
    assert all(_is_shift(o, batch[0], 2) for o in out)


def test_random_hflip_is_per_sample():
    img = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    batch = img.expand(64, 1, 4, 4)
    out = random_hflip(batch, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, img[0].flip(-1)) for o in out])
    kept = torch.tensor([torch.equal(o, img[0]) for o in out])
    assert bool((flipped | kept).all()) and 10 < int(flipped.sum()) < 54


def test_auto_plans_follow_the_recipe():
    cifar = resolve_augment("cifar10", "auto", 32)
    assert (cifar.crop_padding, cifar.flip, cifar.policy) == (4, True, "randaugment")
    assert (cifar.mixup_alpha, cifar.cutmix_alpha) == (0.8, 1.0)
    assert resolve_augment("cifar100", "auto", 64).crop_padding == 8  # scales with img_size
    svhn = resolve_augment("svhn", "auto", 32)
    assert not svhn.flip and svhn.policy == "randaugment" and svhn.mixes
    for name in ("digits", "mnist", "fashion_mnist"):
        plan = resolve_augment(name, "auto", 32)
        assert plan == AugmentPlan(crop_padding=4)  # crop only: no flip, policy or mixing
    assert resolve_augment("cifar10", "auto", 32, mixup=0, cutmix=0).mixes is False
    assert (
        resolve_augment("digits", "crop_flip", 32, mixup=0.4).describe()
        == "crop(pad=4)+flip+mixup(0.4)"
    )
    assert resolve_augment("cifar10", "none", 32).describe() == "none"
    with pytest.raises(ConfigError, match="mixup"):
        resolve_augment("cifar10", "auto", 32, mixup=-1)


def test_digits_train_transform_crops_without_flipping(digits32):
    x, y = digits32.train.x[:64], digits32.train.y[:64]
    tf = ImageTrainTransform(AugmentPlan(crop_padding=4), (0.0,), (1 / 255,), 10, seed=0)
    out, target = tf(x, y)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert target.dtype == torch.int64 and torch.equal(target, y)
    shifted = out.round().to(torch.uint8)  # mean 0, std 1/255 undoes the [0, 1] scaling
    assert all(
        _is_shift(o, xi, 4) for o, xi in zip(shifted, x, strict=True)
    )  # translated, never mirrored
    assert digits32.train_transform.plan.flip is False


def test_eval_transform_is_deterministic_and_normalises():
    tf = ImageEvalTransform((0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    a, b = tf(x), tf(x)
    assert a.dtype == torch.float32 and torch.equal(a, b)
    expected = (x.float() / 255 - torch.tensor([0.5, 0.25, 0.0])[:, None, None]) / torch.tensor(
        [0.5, 0.25, 1.0]
    )[:, None, None]
    assert torch.allclose(a, expected, atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        tf(x.float())


def test_channel_stats_matches_direct_computation():
    x = torch.randint(0, 256, (50, 3, 5, 5), dtype=torch.uint8)
    mean, std = channel_stats(x, chunk=7)
    f = x.double() / 255
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), f.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(
        torch.tensor(std, dtype=torch.float64), f.std((0, 2, 3), unbiased=False), atol=1e-5
    )


def _cifar_like_batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(
        n
    ) % 10


def test_mixup_cutmix_produce_soft_labels_summing_to_one():
    plan = resolve_augment("cifar10", "auto", 32)
    tf = ImageTrainTransform(plan, (0.5,) * 3, (0.25,) * 3, 10, seed=0)
    x, y = _cifar_like_batch()
    soft_rows = 0
    for _ in range(4):
        out, target = tf(x, y)
        assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
        assert target.shape == (16, 10) and target.dtype == torch.float32
        assert torch.allclose(target.sum(1), torch.ones(16), atol=1e-5)
        soft_rows += int((target.max(1).values < 0.999).sum())
        # the two mixed classes are the sample's own and its neighbour's (torchvision rolls by 1)
        assert bool((target.argsort(1, descending=True)[:, :2] == y[:, None]).any(1).all())
    assert soft_rows > 0


def test_randaugment_differs_per_sample():
    tf = ImageTrainTransform(
        AugmentPlan(policy="randaugment"), (0.5,) * 3, (0.25,) * 3, 10, seed=0
    )
    x = _cifar_like_batch(1)[0].expand(16, 3, 32, 32).contiguous()
    out, _ = tf(x, torch.zeros(16, dtype=torch.int64))
    assert len({o.numpy().tobytes() for o in out}) > 8


def test_same_seed_same_batch_and_global_rng_untouched():
    plan = resolve_augment("cifar10", "auto", 32)
    x, y = _cifar_like_batch()

    def run(seed: int):
        tf = ImageTrainTransform(plan, (0.5,) * 3, (0.25,) * 3, 10, seed=seed)
        return [tf(x, y) for _ in range(2)]

    torch.manual_seed(123)
    before = torch.get_rng_state()
    first, second, other = run(5), run(5), run(6)
    assert torch.equal(torch.get_rng_state(), before)  # the loop's own stream is unchanged
    for (xa, ya), (xb, yb) in zip(first, second, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(first[0][0], other[0][0])
    assert not torch.equal(first[0][0], first[1][0])  # successive batches differ


def test_bundle_transforms_reproduce_from_cfg_seed():
    a = load_data(RunConfig(seed=3, augment="randaugment", mixup=0.8), img_size=16, in_chans=None)
    b = load_data(RunConfig(seed=3, augment="randaugment", mixup=0.8), img_size=16, in_chans=None)
    c = load_data(RunConfig(seed=4, augment="randaugment", mixup=0.8), img_size=16, in_chans=None)
    x, y = a.train.x[:32], a.train.y[:32]
    xa, ya = a.train_transform(x, y)
    xb, yb = b.train_transform(x, y)
    xc, _ = c.train_transform(x, y)
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and not torch.equal(xa, xc)
    assert ya.shape == (32, 10)
    # the generator state round-trips, so a resumed run continues the same stream
    state = a.train_transform.state_dict()
    nxt = a.train_transform(x, y)[0]
    a.train_transform.load_state_dict(state)
    assert torch.equal(a.train_transform(x, y)[0], nxt)


# ------------------------------------------------------------------ validation source


def _mnist_dir(tmp_path: Path, n_train: int = 80, n_test: int = 41) -> tuple[Path, tuple]:
    files, arrays = _mnist_files(n_train, n_test)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for fname, data in files.items():
        (raw / fname).write_bytes(data)
    return tmp_path, arrays


def test_val_split_train_holds_out_of_train_and_records_provenance(tmp_path):
    root, _ = _mnist_dir(tmp_path)
    for choice in ("train", "auto"):  # "auto" reaches the loader resolved; unresolved = train
        b = load_data(
            RunConfig(dataset="mnist", data_dir=str(root), val_fraction=0.25, val_split=choice),
            img_size=None,
            in_chans=None,
        )
        assert (len(b.train), len(b.val), len(b.test)) == (60, 20, 41)
        assert b.info["val_split"] == "train"
        assert b.info["val_source"] == f"train holdout (0.25, seed {SPLIT_SEED})"
        assert b.info["test_source"] == "official test split"
    digits = load_data(RunConfig(), img_size=8, in_chans=None)
    assert digits.info["test_source"] == f"holdout of all images (0.2, seed {SPLIT_SEED})"


def test_val_split_test_half_halves_the_official_test_split(tmp_path):
    root, ((xtr, ytr), (xte, yte)) = _mnist_dir(tmp_path)
    runs = [
        load_data(
            RunConfig(dataset="mnist", data_dir=str(root), val_split="test_half", seed=seed),
            img_size=None,
            in_chans=None,
        )
        for seed in (0, 9)
    ]
    b = runs[0]
    # Training uses every official training image, in order; nothing is held out of it.
    assert torch.equal(b.train.x, xtr.unsqueeze(1)) and torch.equal(b.train.y, ytr)
    # Validation + test are exactly the 41 official test images, disjoint, about half each.
    assert (len(b.val), len(b.test)) in ((21, 20), (20, 21))
    together = _rows(torch.cat([b.val.x, b.test.x]), torch.cat([b.val.y, b.test.y]))
    expected = _rows(xte.unsqueeze(1), yte)
    assert torch.equal(together[0], expected[0]) and torch.equal(together[1], expected[1])
    # Stratified: every class splits as evenly as its count allows (41 images: 4 or 5 each).
    per_class = torch.bincount(yte, minlength=10)
    diff = torch.bincount(b.val.y, minlength=10) - torch.bincount(b.test.y, minlength=10)
    assert bool((diff.abs() <= per_class % 2).all()) and b.info["split_stratified"] is True
    # Fixed: independent of the run's seed.
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(b, name).x, getattr(runs[1], name).x)
    assert b.info["val_split"] == "test_half"
    assert b.info["val_source"] == f"official test split, stratified half A (seed {SPLIT_SEED})"
    assert b.info["test_source"] == f"official test split, stratified half B (seed {SPLIT_SEED})"
    assert (b.info["train_size"], b.info["val_size"] + b.info["test_size"]) == (80, 41)


def test_val_split_test_half_needs_an_official_test_split(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_data(RunConfig(val_split="test_half"), img_size=8, in_chans=None)
    message = str(err.value)
    assert "\n" not in message and "digits has none" in message
    assert "'test_half'" in message and "valid choice is 'train'" in message

    _write_pngs(tmp_path / "plain", {"cat": 4, "dog": 4})
    with pytest.raises(ConfigError, match="test_half.*no test/ folder.*'train'"):
        load_data(
            RunConfig(dataset=f"folder:{tmp_path / 'plain'}", val_split="test_half"),
            img_size=8,
            in_chans=None,
        )
    split = tmp_path / "split"
    _write_pngs(split / "train", {"cat": 4, "dog": 4})
    _write_pngs(split / "test", {"cat": 4, "dog": 4})
    b = load_data(
        RunConfig(dataset=f"folder:{split}", val_split="test_half"), img_size=8, in_chans=None
    )
    assert (len(b.train), len(b.val), len(b.test)) == (8, 4, 4)
    assert torch.equal(torch.bincount(b.val.y), torch.tensor([2, 2]))
    _write_pngs(split / "val", {"cat": 1, "dog": 1})
    with pytest.raises(ConfigError, match="validation folder .* unused"):
        load_data(
            RunConfig(dataset=f"folder:{split}", val_split="test_half"), img_size=8, in_chans=None
        )
