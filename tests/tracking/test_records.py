"""What a run leaves in MLflow, read back through a plain ``MlflowClient``: params are the
effective configuration (each setting once, resolved, only what applies), equal to
``config.yaml`` and the checkpoint's config, and loading them back gives the same run."""

from __future__ import annotations

import pytest
import yaml

from ablate.config import RunConfig, config_from_mapping
from ablate.trial.run import resolve, run_trial

FAST = dict(img_size=8, quiet=True, system_metrics=False, keep_checkpoints=True)


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory):
    """A 2-epoch softmax_v run annealed 0 -> 1, read back as (run, config.yaml, last.pt)."""
    import torch
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("records")
    uri = f"sqlite:///{root}/mlflow.db"
    cfg = RunConfig(**FAST, epochs=2, variant="softmax_v", alpha_schedule="linear",
                    tracking_uri=uri, checkpoint_dir=str(root / "ckpt"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        result = run_trial(resolve(cfg))
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    config = yaml.safe_load(open(client.download_artifacts(result.run_id, "config.yaml", root)))
    last = torch.load(root / "ckpt" / result.run_id / "last.pt", weights_only=True)
    return run, config, last


def test_params_are_the_effective_configuration_once(scheduled):
    run, config, last = scheduled
    params = run.data.params
    # resolved defaults: the effective lr, digits at the requested 8 px, the model's dropout
    assert float(params["lr"]) == 5.5e-4 and params["img_size"] == "8"
    assert params["dropout"] == "0.0" and params["attention_dropout"] == "0.1"
    assert params["augment"] == "crop" and params["mixup"] == "0.0"  # what "auto" is here
    assert params["variant"] == "softmax_v" and "variant.alpha" not in params  # scheduled
    assert params["alpha_schedule"] == "linear" and params["alpha_epochs"] == "2"
    assert params["device"] == "cpu" and params["amp"] == "False"
    assert params["test_fraction"] == "0.2"  # digits has no test split: it is held out
    # nothing that does not apply: text settings, fine-tuning, this machine's paths
    for key in ("text_col", "label_col", "max_len", "embeddings", "lora_alpha", "lora_rank",
                "freeze", "init_from", "alpha_lr", "alpha_levels", "alpha_steps",
                "checkpoint_dir", "tracking_uri", "data_dir", "quiet", "run_name"):
        assert key not in params, key
    assert {k: str(v) for k, v in config.items()} == params  # config.yaml says the same
    assert last["config"] == config  # and so does the checkpoint


def test_tags_do_not_repeat_params(scheduled):
    run, _, _ = scheduled
    tags = run.data.tags
    assert not set(tags) & set(run.data.params)
    assert not [k for k in tags if k.startswith(("local.", "variant", "init."))]
    assert tags["split"].startswith("validation: held out") and tags["sdpa_backend"]
    assert int(tags["n_params"]) > 0 and tags["data.test_size"] == "360"


def test_loading_the_params_back_gives_the_same_run(scheduled):

    _, config, _ = scheduled
    again = resolve(config_from_mapping({**config, **FAST}))
    assert again.variant_spec.name == "softmax_v" and again.alpha_schedule is not None
    assert again.cfg.effective_lr == config["lr"] and again.img_size == 8


def test_a_fixed_variant_logs_its_parameters_and_learned_alpha_its_options():
    from ablate.config import _fold_variant_params

    folded = _fold_variant_params({"variant": "alpha_remix", "variant.alpha": 0.5,
                                   "variant.beta": 1.0})
    assert folded["variant"] == "alpha_remix:alpha=0.5,beta=1.0"
    folded = _fold_variant_params({"variant": "softmax_v", "variant.alpha": "learned",
                                   "variant.alpha_shape": "head", "variant.alpha_init": 0.0})
    spec = resolve(config_from_mapping(folded)).variant_spec
    assert spec.learned is not None and spec.learned.shape == "head"
