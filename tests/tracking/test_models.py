"""MLflow 3 as its users know it, on a real SQLite store: a finished `ablate run` has data
sets with digests, two logged models linked to it, run-context tags, system metrics and no
"None" params; a registered version loads with mlflow.pytorch / mlflow.pyfunc to ablate's
logits and fine-tunes from exactly its weights, with its lineage recorded."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from helpers import run_stopped_after  # tests/helpers.py

from ablate.cli import main

PROBE = """\
from variants import register_attention
from variants.softmax import softmax


@register_attention("h18_probe")
def h18_probe(q, k, v, *, mask=None, dropout_p=0.0, scale=None):
    return softmax(q, k, v, mask=mask, dropout_p=dropout_p, scale=scale)
"""
FAST = ["--img-size", "8", "--quiet", "--batch-size", "128", "--system-metrics-interval", "0.2"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One finished 2-epoch run (softmax_v, alpha annealed) in its own SQLite store."""
    root = tmp_path_factory.mktemp("mlflow_assets")
    uri = f"sqlite:///{root}/mlflow.db"
    from variants import _registry

    (root / "probe_variants.py").write_text(PROBE)
    before = dict(_registry._REGISTRY)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        args = ["run", "--variant", "softmax_v", "--alpha-schedule", "linear", "--epochs", "2"]
        try:
            code = main([*args, *FAST, "--run-name", "source", "--variant-file",
                         "probe_variants.py"])
        finally:  # the probe variant stays out of the other tests' registry
            _registry._REGISTRY.clear()
            _registry._REGISTRY.update(before)
        assert code == 0
        yield root, uri


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri, registry_uri=uri)


def _run(uri: str, name: str):
    client = _client(uri)
    exp = client.get_experiment_by_name("ablate")
    (run,) = client.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'")
    return run


def test_run_has_three_datasets_with_digests_contexts_and_profiles(store):
    _, uri = store
    run = _run(uri, "source")
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"digits-train", "digits-validation", "digits-test"}
    sizes = {"digits-train": 1293, "digits-validation": 144, "digits-test": 360}
    for name, item in inputs.items():
        context = {t.key: t.value for t in item.tags}["mlflow.data.context"]
        assert name == f"digits-{context}"
        assert len(item.dataset.digest) == 16
        profile = json.loads(item.dataset.profile)
        assert profile["num_rows"] == sizes[name] and profile["num_classes"] == 10
        assert sum(profile["class_counts"]) == sizes[name]
        assert json.loads(item.dataset.source)["uri"]
    assert len({d.dataset.digest for d in inputs.values()}) == 3


def test_run_context_tags_system_metrics_and_clean_params(store):
    _, uri = store
    run = _run(uri, "source")
    tags, params = run.data.tags, run.data.params
    assert tags["mlflow.user"] and tags["mlflow.user"] != "unknown"
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]
    assert len(tags["mlflow.source.git.commit"]) == 40
    assert [k for k, v in params.items() if v == "None"] == []
    for local in ("quiet", "checkpoint_dir", "data_dir", "system_metrics_interval"):
        assert local not in params  # this machine's settings shape nothing
    assert not [k for k in tags if k.startswith("local.")]
    assert "tracking_uri" not in params
    client = _client(uri)
    code = {f.path for f in client.list_artifacts(run.info.run_id, "code")}
    assert code == {"code/probe_variants.py"}  # the --variant-file's source
    system = [k for k in run.data.metrics if k.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system
    assert "system/system_memory_usage_megabytes" in system


def _logged_models(uri: str, name: str) -> dict:
    client = _client(uri)
    run = _run(uri, name)
    models = client.search_logged_models([run.info.experiment_id])
    return {m.tags["ablate.weights"]: m for m in models if m.source_run_id == run.info.run_id}


def test_final_and_best_weights_are_pytorch_models_of_the_run_without_pickles(store):
    from mlflow.models import Model

    _, uri = store
    client = _client(uri)
    run = _run(uri, "source")
    ours = _logged_models(uri, "source")
    assert {m.name for m in ours.values()} == {"source final", "source best"}
    outputs = {o.model_id: o.step for o in run.outputs.model_outputs}
    for name, model in ours.items():
        assert str(model.status).endswith("READY")
        assert outputs[model.model_id] == int(model.params["epoch"])
        assert float(model.params["alpha"]) == 1.0  # the end of the linear schedule
        linked = {m.key: m.dataset_name for m in model.metrics}
        prefix = "test_" if name == "final" else "best_test_"
        assert linked[f"{prefix}acc"] == "digits-test"
        arts = {f.path for f in client.list_logged_model_artifacts(model.model_id)}
        arts |= {f.path for f in client.list_logged_model_artifacts(model.model_id, "data")}
        assert {"MLmodel", "model.safetensors", "data/model.pt2", "requirements.txt",
                "input_example.json"} <= arts
        assert not any(a.endswith((".pt", ".pkl", ".pth")) for a in arts)  # nothing pickled
        mlmodel = Model.load(f"models:/{model.model_id}")
        assert {"pytorch", "python_function", "ablate"} <= set(mlmodel.flavors)
        assert mlmodel.model_id == model.model_id
        assert mlmodel.flavors["ablate"]["epoch"] == int(model.params["epoch"])
        assert mlmodel.flavors["ablate"]["variant_params"] == {"alpha": 1.0}
        schema = mlmodel.signature.to_dict()
        assert json.loads(schema["inputs"])[0]["tensor-spec"] == {"dtype": "float32",
                                                                 "shape": [-1, 1, 8, 8]}
        assert json.loads(schema["outputs"])[0]["tensor-spec"]["shape"] == [-1, 10]
    assert {m.key: m.dataset_name for m in ours["best"].metrics}["best_val_acc"] == (
        "digits-validation"
    )
    # every run-end metric is logged once (the model link does not duplicate the history)
    assert len(client.get_metric_history(run.info.run_id, "test_acc")) == 1


def test_best_weights_that_are_the_final_ones_are_exported_once_and_logged_twice(
    store, monkeypatch
):
    import mlflow.pytorch
    import torch
    from mlflow.models import Model

    from ablate.models import create_model
    from ablate.tracking import Tracker
    from ablate.tracking.models import load_model
    from ablate.tracking.tracker import log_trial_models

    _, uri = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = _client(uri)
    experiment = client.get_experiment_by_name("ablate").experiment_id
    run_id = client.create_run(experiment, run_name="same-weights").info.run_id
    exports, save_model = [], mlflow.pytorch.save_model
    monkeypatch.setattr(mlflow.pytorch, "save_model",
                        lambda *args, **kw: exports.append(1) or save_model(*args, **kw))
    model = create_model("cct_2_3x2_32", img_size=8, in_chans=1).eval()
    ids = log_trial_models(
        Tracker(uri, run_id), config={"model": "cct_2_3x2_32"}, datasets={},
        metrics={"test_acc": 0.5, "best_test_acc": 0.5}, epochs=2, name="same-weights",
        final=(model, None, 0.5), best=(model, 2, None, 0.5), example=torch.rand(2, 1, 8, 8),
    )
    assert len(exports) == 1  # one torch.export for both
    for weights, model_id in ids.items():
        mlmodel = Model.load(f"models:/{model_id}")
        assert mlmodel.model_id == model_id  # the shared folder, each model's own MLmodel
        assert {"pytorch", "python_function", "ablate"} <= set(mlmodel.flavors)
        assert mlmodel.flavors["ablate"]["epoch"] == 2
        assert client.get_logged_model(model_id).tags["ablate.weights"] == weights
        loaded = load_model(f"models:/{model_id}", uri).state_dict()
        for key, value in model.state_dict().items():
            torch.testing.assert_close(loaded[key], value, atol=0, rtol=0)


@pytest.fixture(scope="module")
def registered(store):
    """The source run's best weights registered as cct-digits version 1, alias champion."""
    import mlflow

    root, uri = store
    best = _logged_models(uri, "source")["best"]
    with pytest.MonkeyPatch.context() as mp:
        # the registry is the tracking store ($MLFLOW_TRACKING_URI), as for any MLflow user
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        version = mlflow.register_model(f"models:/{best.model_id}", "cct-digits")
    assert str(version.version) == "1" and version.source == f"models:/{best.model_id}"
    _client(uri).set_registered_model_alias("cct-digits", "champion", "1")
    return best


def test_registered_best_model_loads_with_mlflow_flavors_to_ablate_logits(
    store, registered, monkeypatch
):
    """Issue #26 item 1: mlflow.pytorch / mlflow.pyfunc load the registered version and
    compute the logits of ablate's own module on a batch of the data set."""
    import mlflow
    import torch

    from ablate.config import RunConfig
    from ablate.data import load_data
    from ablate.tracking.models import load_model

    root, uri = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(root)
    bundle = load_data(RunConfig(img_size=8, val_split="train"), task="image", img_size=8)
    batch = bundle.eval_transform(bundle.test.x[:32])  # (32, 1, 8, 8), normalised

    ours = load_model("models:/cct-digits/1")
    assert isinstance(ours, torch.nn.Module) and not ours.training
    with torch.no_grad():
        expected = ours(batch)
    graph = mlflow.pytorch.load_model("models:/cct-digits/1")
    with torch.no_grad():
        torch.testing.assert_close(graph(batch), expected, rtol=0, atol=1e-5)
    served = mlflow.pyfunc.load_model("models:/cct-digits@champion")
    predicted = served.predict(batch.numpy())
    torch.testing.assert_close(torch.from_numpy(predicted), expected, rtol=0, atol=1e-5)
    assert (predicted.argmax(1) == expected.argmax(1).numpy()).all()
    # the registry's view of the version carries the schema
    info = mlflow.models.get_model_info("models:/cct-digits/1")
    assert info.signature.inputs.inputs[0].shape == (-1, 1, 8, 8)
    assert info.signature.outputs.inputs[0].shape == (-1, 10)


def test_fine_tune_from_an_alias_starts_from_exactly_its_weights_with_lineage(
    store, registered, monkeypatch
):
    import torch

    from ablate.tracking.models import load_model

    root, uri = store
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = _client(uri)
    source = _run(uri, "source")
    args = ["run", "--variant", "softmax_v", "--epochs", "1", "--lr", "1e-9"]
    code = main([*args, *FAST, "--init-from", "models:/cct-digits@champion", "--run-name", "ft"])
    assert code == 0
    ft = _run(uri, "ft")
    start = client.get_metric_history(ft.info.run_id, "acc/val")
    assert [m.value for m in start if m.step == 0] == [source.data.metrics["best_val_acc"]]
    # the alias is resolved and recorded; the logged model is the run's model input
    assert ft.data.params["init_from"] == "models:/cct-digits/1"
    tags = ft.data.tags
    assert tags["init.source_alias"] == "models:/cct-digits@champion = models:/cct-digits/1"
    assert tags["init.source_model_id"] == registered.model_id
    inputs = client.get_run(ft.info.run_id).inputs.model_inputs  # search_runs leaves them out
    assert [m.model_id for m in inputs] == [registered.model_id]
    assert tags["init.attention"] == "as the source: softmax_v:alpha=1.0"

    # `ablate export` writes it as a plain checkpoint file that rebuilds the same module
    from ablate.models.checkpoint import model_from_checkpoint

    assert main(["export", "models:/cct-digits/1", "exported.pt"]) == 0
    exported = model_from_checkpoint(root / "exported.pt")
    module = load_model("models:/cct-digits/1")
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(exported(x), module(x))
    # the logged model's own id works as well
    again = load_model(f"models:/{registered.model_id}")
    for (k, a), (_, b) in zip(module.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_bad_model_uris_are_one_line_naming_the_way_out(store, registered, monkeypatch, capsys):
    root, uri = store
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cases = {
        "models:/nope/3": "cannot find models:/nope/3",
        # a registered name without a version: its versions and aliases
        "models:/cct-digits": "give models:/cct-digits/VERSION or models:/cct-digits@ALIAS "
                              "(versions: 1; aliases: @champion = 1)",
        "models:/nope": "no registered model 'nope'",
    }
    for bad, expected in cases.items():
        assert main(["export", bad, "x.pt"]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
    assert main(["run", *FAST, "--epochs", "1", "--init-from", "models:/cct-digits"]) == 2
    assert "versions: 1" in capsys.readouterr().err


def test_a_truncated_weights_file_is_one_line_naming_the_model_and_the_file(
    store, registered, tmp_path, monkeypatch, capsys
):
    root, uri = store
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = _client(uri)
    from mlflow.artifacts import download_artifacts

    # a copy of the registered model whose weights upload was cut short
    folder = Path(download_artifacts(f"models:/{registered.model_id}", dst_path=str(tmp_path)))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    damaged = client.create_logged_model(registered.experiment_id, name="damaged")
    client.log_model_artifacts(damaged.model_id, str(folder))
    capsys.readouterr()  # the download's progress bars
    assert main(["export", f"models:/{damaged.model_id}", "x.pt"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.strip() and "Downloading artifacts" not in line]  # MLflow's progress bars
    assert len(err) == 1, err
    assert f"logged model {damaged.model_id}" in err[0]
    assert "model.safetensors is unreadable" in err[0]


UNTRACEABLE = """\
from variants import register_attention
from variants.softmax import softmax


@register_attention("h26_untraceable")
def h26_untraceable(q, k, v, *, mask=None, bias=None, dropout_p=0.0, scale=None):
    if q.abs().sum() > 0:  # data-dependent Python control flow: torch.export refuses it
        return softmax(q, k, v, mask=mask, bias=bias, dropout_p=dropout_p, scale=scale)
    return v
"""


def test_a_variant_torch_export_cannot_trace_still_logs_its_weights(workdir):
    from mlflow.models import Model

    from ablate.tracking.models import load_model
    from variants import _registry

    (workdir / "untraceable.py").write_text(UNTRACEABLE)
    before = dict(_registry._REGISTRY)
    try:
        with pytest.warns(UserWarning, match="without MLflow's pytorch / pyfunc flavors"):
            code = main(["run", *FAST, "--epochs", "1", "--no-system-metrics", "--variant",
                         "h26_untraceable", "--variant-file", "untraceable.py"])
        assert code == 0  # the trial finishes, its models are logged
        client = _client(os.environ["MLFLOW_TRACKING_URI"])
        (run,) = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
        models = client.search_logged_models([run.info.experiment_id])
        assert len(models) == 2
        for model in models:
            assert str(model.status).endswith("READY")
            assert "data-dependent" in model.tags["ablate.no_pytorch_flavor"]
            assert set(Model.load(f"models:/{model.model_id}").flavors) == {"ablate"}
            assert not load_model(f"models:/{model.model_id}").training
    finally:
        _registry._REGISTRY.clear()
        _registry._REGISTRY.update(before)


def test_resume_checkpoint_is_uploaded_only_every_k_epochs_and_at_the_end(workdir):
    from mlflow import MlflowClient

    assert main(["run", *FAST, "--epochs", "3", "--checkpoint-upload-every", "2",
                 "--no-system-metrics"]) == 0
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
    arts = {f.path for f in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert {"checkpoints/last.pt", "checkpoints/best.pt"} <= arts
    assert not any(k.startswith("system/") for k in run.data.metrics)
    assert not (Path("checkpoints") / run.info.run_id).exists()  # finished: cleaned up
    assert math.isfinite(run.data.metrics["test_acc"])
    assert os.environ["MLFLOW_TRACKING_URI"].startswith("sqlite:")


def test_a_stopped_run_uploads_its_newest_epoch_and_resumes_from_the_artifact_store(workdir):
    import shutil

    import torch
    from mlflow import MlflowClient

    from ablate.config import RunConfig

    cfg = RunConfig(img_size=8, epochs=3, quiet=True, checkpoint_upload_every=0,
                    system_metrics=False)
    run_stopped_after(cfg, epoch=2)
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
    rid = run.info.run_id
    uploaded = client.download_artifacts(rid, "checkpoints/last.pt", str(workdir))
    assert torch.load(uploaded, weights_only=True)["epoch"] == 2  # not epoch K or nothing

    shutil.rmtree(workdir / "checkpoints")  # another machine: only the artifact store
    assert main(["run", "--resume", rid, "--quiet"]) == 0
    assert [m.step for m in client.get_metric_history(rid, "acc/val")] == [0, 1, 2, 3]
    models = client.search_logged_models([run.info.experiment_id])
    assert sorted(m.tags["ablate.weights"] for m in models) == ["best", "final"]
