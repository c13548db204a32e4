"""MLflow 3 as its users know it, on a real SQLite store: a finished `ablate run` has data
sets with digests, two logged models linked to it, run-context tags, system metrics and no
"None" params; a registered version fine-tunes from exactly its weights."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

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


def test_final_and_best_weights_are_logged_models_of_the_run(store):
    _, uri = store
    client = _client(uri)
    run = _run(uri, "source")
    models = client.search_logged_models([run.info.experiment_id])
    ours = {m.tags["ablate.weights"]: m for m in models if m.source_run_id == run.info.run_id}
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
        assert {"model.safetensors", "ablate_model.json", "config.yaml", "MLmodel"} <= arts
        assert not any(a.endswith((".pt", ".pkl", ".pth")) for a in arts)
    assert {m.key: m.dataset_name for m in ours["best"].metrics}["best_val_acc"] == (
        "digits-validation"
    )
    # every run-end metric is logged once (the model link does not duplicate the history)
    assert len(client.get_metric_history(run.info.run_id, "test_acc")) == 1


def test_registered_version_fine_tunes_from_exactly_its_weights(store, monkeypatch):
    import mlflow

    from ablate.tracking.models import load_model

    root, uri = store
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = _client(uri)
    run = _run(uri, "source")
    best = next(
        m for m in client.search_logged_models([run.info.experiment_id])
        if m.source_run_id == run.info.run_id and m.tags["ablate.weights"] == "best"
    )
    # the registry is the tracking store ($MLFLOW_TRACKING_URI), as for any MLflow user
    version = mlflow.register_model(f"models:/{best.model_id}", "cct-digits")
    assert str(version.version) == "1" and version.source == f"models:/{best.model_id}"

    # a plain PyTorch module, read without executing code
    import torch

    module = load_model("models:/cct-digits/1")
    assert isinstance(module, torch.nn.Module) and not module.training
    assert module(torch.zeros(2, 1, 8, 8)).shape == (2, 10)

    args = ["run", "--variant", "softmax_v", "--epochs", "1", "--lr", "1e-9"]
    assert main([*args, *FAST, "--init-from", "models:/cct-digits/1", "--run-name", "ft"]) == 0
    ft = _run(uri, "ft")
    start = client.get_metric_history(ft.info.run_id, "acc/val")
    at_zero = [m.value for m in start if m.step == 0]
    assert at_zero == [run.data.metrics["best_val_acc"]]
    assert ft.data.params["init_from"] == "models:/cct-digits/1"

    # `ablate export` writes it as a plain checkpoint file that rebuilds the same module
    from ablate.models.checkpoint import model_from_checkpoint

    assert main(["export", "models:/cct-digits/1", "exported.pt"]) == 0
    exported = model_from_checkpoint(root / "exported.pt")
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(exported.eval()(x), module(x))

    # the logged model's own id works as well
    again = load_model(f"models:/{best.model_id}")
    for (k, a), (_, b) in zip(module.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_unknown_model_uri_is_one_line(store, monkeypatch, capsys):
    root, uri = store
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["run", *FAST, "--epochs", "1", "--init-from", "models:/nope/3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot find models:/nope/3" in err and len(err.splitlines()) == 1


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
    from ablate.trial.resolve import resolve
    from ablate.trial.run import run_trial

    cfg = RunConfig(img_size=8, epochs=3, quiet=True, checkpoint_upload_every=0,
                    system_metrics=False)

    def stop_after_second(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt  # what a stop signal does to the training loop

    with pytest.raises(KeyboardInterrupt):
        run_trial(resolve(cfg), on_epoch=stop_after_second)
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
