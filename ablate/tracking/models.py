"""MLflow 3 assets of a trial: its data sets (run inputs) and its logged models.

Data sets. Each split is logged with ``log_inputs`` as an MLflow data set named
``<dataset>-<split>`` (``digits-train``), with context ``train`` / ``validation`` / ``test``,
a digest of the exact tensors (labels included), the source the data came from and a
profile with the row count, class count and input shape. Identical data gives identical
digests across runs, so the UI groups runs trained on the same split.

Logged models. The final and the best-validation weights become two LoggedModels of the
run (``<run name> final`` / ``best``, tag ``ablate.weights``), run outputs at the epoch they
come from, with params naming that epoch and its alpha, and metrics linked to their data
set. Each is what ``mlflow.pytorch.save_model`` writes, plus our weights:

- ``data/model.pt2`` (flavors ``pytorch``, ``python_function``): the eval-mode forward
  exported by ``torch.export`` on the CPU, LoRA adapters merged: raw tensor bytes and a JSON
  graph, no pickled code (MLflow checks it before loading). ``mlflow.pytorch.load_model``
  gives a ``torch.fx.GraphModule`` (eval mode: dropout is not in the graph, and torch refuses
  ``.train()`` / ``.eval()`` on it), ``mlflow.pyfunc.load_model(uri).predict(batch)``
  predicts on the CPU; both need torch, not ablate;
- ``MLmodel`` with the signature (input: what the backbone takes, any batch size: images
  normalised by ``DataBundle.eval_transform``, or token ids; output: logits),
  ``input_example.json`` (two test rows) and the environment files;
- ``model.safetensors`` and the ``ablate`` flavor (registry name, architecture, epoch,
  alpha, val_acc, variant parameters, the run's config): what :func:`load_model`,
  ``--init-from`` and ``ablate export`` rebuild our own module from, whose variant
  parameters can change and which trains further (the graph can do neither). The weights
  are stored twice (cct_7_3x1_32: 15 MB each; the export adds about 1 s per model, so when
  the best epoch is the last one the folder is exported once and logged for both models).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

import torch

from ablate.exceptions import CheckpointError, first_line

if TYPE_CHECKING:
    import torch.nn as nn

    from ablate.data import DataBundle, Split
    from ablate.tracking import Tracker

__all__ = [
    "SPLIT_CONTEXTS", "MODEL_FORMAT", "DatasetRef", "ModelRef", "log_datasets", "log_trial_models",
    "resolve_model_uri", "read_logged_model", "load_model", "export_model_file",
]

# DataBundle attribute -> MLflow data set context
SPLIT_CONTEXTS = {"train": "train", "val": "validation", "test": "test"}
MODEL_FORMAT = "ablate-logged-model-v2"
_V1_FORMAT = "ablate-logged-model-v1"  # before the pytorch flavor: JSON + YAML files
WEIGHTS_FILE = "model.safetensors"


class DatasetRef(NamedTuple):
    """A logged data set: what a metric links to."""

    name: str
    digest: str


# ---------------------------------------------------------------------------------------
# data sets


def split_digest(split: "Split") -> str:
    """First 16 hex digits of the SHA-256 of the split's inputs, labels and shapes."""
    h = hashlib.sha256()
    for t in (split.x, split.y):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _dataset_input(bundle: "DataBundle", attr: str, source: str) -> tuple[Any, DatasetRef]:
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    split, context = getattr(bundle, attr), SPLIT_CONTEXTS[attr]
    name, digest = f"{bundle.name}-{context}", split_digest(split)
    counts = torch.bincount(split.y.detach().to("cpu").long(), minlength=bundle.num_classes)
    profile = {
        "num_rows": len(split), "num_classes": bundle.num_classes, "class_counts": counts.tolist(),
        "features_shape": list(split.x.shape),  # (N, C, H, W) images, (N, L) token ids
        "features_dtype": str(split.x.dtype).replace("torch.", ""), "task": bundle.task,
        **bundle.info,  # source, split seed, sources of validation and test, normalisation
    }
    # MLflow's tensor-spec schema, as its NumPy data sets write it (-1: any row count)
    features = {"dtype": profile["features_dtype"], "shape": [-1, *split.x.shape[1:]]}
    targets = {"dtype": "int64", "shape": [-1]}
    schema = {"mlflow_tensorspec": {
        key: json.dumps([{"type": "tensor", "tensor-spec": spec}])
        for key, spec in (("features", features), ("targets", targets))
    }}
    dataset = Dataset(name=name, digest=digest, source_type="http" if "://" in source else "local",
                      source=json.dumps({"uri": source}), schema=json.dumps(schema),
                      profile=json.dumps(profile))
    item = DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
    return item, DatasetRef(name, digest)


def log_datasets(
    tracker: "Tracker", bundle: "DataBundle", *, log: bool = True, source_model: str | None = None,
) -> dict[str, DatasetRef]:
    """Log train / validation / test as the run's data sets; returns split -> (name, digest).

    ``log`` False only computes the references (a resumed run logged them already);
    ``source_model``, the logged model the initial weights came from, is logged with them
    as the run's model input (its lineage in the UI).
    """
    source = str(bundle.info.get("source") or bundle.name)
    items = {attr: _dataset_input(bundle, attr, source) for attr in SPLIT_CONTEXTS}
    if log:
        tracker.log_inputs([item for item, _ in items.values()],
                           models=(source_model,) if source_model else ())
    return {attr: ref for attr, (_, ref) in items.items()}


# ---------------------------------------------------------------------------------------
# logged models: writing


def _save_model_dir(
    folder: Path, model: "nn.Module", example: torch.Tensor, mlmodel: Any,
    record: Mapping[str, Any],
) -> str | None:
    """MLflow's pytorch model of ``model`` in ``folder``, plus our weights and record;
    returns why there is no pytorch / pyfunc flavor (None: there are)."""
    import mlflow.pytorch
    from safetensors.torch import save_file

    from ablate.models.checkpoint import checkpoint_payload
    from ablate.models.lora import merge_lora
    from ablate.models.pretrained import unwrap_model

    # A float32 CPU copy (a graph exported on a GPU loads on that device only) with LoRA
    # adapters merged (the weights load into a plain model, the graph is the plain one).
    plain = merge_lora(copy.deepcopy(unwrap_model(model))).to("cpu", torch.float32).eval()
    payload = checkpoint_payload(plain)
    flavor = {"format": MODEL_FORMAT, "weights": WEIGHTS_FILE, "name": payload["name"],
              "arch": payload["arch"], **record}
    mlmodel.flavors["ablate"] = _plain(flavor)
    x = example.detach().cpu()
    try:
        mlflow.pytorch.save_model(
            plain, str(folder), mlflow_model=mlmodel, serialization_format="pt2",
            input_example=(x.float() if x.is_floating_point() else x).numpy(),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],  # not inferred: 5 s
        )
        # MLflow's pyfunc loader moves the graph to a GPU when there is one, which a graph
        # exported on the CPU refuses: it predicts on the CPU (model_config={"device": ...})
        mlmodel.flavors["python_function"]["config"]["device"] = "cpu"
        failed = None
    except Exception as err:  # torch.export cannot trace every variant (a data-dependent if)
        failed = f"torch.export failed: {first_line(err)}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        mlmodel.saved_input_example_info = None
    mlmodel.save(str(folder / "MLmodel"))
    # clone: safetensors refuses tensors sharing storage
    save_file({k: v.clone().contiguous() for k, v in payload["model"].items()},
              str(folder / WEIGHTS_FILE))
    return failed


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _log_model(
    tracker: "Tracker", model: "nn.Module", *, name: str, params: Mapping[str, Any],
    record: Mapping[str, Any], example: torch.Tensor,
    metrics: list[tuple[str, float, DatasetRef | None]], metrics_step: int,
    saved: dict[int, tuple[Path, str | None]], tmp: str,
) -> str:
    """Log ``model`` as an MLflow 3 LoggedModel of the run (output at ``params["epoch"]``);
    its ``metrics`` are logged to the run at ``metrics_step``, linked to the model and their
    data set. ``saved``: the folders already written under ``tmp``, by ``id(model)``: the same
    weights object is exported once, and its folder logged again with this model's ids.
    Returns the model id."""
    from mlflow.entities import Metric
    from mlflow.models import Model

    client, run_id = tracker.client, tracker.run_id
    experiment_id = client.get_run(run_id).info.experiment_id
    lm = client.create_logged_model(
        experiment_id, name=name, source_run_id=run_id, model_type="ablate",
        params={k: str(v) for k, v in params.items() if v is not None},
        tags={"ablate.weights": params["weights"], "ablate.format": MODEL_FORMAT},
    )
    try:
        fresh = id(model) not in saved
        folder, failed = saved.get(id(model), (Path(tmp) / f"model{len(saved)}", None))
        mlmodel = Model(run_id=run_id) if fresh else Model.load(str(folder / "MLmodel"))
        mlmodel.artifact_path, mlmodel.model_id = lm.artifact_location, lm.model_id
        mlmodel.model_uuid = lm.model_id
        if fresh:
            failed = _save_model_dir(folder, model, example, mlmodel, record)
            saved[id(model)] = folder, failed
        else:  # the same weights as the model logged before: its folder, this model's ids
            mlmodel.flavors["ablate"].update(_plain(record))
            mlmodel.save(str(folder / "MLmodel"))
        client.log_model_artifacts(lm.model_id, str(folder))
        if failed:  # the weights are logged (load_model, --init-from); MLflow cannot serve them
            client.set_logged_model_tags(lm.model_id, {"ablate.no_pytorch_flavor": failed})
            warnings.warn(f"{name}: logged without MLflow's pytorch / pyfunc flavors ({failed})",
                          stacklevel=3)
        tracker.log_model_output(lm.model_id, params["epoch"])
        now = int(time.time() * 1000)
        tracker.log_linked_metrics([
            Metric(key, float(value), now, metrics_step, model_id=lm.model_id,
                   dataset_name=ds.name if ds else None, dataset_digest=ds.digest if ds else None)
            for key, value, ds in metrics
            if value is not None
        ])
    except BaseException:
        client.finalize_logged_model(lm.model_id, "FAILED")
        raise
    client.finalize_logged_model(lm.model_id, "READY")
    return lm.model_id


def _metric_owner(key: str) -> tuple[str | None, str | None]:
    """(model, split) a run-end metric belongs to: ``test_*`` the final weights on the
    test split, ``best_*`` the best-validation weights (``best_val_acc`` on validation)."""
    owner = "best" if key.startswith("best_") else "final"
    if key in ("test_epoch", "test_alpha", "best_epoch", "best_test_alpha"):
        return owner, None
    if key == "best_val_acc":
        return "best", "val"
    return (owner, "test") if key.startswith(("best_test_", "test_")) else (None, None)


def log_trial_models(
    tracker: "Tracker", *, config: Mapping[str, Any], datasets: Mapping[str, DatasetRef],
    metrics: Mapping[str, float], epochs: int, name: str,
    final: tuple["nn.Module", float | None, float],
    best: tuple["nn.Module", int, float | None, float], example: torch.Tensor,
) -> dict[str, str]:
    """Log a finished trial's two LoggedModels and its run-end metrics (step ``epochs``).

    Every metric is logged once; ``test_*`` and ``best_*`` carry their model and data set.
    The models are named ``<name> final`` / ``<name> best``; ``final`` is (model, alpha,
    val_acc), ``best`` (model, epoch, alpha, val_acc); ``example``: a few rows of model input
    (the signature). Returns ``{"final": model_id, "best": model_id}``.
    """
    base = {k: config.get(k) for k in ("model", "variant", "dataset", "seed")}
    # MLflow refuses / : . % and quotes in logged-model names
    label = name.translate(str.maketrans({".": "_", "/": "-", ":": "-", "%": "-", '"': "",
                                          "'": ""}))
    owners = {key: _metric_owner(key) for key in metrics}
    ids: dict[str, str] = {}
    saved: dict[int, tuple[Path, str | None]] = {}
    with tempfile.TemporaryDirectory(prefix="ablate-model-") as tmp:
        for weights, (model, epoch, alpha, val_acc) in (
            ("final", (final[0], epochs, *final[1:])), ("best", best)
        ):
            owned = [(key, value, datasets.get(owners[key][1])) for key, value in metrics.items()
                     if owners[key][0] == weights]
            ids[weights] = _log_model(
                tracker, model, name=f"{label} {weights}", example=example,
                params={**base, "weights": weights, "epoch": epoch, "alpha": alpha,
                        "val_acc": val_acc},
                record={"epoch": epoch, "alpha": alpha, "val_acc": val_acc,
                        "variant_params": dict(getattr(model, "variant_params", dict)()),
                        "run_id": tracker.run_id, "config": dict(config)},
                metrics=owned, metrics_step=epochs, saved=saved, tmp=tmp,
            )
    rest = {k: v for k, v in metrics.items() if owners[k][0] is None}
    tracker.log_metrics(rest, step=epochs)
    return ids


# ---------------------------------------------------------------------------------------
# logged models: reading


class ModelRef(NamedTuple):
    """A ``models:/`` URI looked up in the store."""

    uri: str  # as given: models:/NAME@champion
    resolved: str  # reproducible: models:/NAME/VERSION (aliases resolved), models:/<model_id>
    model_id: str | None  # None: a version registered from something else than a model
    location: str  # where its files are


def _unversioned(client: Any, name: str, uri: str, store: str) -> str:
    """What ``models:/NAME`` without a version or alias should have been."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException:  # no such registered model
        return (f"cannot find {uri} in {store}: no registered model {name!r}; give "
                "models:/NAME/VERSION, models:/NAME@ALIAS or models:/<model_id>")
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    aliases = ", ".join(f"@{a} = {v}" for a, v in sorted(registered.aliases.items()))
    return (f"{uri} names registered model {name!r} but no version: give models:/{name}/VERSION "
            f"or models:/{name}@ALIAS (versions: {', '.join(map(str, versions)) or 'none'}; "
            f"aliases: {aliases or 'none'})")


def resolve_model_uri(uri: str, tracking_uri: str | None = None) -> ModelRef:
    """Look up ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``models:/<model_id>``;
    CheckpointError for anything else (a name without a version: listing its versions)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from ablate.tracking import resolve_tracking_uri

    store = resolve_tracking_uri(tracking_uri)
    body = uri[len("models:/"):].strip("/") if uri.startswith("models:/") else ""
    if not body:
        raise CheckpointError(f"{uri!r} is not a model URI; give models:/NAME/VERSION, "
                              "models:/NAME@ALIAS or models:/<model_id>")
    client = MlflowClient(store, registry_uri=store)
    if "/" not in body and "@" not in body and not body.startswith("m-"):
        raise CheckpointError(_unversioned(client, body, uri, store))  # MLflow 3 ids: m-...
    try:
        model_id, resolved = body, f"models:/{body}"
        if "/" in body or "@" in body:
            if "/" in body:
                name, version = body.rsplit("/", 1)
                mv = client.get_model_version(name, version)
            else:
                name, alias = body.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
            resolved = f"models:/{name}/{mv.version}"
            source = str(mv.source or "")
            # a version registered from models:/<model_id> names its logged model in source
            model_id = mv.model_id or source.removeprefix("models:/")
            if not model_id.startswith("m-"):
                return ModelRef(uri, resolved, None, source)
        location = client.get_logged_model(model_id).artifact_location
        return ModelRef(uri, resolved, model_id, location)
    except MlflowException as err:  # unknown name, version, alias or id
        raise CheckpointError(f"cannot find {uri} in {store}: {first_line(err)}") from None


def read_logged_model(uri: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """A logged model as our checkpoint dict (``format``, ``name``, ``arch``, ``model``,
    ``config``, ``epoch``, ``alpha``, ``val_acc``, ``variant_params``) plus ``model_id`` and
    ``model_uri`` (the resolved URI), read without executing code (``MLmodel`` and
    ``model.safetensors`` only; the exported graph is not downloaded).

    ``uri``: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``models:/<model_id>``;
    ``tracking_uri``: the store (None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).
    A missing or damaged file is a one-line CheckpointError naming the model and the file.
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ablate.models.checkpoint import CHECKPOINT_FORMAT
    from ablate.tracking import resolve_tracking_uri

    ref, store = resolve_model_uri(uri, tracking_uri), resolve_tracking_uri(tracking_uri)
    where = f"{uri} (logged model {ref.model_id})" if ref.model_id else uri

    def fetch(name: str, tmp: str) -> Path:
        try:
            return Path(download_artifacts(artifact_uri=f"{ref.location.rstrip('/')}/{name}",
                                           dst_path=tmp, tracking_uri=store))
        except (MlflowException, OSError) as err:  # not there
            raise CheckpointError(f"{where} has no {name}: {first_line(err)}") from None

    with tempfile.TemporaryDirectory(prefix="ablate-model-") as tmp:
        record = Model.load(str(fetch("MLmodel", tmp))).flavors.get("ablate")
        if record is None:
            raise CheckpointError(f"{where} is not an ablate model (its MLmodel has no 'ablate' "
                                  "flavor); load it with mlflow.pytorch.load_model")
        if record.get("format") == _V1_FORMAT:
            import yaml

            record = {**json.loads(fetch(record["meta"], tmp).read_text()),
                      "config": yaml.safe_load(fetch(record["config"], tmp).read_text())}
        try:
            weights = load_file(str(fetch(WEIGHTS_FILE, tmp)))
        except (SafetensorError, OSError) as err:  # an upload cut short, a damaged file
            raise CheckpointError(f"{where}: {WEIGHTS_FILE} is unreadable ({first_line(err)}); "
                                  "log the model again, or start from its run's "
                                  "checkpoints/best.pt") from None
    state = {k: v for k, v in record.items() if k not in ("format", "weights", "meta")}
    state.update(format=CHECKPOINT_FORMAT, model=weights, model_id=ref.model_id,
                 model_uri=ref.resolved)
    return state


def load_model(uri: str, tracking_uri: str | None = None) -> "nn.Module":
    """A logged (or registered) ablate model as our own PyTorch module, on the CPU and in
    eval mode (``.train()`` to train it), at the variant parameters it was validated at:
    ``load_model("models:/cct-digits/1")``."""
    from ablate.models.checkpoint import model_from_checkpoint

    return model_from_checkpoint(read_logged_model(uri, tracking_uri))


def export_model_file(uri: str, out: str | Path, tracking_uri: str | None = None) -> Path:
    """Write a logged model as our checkpoint file (``model_from_checkpoint(path)`` rebuilds
    the module, ``--init-from`` takes it)."""
    from ablate.models.checkpoint import atomic_torch_save

    return atomic_torch_save(read_logged_model(uri, tracking_uri), out)
