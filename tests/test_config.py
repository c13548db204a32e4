import pytest

from ablate.config import RunConfig, config_from_mapping, load_yaml
from ablate.exceptions import ConfigError


def test_defaults_follow_recipe():
    cfg = RunConfig()
    assert (cfg.weight_decay, cfg.batch_size, cfg.label_smoothing, cfg.min_lr) == (
        0.06,
        128,
        0.1,
        1e-5,
    )
    assert cfg.effective_lr == 5.5e-4
    assert cfg.replace(init_from="x.pth").effective_lr == 1e-4
    assert cfg.replace(init_from="x.pth", lr=3e-4).effective_lr == 3e-4


def test_dash_keys_and_coercion():
    cfg = config_from_mapping(
        {"alpha-schedule": "linear", "epochs": "3", "lr": "1e-3", "quiet": "yes"}
    )
    assert (
        cfg.alpha_schedule == "linear" and cfg.epochs == 3 and cfg.lr == 1e-3 and cfg.quiet is True
    )


@pytest.mark.parametrize(
    "values, match",
    [
        ({"epoch": 3}, r"unknown key 'epoch'; did you mean epochs"),
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"lr": "fast"}, "lr must be a number"),
        (
            {"apply_to": "mlp"},
            "apply_to: 'mlp' is not valid; choose one of attention, seqpool, both",
        ),
        ({"alpha_steps": 5, "alpha_epochs": 1}, "exclusive"),
        ({"quiet": "maybe"}, "quiet must be true or false"),
    ],
)
def test_bad_values_name_the_key(values, match):
    with pytest.raises(ConfigError, match=match):
        config_from_mapping(values, source="f.yaml")


def test_an_unknown_schedule_is_refused_when_the_config_is_checked():
    """Schedules are a registry (a plug-in may add one), so resolve's check names them."""
    from ablate.trial.run import check

    with pytest.raises(ConfigError, match="alpha_schedule: 'exp' is not valid; choose one of"):
        check(config_from_mapping({"alpha_schedule": "exp"}))


def test_yaml_safe_loading(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("variant: softmax_v\nepochs: 2\n")
    assert config_from_mapping(load_yaml(p)).variant == "softmax_v"
    p.write_text("!!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(p)
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(p)
    with pytest.raises(ConfigError, match="no such config file"):
        load_yaml(tmp_path / "missing.yaml")
