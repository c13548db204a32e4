"""resolve(): strings become objects once, bad input is one line before any run exists, and
validation never uses images the initial weights were trained on."""

from __future__ import annotations

import pytest
import torch

from ablate.config import RunConfig
from ablate.exceptions import ConfigError
from ablate.models import create_model
from ablate.trial.run import resolve


@pytest.fixture
def official_like(tmp_path):
    """An official-format checkpoint (a plain state dict with the official keys)."""
    path = tmp_path / "cct_2_3x2_32_cifar10.pth"
    torch.save(create_model("cct_2_3x2_32").state_dict(), path)
    return path


def test_resolve_parses_the_variant_and_model_once():
    run = resolve(RunConfig(variant="alpha_remix:alpha=1,beta=1", model="cct_2_3x2_32"))
    spec = run.variant_spec
    assert spec.name == "alpha_remix" and dict(spec.params) == {"alpha": 1.0, "beta": 1.0}
    assert run.model.name == "cct_2_3x2_32" and run.task == "image"
    assert run.img_size == 16  # digits' own preferred size beats the model's 32
    assert str(run.variant_spec) == "alpha_remix:alpha=1,beta=1"
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
    assert "official test split" in run.split_provenance
    assert "whole training split" in run.split_provenance
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


# -- VariantSpec: the one parsed form of --variant ---------------------------------------------
def test_variant_spec_parses_once_and_prints_back():
    from variants import VariantSpec

    spec = VariantSpec.parse(" alpha_remix : alpha = 1 , beta=0.5 ")
    assert spec == VariantSpec("alpha_remix", {"alpha": 1.0, "beta": 0.5})
    assert str(spec) == "alpha_remix:alpha=1,beta=0.5" and VariantSpec.parse(str(spec)) == spec
    assert str(VariantSpec()) == "softmax" and VariantSpec().params == {}
    assert spec.resolved_params()["beta"] == 0.5
    assert VariantSpec.parse("softmax_v").resolved_params() == {"alpha": 1.0}  # the default
    merged = VariantSpec.coerce("alpha_remix:alpha=1", {"beta": 2})
    assert merged.params == {"alpha": 1.0, "beta": 2.0}
    assert VariantSpec.coerce(spec) is spec


@pytest.mark.parametrize(
    "text, message",
    [
        ("sofmax", "unknown attention variant 'sofmax'; valid variants: "),
        ("softmax_v:gamma=2", "variant 'softmax_v' has no parameter 'gamma'; its parameters"),
        ("softmax_v:alpha", "variant parameters must look like key=value"),
        ("softmax_v:alpha=high", "variant parameter 'alpha' must be a number"),
    ],
)
def test_variant_spec_refuses_what_does_not_exist(text, message):
    from variants import VariantSpec

    with pytest.raises(ValueError, match=message):
        VariantSpec.parse(text)


# -- check(cfg): every name, nothing loaded ----------------------------------------------------
def test_resolve_carries_objects_not_strings():
    from variants import AlphaSchedule, VariantSpec

    run = resolve(RunConfig(variant="softmax_v:alpha=0", alpha_schedule="cosine", epochs=4))
    assert run.variant_spec == VariantSpec("softmax_v", {"alpha": 0.0})
    assert not run.model.external and run.task == "image"
    schedule = run.alpha_schedule
    assert isinstance(schedule, AlphaSchedule) and schedule.kind == "cosine"
    assert schedule.steps is None and schedule.epochs == 4  # sized to the data by the loop
    assert schedule.sized(10).steps == 40 and schedule.sized(10)(39) == 1.0
    steps = resolve(RunConfig(variant="softmax_v", alpha_schedule="linear", alpha_steps=7))
    assert steps.alpha_schedule.steps == 7 and steps.alpha_schedule.sized(10).steps == 7
    assert resolve(RunConfig()).alpha_schedule is None


def test_check_finds_every_name_without_weights_device_or_data(tmp_path):
    from ablate.trial.run import check

    # neither the device nor the initial weights are looked at
    missing = tmp_path / "no-such-weights.pt"
    checked = check(RunConfig(device="cuda", init_from=str(missing), variant="softmax_v"))
    assert checked.variant.name == "softmax_v" and checked.model.name == RunConfig().model
    assert checked.task == "image" and checked.alpha_schedule is None
    with pytest.raises(ConfigError, match="unknown model 'cct_9'"):
        check(RunConfig(model="cct_9"))
    with pytest.raises(ConfigError, match="unknown dataset 'mnits'"):
        check(RunConfig(dataset="mnits"))
    with pytest.raises(ConfigError, match="unknown attention variant 'sofmax'"):
        check(RunConfig(variant="sofmax"))


def test_check_of_names_alone_leaves_combinations_to_the_whole_config():
    from ablate.trial.run import check

    text_model_on_images = RunConfig(model="text_cct_2")
    assert check(text_model_on_images, combinations=False).model.task == "text"
    with pytest.raises(ConfigError, match="is a text model but data set 'digits'"):
        check(text_model_on_images)
    no_alpha = RunConfig(alpha_schedule="linear")
    assert check(no_alpha, combinations=False).alpha_schedule.kind == "linear"
    with pytest.raises(ConfigError, match="needs a variant with an 'alpha' parameter"):
        check(no_alpha)


def test_the_data_set_is_classified_once_per_trial(workdir, monkeypatch):
    import ablate.data
    from ablate.trial.run import load_data_for

    calls = []
    classify = ablate.data.dataset_task

    def counted(name: str) -> str:
        calls.append(name)
        return classify(name)

    monkeypatch.setattr(ablate.data, "dataset_task", counted)
    run = resolve(RunConfig(img_size=8))
    bundle = load_data_for(run)
    assert calls == ["digits"] and bundle.task == "image"


def test_a_variant_file_is_imported_once_per_version(tmp_path, monkeypatch):
    import warnings

    import variants._registry
    from ablate.trial.run import check

    # what this test registers disappears after it
    monkeypatch.setattr(variants._registry, "_REGISTRY", dict(variants._registry._REGISTRY))

    path = tmp_path / "my_variants.py"
    path.write_text(
        "import torch.nn.functional as F\n"
        "from variants import register_attention\n\n"
        "@register_attention('test_once_gain', params={'gain': 1.0})\n"
        "def gain(q, k, v, *, mask=None, bias=None, dropout_p=0.0, scale=None, gain=1.0):\n"
        "    return F.scaled_dot_product_attention(q, k, v * gain, scale=scale)\n"
    )
    cfg = RunConfig(variant_file=str(path), variant="test_once_gain:gain=2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second import would warn "re-registered"
        for _ in range(3):  # e.g. a study checking every grid cell
            assert check(cfg).variant.params == {"gain": 2.0}
