"""A learned alpha (``variant ...:alpha=learned``): parsing, exact start, gradients, the
optimizer group, the logged metrics and figure, resume, and the refusal of a schedule.

Real components: models from the registry, a real SQLite MLflow store in tmp_path and real
digits runs of a few epochs.
"""

from __future__ import annotations

import pytest
import torch
from helpers import run_stopped_after  # tests/helpers.py

from ablate.config import RunConfig
from ablate.exceptions import ConfigError
from ablate.models import create_model
from ablate.models.learned_alpha import AlphaParameter, alpha_metrics, split_alpha_group
from ablate.trial.run import resolve, run_trial
from variants import LearnedAlpha, VariantSpec

FAST = dict(dataset="digits", img_size=8, batch_size=128, quiet=True, seed=0)
REMIXES = ["softmax_v", "alpha_remix", "laser_remix", "softmax_v_scaled"]


def _model(variant: str, apply_to: str = "both", seed: int = 0):
    torch.manual_seed(seed)
    return create_model("cct_2_3x2_32", variant=VariantSpec.parse(variant), apply_to=apply_to)


# -- parsing ---------------------------------------------------------------------------------
def test_variant_string_round_trips_and_bad_options_are_one_line_errors():
    text = "alpha_remix:beta=1,alpha=learned,alpha_shape=head,alpha_init=0.25,alpha_range=[-1,1]"
    spec = VariantSpec.parse(text)
    assert spec.params == {"beta": 1.0}
    assert spec.learned == LearnedAlpha("head", 0.25, (-1.0, 1.0))
    assert str(spec) == text and VariantSpec.parse(str(spec)) == spec
    for bad, fragment in [
        ("softmax:alpha=learned", "needs a variant with an 'alpha'"),
        ("softmax_v:alpha=learned,alpha=1", "no fixed alpha"),
        ("softmax_v:alpha_shape=head", "only go with alpha=learned"),
        ("softmax_v:alpha=learned,alpha_shape=row", "choose one of layer, head"),
        ("softmax_v:alpha=learned,alpha_range=[0,1]", "strictly inside"),
        ("softmax_v:alpha=learned,alpha_range=0:1", r"\[lo,hi\]"),
    ]:
        with pytest.raises(ValueError, match=fragment) as info:
            VariantSpec.parse(bad)
        assert "\n" not in str(info.value)


# -- exact start -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", REMIXES)
@pytest.mark.parametrize(
    "options",
    ["", ",alpha_shape=head", ",alpha_range=[-1,1]", ",alpha_shape=head,alpha_range=[-2,3]"],
)
def test_alpha_starts_at_exactly_zero_and_the_model_is_standard_attention(name, options):
    learned = _model(f"{name}:alpha=learned{options}")
    plain = _model("softmax")  # same seed: the alpha parameter draws no random numbers
    assert set(alpha_metrics(learned).values()) == {0.0}
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(learned.eval()(x), plain.eval()(x))
    torch.manual_seed(2)  # training mode: attention dropout and stochastic depth too
    out_learned = learned.train()(x)
    torch.manual_seed(2)
    assert torch.equal(out_learned, plain.train()(x))


@pytest.mark.parametrize("shape", ["layer", "head"])
def test_alpha_init_inside_a_range_is_reached_exactly(shape):
    param = AlphaParameter(LearnedAlpha(shape, 0.3, (-1.0, 2.0)), heads=4)
    assert (param() == torch.tensor(0.3)).all()
    assert param().shape == ((4, 1, 1) if shape == "head" else ())
    with torch.no_grad():  # the squash keeps alpha inside the range however far raw goes
        param.raw.fill_(50.0)
    assert param().max() <= 2.0 + 1e-6
    with torch.no_grad():
        param.raw.fill_(-50.0)
    assert param().min() >= -1.0 - 1e-6


def test_fixed_and_learned_alpha_agree_at_the_same_value():
    learned = _model("softmax_v:alpha=learned,alpha_init=0.3", apply_to="attention")
    fixed = _model("softmax_v:alpha=0.3", apply_to="attention")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(learned.eval()(x), fixed.eval()(x))


# -- gradients and the optimizer group ---------------------------------------------------------
@pytest.mark.parametrize("name", REMIXES)
@pytest.mark.parametrize("options", ["", ",alpha_shape=head,alpha_range=[-1,1]"])
def test_gradient_flows_into_every_alpha(name, options):
    model = _model(f"{name}:alpha=learned{options}").train()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 1, 2, 3])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    raws = [p.raw for p in model.modules() if isinstance(p, AlphaParameter)]
    assert len(raws) == 3  # two encoder layers and the pooling site
    for raw in raws:
        assert raw.grad is not None and torch.isfinite(raw.grad).all()
        assert (raw.grad != 0).all(), f"{name}: an alpha got no gradient"


def test_alphas_get_their_own_group_with_their_lr_and_no_weight_decay():
    model = _model("softmax_v:alpha=learned,alpha_shape=head")
    base = [{"params": list(model.parameters()), "weight_decay": 0.06, "lr": 1e-3, "lr_scale": 1}]
    groups = split_alpha_group(base, model, lr=1e-3, alpha_lr=0.05)
    raws = {id(p.raw) for p in model.modules() if isinstance(p, AlphaParameter)}
    assert {id(p) for p in groups[-1]["params"]} == raws
    assert groups[-1]["weight_decay"] == 0.0 and groups[-1]["lr"] == 0.05
    assert not any(id(p) in raws for g in groups[:-1] for p in g["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


# -- a real run: metrics, figure, resume, refusal ------------------------------------------------
def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_two_epoch_run_logs_every_alpha_each_epoch_and_draws_them(workdir):
    from mlflow import MlflowClient

    cfg = RunConfig(
        **FAST, epochs=2, variant="softmax_v:alpha=learned,alpha_shape=head", alpha_lr=0.05
    )
    result = run_trial(resolve(cfg))
    client = MlflowClient()
    metrics = client.get_run(result.run_id).data.metrics
    keys = sorted(k for k in metrics if k.startswith("alpha/"))
    assert keys == [f"alpha/layer{i}/head{j}" for i in range(2) for j in range(2)]
    assert "alpha/value" not in metrics  # no single fixed alpha to report
    for key in keys:
        history = _history(client, result.run_id, key)
        assert [s for s, _ in history] == [0, 1, 2] and history[0][1] == 0.0
        assert history[-1][1] != 0.0  # alpha_lr 0.05: it moved
    figures = {f.path for f in client.list_artifacts(result.run_id, "figures")}
    assert "figures/learning_curves.png" in figures
    assert result.history[-1][keys[0]] == metrics[keys[0]]


def test_resume_brings_the_learned_alphas_back(workdir):
    from mlflow import MlflowClient

    cfg = RunConfig(**FAST, epochs=3, variant="alpha_remix:alpha=learned", alpha_lr=0.05)
    reference = run_trial(resolve(cfg.replace(experiment="reference")))

    run_id = run_stopped_after(cfg, epoch=2)
    resumed = run_trial(resolve(cfg), resume_run_id=run_id)
    client = MlflowClient()
    for key in ("alpha/layer0", "alpha/layer1", "loss/val"):
        # epoch 3 continues from the restored alphas exactly as the uninterrupted run did
        assert _history(client, run_id, key) == _history(client, reference.run_id, key)
    assert _history(client, run_id, "alpha/layer0")[-1][1] != 0.0
    assert resumed.history[-1]["alpha/layer1"] == reference.history[-1]["alpha/layer1"]


def test_a_schedule_with_a_learned_alpha_is_refused_in_one_line():
    cfg = RunConfig(**FAST, variant="softmax_v:alpha=learned", alpha_schedule="linear")
    with pytest.raises(ConfigError, match="cannot drive a learned alpha") as info:
        resolve(cfg)
    assert "\n" not in str(info.value) and "--alpha-schedule none" in str(info.value)
