"""resolve(): strings become objects once, bad input is one line before any run exists, and
validation never uses images the initial weights were trained on."""

from __future__ import annotations

import pytest
import torch

from ablate.config import RunConfig
from ablate.exceptions import ConfigError
from ablate.models import create_model
from ablate.resolve import resolve


@pytest.fixture
def official_like(tmp_path):
    """An official-format checkpoint (a plain state dict with the official keys)."""
    path = tmp_path / "cct_2_3x2_32_cifar10.pth"
    torch.save(create_model("cct_2_3x2_32").state_dict(), path)
    return path


def test_resolve_parses_the_variant_and_model_once():
    run = resolve(RunConfig(variant="alpha_remix:alpha=1,beta=1", model="cct_2_3x2_32"))
    assert run.variant == "alpha_remix" and dict(run.variant_params) == {"alpha": 1.0, "beta": 1.0}
    assert run.model.name == "cct_2_3x2_32" and run.task == "image"
    assert run.img_size == 16  # digits' own preferred size beats the model's 32
    assert run.tags["variant"] == "alpha_remix:alpha=1,beta=1" and run.tags["task"] == "image"
    assert run.cfg.val_split == "train" and not run.amp


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(model="text_cct_2"), "is a text model but data set 'digits' is image data"),
        (dict(task="text"), "does not match data set 'digits'"),
        (dict(alpha_schedule="linear"), "needs a variant with an 'alpha' parameter"),
        (dict(device="cuda:7"), "device: 'cuda:7'"),
    ],
)
def test_bad_combinations_are_one_line_config_errors(values, message):
    if values.get("device", "").startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(ConfigError, match=message):
        resolve(RunConfig(**values))


def test_official_weights_on_cifar_validate_on_half_of_the_test_split(official_like):
    run = resolve(RunConfig(dataset="cifar10", init_from=str(official_like)))
    assert run.cfg.val_split == "test_half"
    assert "official test split" in run.tags["split"]
    assert "whole training split" in run.tags["split"]
    with pytest.raises(ConfigError, match="use --val-split test_half"):
        resolve(RunConfig(dataset="cifar10", init_from=str(official_like), val_split="train"))


def test_official_weights_on_another_data_set_keep_the_train_holdout(official_like):
    run = resolve(RunConfig(dataset="digits", init_from=str(official_like)))
    assert run.cfg.val_split == "train" and run.in_chans == 3  # RGB weights: 3-channel digits


def test_our_checkpoint_records_its_split(tmp_path):
    from ablate.models.checkpoint import save_checkpoint

    model = create_model("cct_2_3x2_32", img_size=16, in_chans=1)
    holdout = tmp_path / "holdout.pt"
    save_checkpoint(holdout, model, extra={"config": RunConfig(dataset="cifar10").to_dict()})
    whole = tmp_path / "whole.pt"
    save_checkpoint(
        whole, model, extra={"config": RunConfig(dataset="cifar10", val_fraction=0.0).to_dict()}
    )
    assert resolve(RunConfig(dataset="cifar10", init_from=str(holdout))).cfg.val_split == "train"
    assert resolve(RunConfig(dataset="cifar10", init_from=str(whole))).cfg.val_split == "test_half"
