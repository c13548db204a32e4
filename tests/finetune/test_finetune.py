"""Fine-tuning: --init-from sources, freezing, layer decay, and alpha annealing end to end.

The end-to-end tests train for real on the embedded digits into one temporary SQLite MLflow
store shared by this module (one store: its schema migration is the slowest part of a run).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ablate.config import RunConfig
from ablate.exceptions import CheckpointError, ConfigError
from ablate.finetune import (
    freeze_parameters,
    load_source,
    lr_scale_fn,
    parameter_depth,
    parse_source,
    prepare_model,
)
from ablate.models import create_model
from ablate.models.checkpoint import load_checkpoint, save_checkpoint
from ablate.models.lora import is_lora_parameter, lora_modules, merge_lora_state_dict
from ablate.trial.run import resolve
from variants import AlphaSchedule

DIGITS_TRAIN = 1293  # digits: 1797 - 20 % test - 10 % val (fixed split seed)
FAST = dict(img_size=8, batch_size=128, quiet=True)  # 8x8 digits: 4 tokens


def _official_state_dict(keys: list, seed: int = 0) -> dict[str, torch.Tensor]:
    """What the official code would save: its exact ``[key, shape]`` pairs (an entry of the
    ``cct_keys`` fixture), random values."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(tuple(shape), generator=g) * 0.05 for k, shape in keys}


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# ---------------------------------------------------------------------------------------
# shared MLflow store + a trained source model


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.setenv("MPLBACKEND", "Agg")
        yield root


@pytest.fixture(scope="module")
def source_run(store):
    """A small softmax model trained on digits; its best.pt is what fine-tuning starts from."""
    from ablate.trial.run import train

    result = train(RunConfig(epochs=2, run_name="source", keep_checkpoints=True, **FAST))
    assert result.status == "FINISHED"
    return result


@pytest.fixture(scope="module")
def client(store):
    from mlflow import MlflowClient

    return MlflowClient()


# ---------------------------------------------------------------------------------------
# the acceptance run: alpha = 0 reproduces the source exactly, then anneals to 1


def test_finetune_from_a_run_starts_at_the_source_accuracy_and_anneals_alpha(
    store, source_run, client
):
    from ablate.trial.run import train

    rid = source_run.run_id
    epochs, alpha_epochs = 2, 1
    cfg = RunConfig(
        init_from=f"runs:/{rid}",
        variant="softmax_v",
        alpha_schedule="linear",
        alpha_start=0.0,
        alpha_end=1.0,
        alpha_epochs=alpha_epochs,  # anneal over the first epoch, then hold at 1
        epochs=epochs,
        warmup_epochs=1.0,
        run_name="finetune",
        **FAST,
    )
    result = train(cfg)
    assert result.status == "FINISHED"
    run = client.get_run(result.run_id)

    # Step 0 (alpha = 0, before any update): exactly the source model's best accuracy.
    val_acc = _history(client, result.run_id, "acc/val")
    assert val_acc[0][0] == 0
    assert val_acc[0][1] == source_run.best_val_acc
    assert result.history[0]["acc/val"] == source_run.best_val_acc
    # ... which is also what the source checkpoint itself recorded; the loss (a much finer
    # fingerprint of the logits than the accuracy) matches bit for bit too.
    assert run.data.tags["init.source_val_acc"] == str(source_run.best_val_acc)
    source_loss = dict(_history(client, source_run.run_id, "loss/val"))[source_run.best_epoch]
    assert _history(client, result.run_id, "loss/val")[0][1] == source_loss

    # The logged alpha is the schedule at step 0, then at each epoch's last optimizer step.
    spe = math.ceil(DIGITS_TRAIN / cfg.batch_size)
    schedule = AlphaSchedule("linear", 0.0, 1.0, steps=alpha_epochs * spe)
    alpha = _history(client, result.run_id, "alpha/value")
    assert [s for s, _ in alpha] == list(range(epochs + 1))
    expected = [schedule(0)] + [schedule(e * spe - 1) for e in range(1, epochs + 1)]
    assert [v for _, v in alpha] == pytest.approx(expected, abs=1e-12)
    assert alpha[0][1] == 0.0 and alpha[-1][1] == 1.0  # starts as softmax, ends at softmax^T(V)
    assert alpha[1][1] == 1.0  # --alpha-epochs 1 ends at the end of epoch 1, like the default

    # the setting is a param, resolved to the file it named; what loading did is tags
    assert run.data.params["init_from"] == f"runs:/{rid}/checkpoints/best.pt"
    tags = run.data.tags
    assert tags["init.source_kind"] == "checkpoint"
    assert tags["init.source_run_id"] == rid
    assert tags["init.source_model"] == "cct_2_3x2_32"
    assert tags["init.head"] == "loaded" and tags["init.resized"] == "none"
    assert float(_history(client, result.run_id, "optim/lr")[0][1]) <= 1e-4  # fine-tuning lr

    # The final logged model: plain keys, alpha recorded at its final value, loads by itself.
    from ablate.tracking.models import load_model, read_logged_model

    (final,) = [m for m in client.search_logged_models([run.info.experiment_id])
                if m.source_run_id == result.run_id and m.tags["ablate.weights"] == "final"]
    ckpt = read_logged_model(f"models:/{final.model_id}")
    assert ckpt["arch"]["variant"] == "softmax_v"
    assert ckpt["arch"]["variant_params"]["alpha"] == 1.0
    assert ckpt["arch"]["in_chans"] == 1
    model = load_model(f"models:/{final.model_id}")
    assert model.variant_params()["alpha"] == 1.0


def test_run_sources_resolve_through_mlflow_artifacts(store, source_run):
    rid = source_run.run_id
    local = load_checkpoint(Path("checkpoints") / rid / "best.pt")["model"]
    for text in (rid, f"runs:/{rid}", f"runs:/{rid}/checkpoints/best.pt", rid.upper()):
        src = load_source(text)
        assert src.kind == "checkpoint" and src.spec.run_id == rid and src.name == "cct_2_3x2_32"
        assert src.state_dict.keys() == local.keys()
        assert all(torch.equal(src.state_dict[k], local[k]) for k in local)
    assert resolve(RunConfig(init_from=rid)).in_chans == 1  # digits-trained: 1 channel
    # last.pt (a full training checkpoint, optimizer and all) is a valid source too.
    last = load_source(f"runs:/{rid}/checkpoints/last.pt")
    local_last = load_checkpoint(Path("checkpoints") / rid / "last.pt")["model"]
    assert last.kind == "checkpoint" and last.state_dict.keys() == local_last.keys()
    assert all(torch.equal(last.state_dict[k], v) for k, v in local_last.items())

    missing = "0" * 32
    match = f"cannot fetch checkpoints/best.pt of run {missing}"
    with pytest.raises(CheckpointError, match=match) as err:
        load_source(missing)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="cannot fetch checkpoints/nope.pt"):
        load_source(f"runs:/{rid}/checkpoints/nope.pt")


def test_unknown_sources_are_one_line_errors_listing_the_accepted_forms(tmp_path, cct_keys):
    for bad in ("no/such/file.pth", "runs:/not-a-run-id", "abc123", ""):
        with pytest.raises(CheckpointError) as err:
            parse_source(bad)
        msg = str(err.value)
        assert "\n" not in msg and "init_from" in msg
    with pytest.raises(CheckpointError, match=r"official CCT \.pth .*runs:/RUN_ID.*run id"):
        parse_source("no/such/file.pth")
    with pytest.raises(CheckpointError, match="is a directory"):
        parse_source(str(tmp_path))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_source(str(tmp_path / "junk.pth"))
    # An existing file wins over a run-id look-alike.
    name = "a" * 32
    torch.save(_official_state_dict(cct_keys["cct_2_3x2_32"]), tmp_path / name)
    assert parse_source(str(tmp_path / name)).path == tmp_path / name


# ---------------------------------------------------------------------------------------
# official-format weights


@pytest.fixture(scope="module")
def official_cct7(tmp_path_factory, cct_keys):
    path = tmp_path_factory.mktemp("official") / "cct_7_3x1_32.pth"
    sd = _official_state_dict(cct_keys["cct_7_3x1_32"])
    torch.save(sd, path)
    return path, sd


def _cct7(**kw):
    torch.manual_seed(0)
    return create_model("cct_7_3x1_32", **kw)


def test_official_state_dict_loads_strictly(official_cct7):
    path, sd = official_cct7
    model = _cct7()
    info = prepare_model(model, RunConfig(model="cct_7_3x1_32", init_from=str(path)))
    assert info["source_kind"] == "official" and info["source_file"] == str(path)
    assert info["loaded_tensors"] == len(sd) == 85
    assert info["head"] == "loaded" and info["resized"] == "none"
    ours = model.state_dict()
    assert list(ours) == list(sd)
    assert all(torch.equal(ours[k], v) for k, v in sd.items())
    assert resolve(RunConfig(init_from=str(path))).in_chans == 3


@pytest.mark.parametrize("defect", ["missing", "extra", "shape", "all"])
def test_official_state_dict_with_wrong_keys_is_refused_naming_them(
    official_cct7, tmp_path, defect
):
    _, good = official_cct7
    sd = dict(good)
    named = []
    if defect in ("missing", "all"):
        for k in ("classifier.blocks.3.linear1.bias", "classifier.norm.weight"):
            del sd[k]
            named.append(k)
    if defect in ("extra", "all"):
        sd["classifier.blocks.7.linear1.weight"] = torch.zeros(512, 256)
        named.append("classifier.blocks.7.linear1.weight")
    if defect in ("shape", "all"):
        sd["classifier.blocks.0.self_attn.qkv.weight"] = torch.zeros(768, 128)
        named.append("classifier.blocks.0.self_attn.qkv.weight")
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        prepare_model(_cct7(), RunConfig(model="cct_7_3x1_32", init_from=str(path)))
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    for key in named:
        assert key in msg, key


def test_official_state_dict_gets_a_new_head_for_another_class_count(official_cct7):
    path, sd = official_cct7
    model = _cct7(num_classes=3)
    fresh_fc = model.classifier.fc.weight.detach().clone()
    info = prepare_model(model, RunConfig(model="cct_7_3x1_32", init_from=str(path)))
    assert info["head"] == "replaced (10 -> 3 classes)"
    ours = model.state_dict()
    assert ours["classifier.fc.weight"].shape == (3, 256)
    assert torch.equal(ours["classifier.fc.weight"], fresh_fc)
    kept = {k: v for k, v in sd.items() if not k.startswith("classifier.fc.")}
    assert all(torch.equal(ours[k], v) for k, v in kept.items())


def test_official_state_dict_at_64px_gets_an_interpolated_positional_embedding(official_cct7):
    path, sd = official_cct7
    model = _cct7(img_size=64)
    info = prepare_model(model, RunConfig(model="cct_7_3x1_32", img_size=64, init_from=str(path)))
    assert info["resized"] == "classifier.positional_emb 1x256x256 -> 1x1024x256"
    pe = model.classifier.positional_emb.detach()
    # 16x16 token grid (32 px) -> 32x32 (64 px), bilinearly, row-major as the tokenizer flattens.
    grid = sd["classifier.positional_emb"].reshape(1, 16, 16, 256).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(pe, expected.permute(0, 2, 3, 1).reshape(1, 1024, 256))
    assert torch.equal(model.state_dict()["classifier.fc.weight"], sd["classifier.fc.weight"])
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_official_weights_finetune_on_digits_with_lora_and_resume(
    store, client, tmp_path, cct_keys
):
    """Tiny end to end at the default digits size: RGB weights -> 3-channel digits, LoRA
    (+ layer decay), interrupted after epoch 1 and resumed, merged weights logged."""
    from ablate.trial.run import train

    official = _official_state_dict(cct_keys["cct_2_3x2_32"], seed=3)
    path = tmp_path / "cct_2_3x2_32.pth"
    torch.save(official, path)
    cfg = RunConfig(
        init_from=str(path),
        lora_rank=2,
        lora_alpha=4.0,
        layer_decay=0.8,
        epochs=2,
        warmup_epochs=0.5,
        batch_size=128,
        quiet=True,
        run_name="official-lora",
        keep_checkpoints=True,
    )

    def stop_after_first(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_epoch=stop_after_first)
    experiment = client.get_experiment_by_name("ablate").experiment_id
    (run,) = client.search_runs([experiment], "attributes.run_name = 'official-lora'")
    assert run.info.status == "KILLED"
    result = train(cfg, resume_run_id=run.info.run_id)
    assert (
        result.status == "FINISHED" and len(result.history) == 3
    )  # epochs 0-2: the resumed run knows its whole curve
    rid = run.info.run_id
    assert [s for s, _ in _history(client, rid, "acc/val")] == [0, 1, 2]

    params = client.get_run(rid).data.tags
    assert params["init.source_kind"] == "official" and params["init.lora_modules"] == "8"
    assert params["init.head"] == "loaded"  # digits have 10 classes, like CIFAR-10
    # 32 px weights at the digits' 16 px: the 8x8 token grid becomes 4x4.
    assert params["init.resized"] == "classifier.positional_emb 1x64x128 -> 1x16x128"

    ckpt_dir = Path("checkpoints") / rid
    best = torch.load(ckpt_dir / "best.pt", weights_only=True)["model"]
    # Frozen means frozen: every pretrained tensor except the head is bit-identical (the
    # positional embedding to its interpolated value).
    pe = "classifier.positional_emb"
    grid = official[pe].reshape(1, 8, 8, 128).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(4, 4), mode="bilinear", align_corners=False)
    resized = resized.permute(0, 2, 3, 1).reshape(1, 16, 128)
    torch.testing.assert_close(best[pe], resized, atol=0, rtol=0)
    head = ("classifier.fc.", "classifier.attention_pool.")
    for k, v in official.items():
        if k != pe:
            assert torch.equal(best[k], v) != k.startswith(head), k
    adapters = [k for k in best if k.endswith("lora_B")]
    assert len(adapters) == 8 and all(torch.count_nonzero(best[k]) > 0 for k in adapters)

    # The run's final logged model holds the merged weights, loadable without adapters.
    from ablate.tracking.models import load_model, read_logged_model

    (logged,) = [m for m in client.search_logged_models([experiment])
                 if m.source_run_id == rid and m.tags["ablate.weights"] == "final"]
    exported = read_logged_model(f"models:/{logged.model_id}")
    assert sorted(exported["model"]) == sorted(official)  # plain official keys, no lora_*
    assert exported["arch"]["in_chans"] == 3  # the digits were converted to RGB
    plain = load_model(f"models:/{logged.model_id}")
    adapted = create_model("cct_2_3x2_32", img_size=16, in_chans=3)
    prepare_model(adapted, cfg)
    # it is the final model (the end of the schedule), as last.pt holds it
    final = torch.load(ckpt_dir / "last.pt", weights_only=True)["model"]
    adapted.load_state_dict(final, strict=True)
    x = torch.rand(8, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), adapted.eval()(x), atol=1e-5, rtol=0)

    # A LoRA run is itself a valid source: its adapters are merged while reading.
    # (runs:/ID reads the run's best.pt; its final logged model holds the final weights)
    src = load_source(rid)
    assert src.merged_adapters == 8 and set(src.state_dict) == set(official)
    key = "classifier.blocks.0.linear1.weight"
    torch.testing.assert_close(
        src.state_dict[key], merge_lora_state_dict(best)[key], atol=1e-6, rtol=0
    )
    final_src = load_source(f"models:/{logged.model_id}")
    torch.testing.assert_close(final_src.state_dict[key], exported["model"][key], atol=0, rtol=0)


# ---------------------------------------------------------------------------------------
# freezing and layer-wise learning-rate decay


def _cct2(**kw):
    torch.manual_seed(0)
    return create_model("cct_2_3x2_32", img_size=16, in_chans=1, **kw)


def test_freeze_options_freeze_exactly_what_they_say():
    names = [n for n, _ in _cct2().named_parameters()]
    embedding = {
        "tokenizer.conv_layers.0.0.weight",
        "tokenizer.conv_layers.1.0.weight",
        "classifier.positional_emb",
    }
    head = {
        "classifier.attention_pool.weight",
        "classifier.attention_pool.bias",
        "classifier.fc.weight",
        "classifier.fc.bias",
    }
    assert embedding | head <= set(names)
    for what, frozen in (
        ("none", set()),
        ("tokenizer", embedding),
        ("encoder", set(names) - head),
    ):
        model = _cct2()
        info = prepare_model(model, RunConfig(freeze=what))
        assert {n for n, p in model.named_parameters() if not p.requires_grad} == frozen, what
        assert info.get("frozen_tensors", 0) == len(frozen)
    assert freeze_parameters(_cct2(), "none") == []
    with pytest.raises(ConfigError, match="freeze"):
        freeze_parameters(_cct2(), "everything")
    with pytest.raises(ConfigError, match="freeze 'encoder' would freeze the LoRA adapters"):
        prepare_model(_cct2(), RunConfig(freeze="encoder", lora_rank=2))


def test_layer_decay_scales_follow_the_formula():
    from ablate.trial.loop import _param_groups

    model = _cct2()
    assert lr_scale_fn(model, RunConfig()) is None  # 1.0 = off
    d, L = 0.7, 2
    scale = lr_scale_fn(model, RunConfig(layer_decay=d))
    expected = {
        "tokenizer.conv_layers.0.0.weight": d ** (L + 1),
        "classifier.positional_emb": d ** (L + 1),
        "classifier.blocks.0.self_attn.qkv.weight": d**L,
        "classifier.blocks.0.norm1.bias": d**L,
        "classifier.blocks.1.linear2.weight": d ** (L - 1),
        "classifier.norm.weight": 1.0,
        "classifier.attention_pool.weight": 1.0,
        "classifier.fc.bias": 1.0,
    }
    for name, value in expected.items():
        assert scale(name) == pytest.approx(value, rel=1e-12), name
    for name, _ in model.named_parameters():
        assert scale(name) == pytest.approx(d ** (L + 1 - parameter_depth(name, L)))
    # The optimizer groups get lr * scale (what train() builds).
    groups = _param_groups(model, 0.05, 1e-3, scale)
    assert sorted({round(g["lr"], 12) for g in groups}) == sorted(
        {round(1e-3 * d**k, 12) for k in (0, 1, 2, 3)}
    )
    # With LoRA the adapters of block i decay like block i.
    lora = _cct2()
    cfg = RunConfig(layer_decay=d, lora_rank=2)
    prepare_model(lora, cfg)
    lscale = lr_scale_fn(lora, cfg)
    assert lscale("classifier.blocks.0.linear1.lora_A") == pytest.approx(d**L)
    assert lscale("classifier.blocks.1.self_attn.qkv.lora_B") == pytest.approx(d ** (L - 1))
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ConfigError, match="layer_decay"):
            lr_scale_fn(model, RunConfig(layer_decay=bad))


def test_checkpoint_of_another_architecture_is_refused_with_a_hint(tmp_path):
    path = save_checkpoint(tmp_path / "pre.pt", _cct2(norm_placement="pre"))
    with pytest.raises(CheckpointError, match=r"norm_placement='pre' \(this run: 'cct'\)"):
        prepare_model(_cct2(), RunConfig(init_from=str(path)))
    cct4 = create_model("cct_4_3x2_32", img_size=16, in_chans=1)
    other = save_checkpoint(tmp_path / "cct4.pt", cct4)
    with pytest.raises(CheckpointError, match="try --model cct_4_3x2_32") as err:
        prepare_model(_cct2(), RunConfig(init_from=str(other)))
    assert "unexpected keys: classifier.blocks.2." in str(err.value)


def test_a_lora_checkpoint_is_merged_when_used_as_a_source(tmp_path):
    adapted = _cct2()
    prepare_model(adapted, RunConfig(lora_rank=2, lora_alpha=2.0))
    with torch.no_grad():
        for m in lora_modules(adapted).values():
            m.lora_B.normal_(std=0.05)
    path = save_checkpoint(tmp_path / "best.pt", adapted)
    assert any(is_lora_parameter(k) for k in torch.load(path, weights_only=True)["model"])
    plain = _cct2()
    info = prepare_model(plain, RunConfig(init_from=str(path)))
    assert info["source_lora_merged"] == 8 and not lora_modules(plain)
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), adapted.eval()(x), atol=1e-5, rtol=0)


def test_finetune_command_applies_finetuning_defaults(store, source_run, client):
    """`ablate finetune` = `ablate run` with softmax_v annealed 0 -> 1 and the fine-tuning lr."""
    from ablate.cli import main

    code = main(
        [
            "finetune",
            "--init-from",
            source_run.run_id,
            "--img-size",
            "8",
            "--epochs",
            "1",
            "--run-name",
            "cli-finetune",
            "--quiet",
        ]
    )
    assert code == 0
    (run,) = client.search_runs(
        [client.get_experiment_by_name("ablate").experiment_id],
        filter_string="attributes.run_name = 'cli-finetune'",
    )
    p = run.data.params
    assert (p["variant"], p["alpha_schedule"], p["alpha_start"], p["alpha_end"]) == (
        "softmax_v",
        "linear",
        "0.0",
        "1.0",
    )
    assert run.data.tags["init.source_run_id"] == source_run.run_id
    assert run.data.tags["init.attention"] == "as the source: softmax"
    alphas = [m.value for m in client.get_metric_history(run.info.run_id, "alpha/value")]
    assert alphas[0] == 0.0 and alphas[-1] == 1.0
    # the first point is the source model itself (alpha = 0 is standard attention)
    val0 = next(
        m.value for m in client.get_metric_history(run.info.run_id, "acc/val") if m.step == 0
    )
    assert val0 == source_run.best_val_acc


def test_finetune_command_needs_a_source(capsys):
    from ablate.cli import main

    assert main(["finetune", "--epochs", "1"]) == 2
    assert "needs --init-from" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# `ablate finetune` continues what the source computed


@pytest.mark.parametrize(
    "variant, apply_to, expected",
    [
        ("softmax", "attention", {"variant": "softmax_v", "alpha_schedule": "linear",
                                  "alpha_start": 0.0, "alpha_end": 1.0}),
        # alpha 0 is standard attention exactly: the same as official weights
        ("softmax_v:alpha=0", "attention", {"variant": "softmax_v", "alpha_schedule": "linear",
                                            "alpha_start": 0.0, "alpha_end": 1.0}),
        ("softmax_v:alpha=0.25", "both", {"variant": "softmax_v:alpha=0.25", "apply_to": "both",
                                          "alpha_schedule": "none", "alpha_start": 0.25}),
        ("alpha_remix:alpha=1,beta=1", "attention",
         {"variant": "alpha_remix:alpha=1.0,beta=1.0", "apply_to": "attention",
          "alpha_schedule": "none", "alpha_start": 1.0}),
        ("softmax_v:alpha=learned,alpha_shape=head", "attention",
         {"variant": "softmax_v:alpha=learned,alpha_shape=head", "apply_to": "attention",
          "alpha_schedule": "none"}),
    ],
)
def test_finetune_defaults_continue_the_sources_own_attention(
    tmp_path, variant, apply_to, expected
):
    path = save_checkpoint(tmp_path / "src.pt", _cct2(variant=variant, apply_to=apply_to))
    assert load_source(str(path)).continuation() == expected
    official = tmp_path / "official.pth"
    torch.save(_cct2().state_dict(), official)
    assert load_source(str(official)).continuation()["variant"] == "softmax_v"


def test_a_start_that_changes_the_sources_function_is_announced(tmp_path, capsys):
    path = save_checkpoint(tmp_path / "src.pt", _cct2(variant="softmax_v"))  # alpha 1
    cases = {
        RunConfig(init_from=str(path), variant="softmax_v"): "as the source: softmax_v:alpha=1.0",
        RunConfig(init_from=str(path), variant="softmax_v", alpha_schedule="linear",
                  alpha_start=0.0): "starting at alpha 0 from a model trained at alpha 1",
        RunConfig(init_from=str(path)): "starting with softmax from a model trained with "
                                        "softmax_v:alpha=1.0",
        RunConfig(init_from=str(path), variant="laser"): "starting with laser from a model "
                                                         "trained with softmax_v:alpha=1.0",
    }
    for cfg, expected in cases.items():
        info = prepare_model(_cct2(variant=cfg.variant), cfg)
        err = capsys.readouterr().err
        assert info["attention"].startswith(expected), info["attention"]
        if expected.startswith("as the source"):
            assert err == ""
        else:
            assert info["attention"] == f"{expected}: epoch 0 will differ from the source"
            assert err == f"ablate: init_from {path}: {info['attention']}\n"


@pytest.fixture(scope="module")
def softmax_v_source(store):
    """softmax_v at its default alpha 1 (no schedule), trained for one epoch."""
    from ablate.trial.run import train

    return train(RunConfig(variant="softmax_v", epochs=1, run_name="softmax_v source", **FAST))


def test_finetune_from_a_softmax_v_alpha_1_source_starts_at_its_accuracy(
    store, softmax_v_source, client, capsys
):
    """Issue #26 item 2: by default epoch 0 is the source itself; another variant is run
    only when asked for, and announced."""
    from ablate.cli import main

    rid = softmax_v_source.run_id
    common = ["--init-from", rid, "--img-size", "8", "--epochs", "1", "--quiet"]
    assert main(["finetune", *common, "--run-name", "continue"]) == 0
    assert "will differ" not in capsys.readouterr().err
    experiment = client.get_experiment_by_name("ablate").experiment_id
    (run,) = client.search_runs([experiment], "attributes.run_name = 'continue'")
    p = run.data.params
    assert (p["variant"], p["variant.alpha"]) == ("softmax_v", "1.0")
    assert "alpha_schedule" not in p  # continues at the source's alpha, no schedule
    val0 = [v for s, v in _history(client, run.info.run_id, "acc/val") if s == 0]
    assert val0 == [softmax_v_source.best_val_acc]
    assert run.data.tags["init.attention"] == "as the source: softmax_v:alpha=1.0"

    assert main(["finetune", *common, "--variant", "softmax", "--run-name", "changed"]) == 0
    note = ("starting with softmax from a model trained with softmax_v:alpha=1.0: "
            "epoch 0 will differ from the source")
    assert note in capsys.readouterr().err
    (changed,) = client.search_runs([experiment], "attributes.run_name = 'changed'")
    assert changed.data.tags["init.attention"] == note
