"""Official state-dict compatibility and the checkpoint loader / saver."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from ablate.exceptions import AblateError, CheckpointError
from ablate.models import create_model
from ablate.models.checkpoint import (
    LoadReport,
    atomic_torch_save,
    load_checkpoint,
    load_pretrained,
    model_from_checkpoint,
    read_state_dict,
    resize_positional_embedding,
    save_checkpoint,
)
from ablate.models.compact import sinusoidal_embedding

OFFICIAL = ["cct_7_3x1_32", "cct_2_3x2_32", "cvt_7_4_32", "vit_7_4_32"]
PE = "classifier.positional_emb"


@pytest.fixture
def official_state_dict(cct_keys):
    """``official_state_dict(name, seed=0)``: what an official checkpoint holds, the
    reference keys in order with random values."""

    def make(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return {key: torch.randn(*shape, generator=g) * 0.05 for key, shape in cct_keys[name]}

    return make


def images(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_one_line(err: BaseException) -> str:
    message = str(err)
    assert message and "\n" not in message
    return message


# ---------------------------------------------------------------------------------------
# keys and shapes


@pytest.mark.parametrize("name", OFFICIAL)
def test_state_dict_keys_and_shapes_in_order(name, cct_keys):
    ours = [(k, list(v.shape)) for k, v in create_model(name).state_dict().items()]
    assert ours == [(k, list(s)) for k, s in cct_keys[name]]


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_state_dict_loads_strictly(name, official_state_dict, cct_keys):
    model = create_model(name)
    sd = official_state_dict(name)
    model.load_state_dict(sd, strict=True)  # plain torch agrees
    model = create_model(name)
    report = load_pretrained(model, sd)
    assert isinstance(report, LoadReport)
    assert report.loaded == tuple(k for k, _ in cct_keys[name])
    assert not report.resized and not report.head_replaced and not report.missing
    for key, value in model.state_dict().items():
        assert torch.equal(value, sd[key]), key


def test_official_pth_file_and_wrapped_keys(tmp_path, official_state_dict):
    sd = official_state_dict("cct_2_3x2_32", seed=1)
    plain = tmp_path / "cct_2_3x2_32_cifar10.pth"
    torch.save(sd, plain)
    wrapped = tmp_path / "dataparallel.pt"
    torch.save({"module." + k: v for k, v in sd.items()}, wrapped)
    compiled = tmp_path / "compiled.pth"
    torch.save({"_orig_mod." + k: v for k, v in sd.items()}, compiled)
    for path in (plain, wrapped, compiled, str(plain)):
        got = read_state_dict(path)
        assert list(got) == list(sd)
        assert all(torch.equal(got[k], sd[k]) for k in sd)
    model = create_model("cct_2_3x2_32")
    report = load_pretrained(model, wrapped)
    assert report.source == str(wrapped)
    assert torch.equal(model.classifier.fc.weight, sd["classifier.fc.weight"])
    # A key that merely contains "module." elsewhere is left alone.
    odd = {"a.module.b": torch.zeros(1), "module.c": torch.zeros(1)}
    assert set(read_state_dict(odd)) == set(odd)


def test_bad_key_sets_are_refused_naming_every_key(official_state_dict):
    sd = official_state_dict("cct_2_3x2_32")
    del sd["classifier.norm.weight"]
    del sd["classifier.blocks.1.linear2.bias"]
    sd["classifier.extra_head.weight"] = torch.zeros(3)
    sd["tokenizer.conv_layers.5.0.weight"] = torch.zeros(1)
    sd["classifier.blocks.0.self_attn.qkv.weight"] = torch.zeros(384, 64)
    model = create_model("cct_2_3x2_32")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_pretrained(model, sd)
    message = assert_one_line(info.value)
    for fragment in (
        "classifier.norm.weight",
        "classifier.blocks.1.linear2.bias",
        "classifier.extra_head.weight",
        "tokenizer.conv_layers.5.0.weight",
        "classifier.blocks.0.self_attn.qkv.weight (checkpoint [384, 64] vs model [384, 128])",
        "missing keys",
        "unexpected keys",
        "mis-shaped keys",
        "cct_2_3x2_32",
    ):
        assert fragment in message
    # Nothing was half-loaded.
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert isinstance(info.value, AblateError)


def test_non_strict_tolerates_missing_and_unexpected_but_never_wrong_shapes(official_state_dict):
    sd = official_state_dict("cvt_7_4_32")
    del sd["classifier.norm.bias"]
    sd["classifier.unused"] = torch.ones(2)
    model = create_model("cvt_7_4_32")
    report = load_pretrained(model, sd, strict=False)
    assert report.missing == ("classifier.norm.bias",)
    assert report.unexpected == ("classifier.unused",)
    assert "classifier.norm.bias" in report.summary() and "classifier.unused" in report.summary()
    assert torch.equal(model.classifier.norm.weight, sd["classifier.norm.weight"])
    sd["classifier.norm.weight"] = torch.ones(7)
    with pytest.raises(
        CheckpointError, match=r"classifier\.norm\.weight \(checkpoint \[7\] vs model \[256\]\)"
    ):
        load_pretrained(create_model("cvt_7_4_32"), sd, strict=False)


# ---------------------------------------------------------------------------------------
# adaptation: new head, other image size


@pytest.mark.parametrize("name", OFFICIAL)
def test_other_class_count_gets_a_new_head(name, official_state_dict):
    sd = official_state_dict(name)
    model = create_model(name, num_classes=100)
    fresh_head = model.classifier.fc.weight.detach().clone()
    report = load_pretrained(model, sd)
    assert report.head_replaced and report.head_classes == (10, 100)
    assert (
        "classifier.fc.weight" not in report.loaded and "classifier.fc.bias" not in report.loaded
    )
    assert torch.equal(model.classifier.fc.weight, fresh_head)
    assert torch.equal(model.classifier.norm.weight, sd["classifier.norm.weight"])
    assert "10 -> 100 classes" in report.summary()
    assert model.eval()(images(1)).shape == (1, 100)


def test_64px_input_interpolates_the_positional_embedding(official_state_dict):
    sd = official_state_dict("cct_7_3x1_32")
    # A table that is linear over the 16 x 16 token grid: 2-D bilinear interpolation must
    # reproduce it in the interior, which a 1-D interpolation over the flattened tokens,
    # a crop or a zero-padding would not.
    g = torch.arange(16, dtype=torch.float32)
    rows, cols = torch.meshgrid(g, g, indexing="ij")
    slopes = torch.randn(2, 256, generator=torch.Generator().manual_seed(3))
    sd[PE] = (rows[..., None] * slopes[0] + cols[..., None] * slopes[1]).reshape(1, 256, 256)

    model = create_model("cct_7_3x1_32", img_size=64)
    report = load_pretrained(model, sd)
    assert report.resized == {PE: ((1, 256, 256), (1, 1024, 256))}
    assert PE in report.loaded and "resized" in report.summary()
    pe = model.classifier.positional_emb.detach().reshape(32, 32, 256)
    # New pixel i sits at old coordinate i/2 - 0.25 (half-pixel centres, align_corners=False).
    coord = torch.arange(32, dtype=torch.float32) / 2 - 0.25
    r, c = torch.meshgrid(coord, coord, indexing="ij")
    expected = r[..., None] * slopes[0] + c[..., None] * slopes[1]
    torch.testing.assert_close(pe[1:-1, 1:-1], expected[1:-1, 1:-1], rtol=1e-5, atol=1e-4)
    with torch.inference_mode():
        out = model.eval()(images(1, size=64))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_vit_class_token_row_is_kept_apart(official_state_dict):
    sd = official_state_dict("vit_7_4_32")
    model = create_model("vit_7_4_32", img_size=64)  # 8 x 8 -> 16 x 16 patches
    report = load_pretrained(model, sd)
    assert report.resized == {PE: ((1, 65, 256), (1, 257, 256))}
    pe = model.classifier.positional_emb.detach()
    assert torch.equal(pe[:, 0], sd[PE][:, 0])  # the class-token row, untouched
    grid = resize_positional_embedding(sd[PE][:, 1:], 256, grid=True)
    torch.testing.assert_close(pe[:, 1:], grid)
    assert model.eval()(images(1, size=64)).shape == (1, 10)


def test_resize_positional_embedding_1d_and_square_checks():
    # 1-D (text, or a non-square token count): linear along the sequence.
    ramp = torch.arange(10, dtype=torch.float32)[None, :, None].repeat(1, 1, 3)  # (1, 10, 3)
    out = resize_positional_embedding(ramp, 20, grid=True)  # 10 is not a square -> 1-D
    expected = torch.arange(20, dtype=torch.float32) / 2 - 0.25
    torch.testing.assert_close(out[0, 1:-1, 0], expected[1:-1])
    assert out.shape == (1, 20, 3)
    prefixed = resize_positional_embedding(
        torch.cat([torch.full((1, 1, 3), 7.0), ramp], 1), 21, n_prefix=1
    )
    assert torch.equal(prefixed[:, :1], torch.full((1, 1, 3), 7.0))
    torch.testing.assert_close(prefixed[:, 1:], out)
    with pytest.raises(ValueError):
        resize_positional_embedding(ramp[0], 4)


def test_sine_tables_are_regenerated_not_interpolated():
    sine32 = create_model("vit_7_4_32_sine").state_dict()
    model = create_model("vit_7_4_32_sine", img_size=48)
    report = load_pretrained(model, sine32)
    assert PE in report.resized
    torch.testing.assert_close(model.classifier.positional_emb, sinusoidal_embedding(145, 256))
    assert not model.classifier.positional_emb.requires_grad


def test_learned_values_into_a_fixed_sine_table_are_reported(official_state_dict):
    # Official *_sine CCT checkpoints hold a learned table (the official bug).
    model = create_model("cct_7_3x1_32_sine")
    sd = official_state_dict("cct_7_3x1_32")
    report = load_pretrained(model, sd)
    assert torch.equal(model.classifier.positional_emb, sd[PE])
    assert any("learned values" in note for note in report.notes)
    assert "fixed" in report.summary()


def test_embedding_dim_mismatch_is_an_error_not_a_resize(official_state_dict):
    sd = official_state_dict("cct_2_3x2_32")
    with pytest.raises(
        CheckpointError,
        match=r"classifier\.positional_emb \(checkpoint \[1, 64, 128\] vs model \[1, 256, 256\]\)",
    ):
        load_pretrained(create_model("cct_7_3x1_32"), sd)


def test_none_embedding_refuses_a_checkpoint_with_one(official_state_dict):
    with pytest.raises(CheckpointError, match="unexpected keys: classifier.positional_emb"):
        load_pretrained(
            create_model("cct_2_3x2_32", positional_embedding="none"),
            official_state_dict("cct_2_3x2_32"),
        )


# ---------------------------------------------------------------------------------------
# unreadable input


def test_unreadable_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="nope.pth does not exist") as info:
        read_state_dict(missing)
    assert_one_line(info.value)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file at all")
    with pytest.raises(CheckpointError, match="garbage.pth") as info:
        read_state_dict(garbage)
    assert_one_line(info.value)

    # Pickled objects are refused by weights_only=True (no code runs on load).
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"obj": Path("/etc")}, unsafe)
    with pytest.raises(CheckpointError, match="unsafe.pth.*weights_only") as info:
        read_state_dict(unsafe)
    assert_one_line(info.value)

    not_sd = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_sd)
    with pytest.raises(CheckpointError, match="list.pth holds a list"):
        read_state_dict(not_sd)

    mixed = tmp_path / "mixed.pth"
    torch.save({"w": torch.zeros(1), "epoch": 3}, mixed)
    with pytest.raises(CheckpointError, match="not tensors: epoch"):
        read_state_dict(mixed)

    with pytest.raises(CheckpointError, match="is not a file"):
        read_state_dict(tmp_path)


# ---------------------------------------------------------------------------------------
# our own checkpoints


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = create_model(
        "cct_2_3x2_32", variant="softmax_v", num_classes=7, img_size=28, in_chans=1
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    x = torch.randn(3, 1, 28, 28)
    model(x).sum().backward()
    opt.step()
    sched.step()
    model.set_variant_params(alpha=0.3)  # where an alpha schedule had got to
    model.eval()
    with torch.no_grad():
        logits = model(x)

    path = save_checkpoint(
        tmp_path / "runs" / "last.pt",
        model,
        optimizer=opt,
        scheduler=sched,
        extra={
            "epoch": 1,
            "step": 1,
            "metrics": {"val_acc": 0.5},
            "tags": ["a", None],
            "rng": torch.get_rng_state(),
        },
    )
    assert path.is_file() and not list(path.parent.glob(".*tmp*"))
    raw = torch.load(path, map_location="cpu", weights_only=True)  # loads without pickled code
    assert raw["name"] == "cct_2_3x2_32" and raw["epoch"] == 1

    ckpt = load_checkpoint(path)
    assert ckpt["arch"]["num_classes"] == 7 and ckpt["arch"]["in_chans"] == 1
    assert ckpt["arch"]["variant"] == "softmax_v"
    assert ckpt["arch"]["variant_params"] == pytest.approx({"alpha": 0.3})  # float32 buffer
    assert ckpt["metrics"] == {"val_acc": 0.5} and ckpt["tags"] == ["a", None]

    for source in (path, ckpt):
        rebuilt = model_from_checkpoint(source)
        assert not rebuilt.training  # every loader returns eval mode, as load_model does
        assert rebuilt.name == "cct_2_3x2_32"
        assert rebuilt.variant_params() == pytest.approx({"alpha": 0.3})
        with torch.no_grad():
            assert torch.equal(rebuilt(x), logits)

    # Optimizer and scheduler resume.
    opt2 = torch.optim.AdamW(rebuilt.parameters(), lr=1e-3)
    opt2.load_state_dict(ckpt["optimizer"])
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=10)
    sched2.load_state_dict(ckpt["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]

    # Fine-tuning from our checkpoint onto another class count and variant.
    tuned = model_from_checkpoint(path, num_classes=3, variant="softmax")
    assert tuned.classifier.fc.out_features == 3 and tuned.variant == "softmax"
    assert torch.equal(tuned.classifier.norm.weight, model.classifier.norm.weight)

    # load_pretrained accepts our checkpoint file as well.
    other = create_model("cct_2_3x2_32", num_classes=7, img_size=28, in_chans=1)
    assert len(load_pretrained(other, path).loaded) == len(model.state_dict())


def test_compiled_model_saves_plain_keys(tmp_path):
    model = create_model("cvt_2_4_32", variant="alpha_remix:alpha=0.3")
    compiled = torch.compile(model, backend="eager")
    path = save_checkpoint(tmp_path / "c.pt", compiled)
    ckpt = load_checkpoint(path)
    assert list(ckpt["model"]) == list(model.state_dict())
    # Unchanged parameters keep the user's exact numbers (not their float32 rounding);
    # the derived beta stays derived.
    assert ckpt["arch"]["variant_params"] == {"alpha": 0.3}


def test_save_refuses_what_weights_only_cannot_reload(tmp_path):
    model = create_model("cvt_2_4_32")
    with pytest.raises(CheckpointError, match=r"'config'\['out'\] is a PosixPath") as info:
        save_checkpoint(tmp_path / "x.pt", model, extra={"config": {"out": Path("/tmp")}})
    assert_one_line(info.value)
    with pytest.raises(CheckpointError, match="reserved"):
        save_checkpoint(tmp_path / "x.pt", model, extra={"model": {}})
    assert not (tmp_path / "x.pt").exists()


def test_load_checkpoint_refuses_an_official_state_dict(tmp_path, official_state_dict):
    path = tmp_path / "official.pth"
    torch.save(official_state_dict("cct_2_3x2_32"), path)
    with pytest.raises(CheckpointError, match="not an ablate checkpoint.*load_pretrained") as info:
        load_checkpoint(path)
    assert_one_line(info.value)
    with pytest.raises(CheckpointError, match="cannot rebuild 'no_such_model'"):
        model_from_checkpoint(
            {"model": {"w": torch.zeros(1)}, "arch": {}, "name": "no_such_model"}
        )


def test_parameter_count_unchanged_by_loading(official_state_dict):
    model = create_model("cct_7_3x1_32", img_size=64, num_classes=100)
    load_pretrained(model, official_state_dict("cct_7_3x1_32"))
    pe_rows = 32 * 32
    expected = 3783269 + (pe_rows - 256) * 256  # the c100 table count, with a larger table
    assert sum(p.numel() for p in model.parameters()) == expected
    assert math.isqrt(pe_rows) ** 2 == pe_rows


def test_a_write_that_dies_midway_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_torch_save({"epoch": 1}, path)

    def dying_save(obj, handle):  # the process dies after writing part of the file
        handle.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]
