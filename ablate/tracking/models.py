"""MLflow 3 assets of a trial: its data sets (run inputs) and its logged models.

Data sets. Each split is logged with ``log_inputs`` as an MLflow data set named
``<dataset>-<split>`` (``digits-train``), with context ``train`` / ``validation`` / ``test``,
a digest of the exact tensors (labels included), the source the data came from and a
profile with the row count, class count and input shape. Identical data gives identical
digests across runs, so the UI groups runs trained on the same split.

Logged models. The final weights and the best-validation weights become two MLflow 3
``LoggedModel`` s (``final`` and ``best``), created from the run (``source_run_id``),
recorded as run outputs at the epoch they come from, with params naming that epoch and the
alpha they were validated at. Their artifacts load without executing code:

- ``model.safetensors``: the state dict (``safetensors``, never pickle);
- ``ablate_model.json``: format, registry name and architecture that rebuild the model,
  epoch, alpha, val_acc and the variant parameters;
- ``config.yaml``: the run's resolved configuration;
- ``MLmodel``: MLflow's descriptor (flavor ``ablate``; there is no pyfunc flavor).

Each model's metrics are linked to the data set they were measured on (MLflow 3 keeps
that link on model metrics): ``val_*`` to the validation split, ``test_*`` /
``best_test_*`` to the test split. Register one with
``mlflow.register_model("models:/<model_id>", "NAME")``; ``--init-from models:/NAME/1``
(or ``models:/<model_id>``) fine-tunes from it and :func:`load_model` gives it back as a
plain ``nn.Module``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from ablate.exceptions import CheckpointError

if TYPE_CHECKING:
    import torch.nn as nn

    from ablate.data import DataBundle, Split
    from ablate.tracking import Tracker

__all__ = [
    "SPLIT_CONTEXTS",
    "MODEL_FORMAT",
    "DatasetRef",
    "log_datasets",
    "log_logged_model",
    "log_trial_models",
    "read_logged_model",
    "load_model",
    "export_model_file",
    "resolve_model_uri",
]

# DataBundle attribute -> MLflow data set context
SPLIT_CONTEXTS = {"train": "train", "val": "validation", "test": "test"}
MODEL_FORMAT = "ablate-logged-model-v1"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "ablate_model.json"
CONFIG_FILE = "config.yaml"


class DatasetRef(tuple):
    """(name, digest) of a logged data set: what a metric links to."""

    @property
    def name(self) -> str:
        return self[0]

    @property
    def digest(self) -> str:
        return self[1]


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

    split = getattr(bundle, attr)
    context = SPLIT_CONTEXTS[attr]
    name = f"{bundle.name}-{context}"
    digest = split_digest(split)
    counts = torch.bincount(split.y.detach().to("cpu").long(), minlength=bundle.num_classes)
    profile = {
        "num_rows": len(split),
        "num_classes": bundle.num_classes,
        "class_counts": counts.tolist(),
        "features_shape": list(split.x.shape),  # (N, C, H, W) images, (N, L) token ids
        "features_dtype": str(split.x.dtype).replace("torch.", ""),
        "task": bundle.task,
        **{k: v for k, v in bundle.info.items() if not k.endswith("_size")},
    }
    # MLflow's tensor-spec schema, as its NumPy data sets write it (-1: any row count)
    features = {"dtype": profile["features_dtype"], "shape": [-1, *split.x.shape[1:]]}
    targets = {"dtype": "int64", "shape": [-1]}
    schema = {
        "mlflow_tensorspec": {
            key: json.dumps([{"type": "tensor", "tensor-spec": spec}])
            for key, spec in (("features", features), ("targets", targets))
        }
    }
    dataset = Dataset(
        name=name,
        digest=digest,
        source_type="local" if "://" not in source else "http",
        source=json.dumps({"uri": source}),
        schema=json.dumps(schema),
        profile=json.dumps(profile),
    )
    item = DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
    return item, DatasetRef((name, digest))


def log_datasets(
    tracker: "Tracker", bundle: "DataBundle", *, log: bool = True
) -> dict[str, DatasetRef]:
    """Log train / validation / test as the run's data sets; returns split -> (name, digest).

    Args:
        tracker: the run.
        bundle: the loaded data (tensors on any device; hashed on the CPU).
        log: False = only compute the references (a resumed run logged them already).
    """
    source = str(bundle.info.get("source") or bundle.name)
    inputs, refs = [], {}
    for attr in SPLIT_CONTEXTS:
        item, ref = _dataset_input(bundle, attr, source)
        inputs.append(item)
        refs[attr] = ref
    if log:
        tracker.log_inputs(inputs)
    return refs


# ---------------------------------------------------------------------------------------
# logged models: writing


def _meta(payload: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    meta = {"format": MODEL_FORMAT, "name": payload["name"], "arch": payload["arch"]}
    meta.update({k: v for k, v in extra.items() if k != "config"})
    return json.loads(json.dumps(meta, default=str))  # plain JSON values only


def _write_model_dir(
    folder: Path, model: "nn.Module", extra: Mapping[str, Any], mlmodel: Any
) -> None:
    import yaml
    from safetensors.torch import save_file

    from ablate.models.checkpoint import checkpoint_payload

    payload = checkpoint_payload(model)
    # clone: safetensors refuses tensors sharing storage
    weights = {k: v.detach().to("cpu").clone().contiguous() for k, v in payload["model"].items()}
    save_file(weights, str(folder / WEIGHTS_FILE), metadata={"format": MODEL_FORMAT})
    (folder / META_FILE).write_text(json.dumps(_meta(payload, extra), indent=2, sort_keys=True))
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(dict(extra["config"]), sort_keys=False))
    mlmodel.save(str(folder / "MLmodel"))


def log_logged_model(
    tracker: "Tracker",
    model: "nn.Module",
    *,
    name: str,
    weights: str,
    step: int,
    config: Mapping[str, Any],
    params: Mapping[str, Any],
    metrics: list[tuple[str, float, DatasetRef | None]],
    metrics_step: int | None = None,
    val_acc: float | None = None,
) -> str:
    """Log ``model``'s weights as an MLflow 3 LoggedModel of the run; returns its model id.

    Args:
        tracker: the run that produced the weights.
        model: the weights (in eval form, e.g. EMA) with their variant parameters set.
        name: the logged model's name (the run's name and the weights).
        weights: ``final`` or ``best``.
        step: the epoch the weights come from (the run output's step).
        config: the resolved RunConfig as a dict (``config.yaml``).
        params: the model's params (``epoch``, ``alpha``, ...); None values are left out.
        metrics: (run metric key, value, data set or None) measured on these weights; logged
            to the run at ``metrics_step`` (default ``step``) with the model and data set
            attached.
        val_acc: the validation accuracy the weights reached (kept in ``ablate_model.json``).
    """
    from mlflow.entities import Metric
    from mlflow.models import Model

    client, run_id = tracker.client, tracker.run_id
    experiment_id = client.get_run(run_id).info.experiment_id
    clean = {k: str(v) for k, v in params.items() if v is not None}
    lm = client.create_logged_model(
        experiment_id,
        name=name,
        source_run_id=run_id,
        params=clean,
        tags={"ablate.weights": weights, "ablate.format": MODEL_FORMAT},
        model_type="ablate",
    )
    try:
        extra = {
            "config": dict(config),
            "epoch": int(step),
            "val_acc": val_acc,
            "variant_params": dict(getattr(model, "variant_params", dict)()),
            "run_id": run_id,
            **{k: v for k, v in params.items() if k not in ("epoch",)},
        }
        mlmodel = Model(
            artifact_path=lm.artifact_location,
            run_id=run_id,
            model_id=lm.model_id,
            model_uuid=lm.model_id,
            flavors={"ablate": {"format": MODEL_FORMAT, "weights": WEIGHTS_FILE,
                                "meta": META_FILE, "config": CONFIG_FILE}},
        )
        with tempfile.TemporaryDirectory(prefix="ablate-model-") as tmp:
            _write_model_dir(Path(tmp), model, extra, mlmodel)
            client.log_model_artifacts(lm.model_id, tmp)
        tracker.log_model_output(lm.model_id, step)
        now = _now_ms()
        tracker.log_linked_metrics(
            [
                Metric(
                    key, float(value), now, int(step if metrics_step is None else metrics_step),
                    model_id=lm.model_id,
                    dataset_name=ds.name if ds else None, dataset_digest=ds.digest if ds else None,
                )
                for key, value, ds in metrics
                if value is not None
            ]
        )
    except BaseException:
        client.finalize_logged_model(lm.model_id, "FAILED")
        raise
    client.finalize_logged_model(lm.model_id, "READY")
    return lm.model_id


def _metric_owner(key: str) -> tuple[str | None, str | None]:
    """(model, split) a run-end metric belongs to: ``test_*`` the final weights on the
    test split, ``best_*`` the best-validation weights (``best_val_acc`` on validation)."""
    if key in ("test_epoch", "test_alpha"):
        return "final", None
    if key in ("best_epoch", "best_test_alpha"):
        return "best", None
    if key == "best_val_acc":
        return "best", "val"
    if key.startswith("best_test_"):
        return "best", "test"
    if key.startswith("test_"):
        return "final", "test"
    return None, None


def log_trial_models(
    tracker: "Tracker",
    *,
    config: Mapping[str, Any],
    datasets: Mapping[str, DatasetRef],
    metrics: Mapping[str, float],
    epochs: int,
    name: str,
    final: tuple["nn.Module", float | None, float],
    best: tuple["nn.Module", int, float | None, float],
) -> dict[str, str]:
    """Log a finished trial's two LoggedModels and its run-end metrics (step ``epochs``).

    Every metric is logged once; ``test_*`` and ``best_*`` carry their model and data set.

    Args:
        tracker / config / datasets: the run, its resolved config, its data set refs.
        metrics: the run-end metrics (``test_*``, ``best_test_*``, ``best_val_acc``, ...).
        epochs: the final epoch (the final model's step and the metrics' step).
        name: the run's name; the models are named ``<name> final`` and ``<name> best``.
        final: (model, alpha, val_acc) of the final weights.
        best: (model, epoch, alpha, val_acc) of the best-validation weights.

    Returns:
        ``{"final": model_id, "best": model_id}``.
    """
    base = {k: config.get(k) for k in ("model", "variant", "dataset", "seed")}
    # MLflow refuses / : . % and quotes in logged-model names
    label = name.translate(str.maketrans({".": "_", "/": "-", ":": "-", "%": "-", '"': "",
                                          "'": ""}))
    specs = {
        "final": (final[0], epochs, final[1], final[2]),
        "best": best,
    }
    ids = {}
    for weights, (model, epoch, alpha, val_acc) in specs.items():
        owned = []
        for key, value in metrics.items():
            owner, split = _metric_owner(key)
            if owner == weights:
                owned.append((key, value, datasets.get(split) if split else None))
        ids[weights] = log_logged_model(
            tracker, model, name=f"{label} {weights}", weights=weights, step=epoch,
            config=config,
            params={**base, "weights": weights, "epoch": epoch, "alpha": alpha,
                    "val_acc": val_acc},
            metrics=owned, metrics_step=epochs, val_acc=val_acc,
        )
    rest = {k: v for k, v in metrics.items() if _metric_owner(k)[0] is None}
    tracker.log_metrics(rest, step=epochs)
    return ids


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


# ---------------------------------------------------------------------------------------
# logged models: reading


def resolve_model_uri(uri: str, tracking_uri: str | None = None) -> tuple[str | None, str]:
    """``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``models:/<model_id>`` ->
    (logged model id or None, artifact location of the model's files).

    Raises:
        CheckpointError: not a models:/ URI, unknown name / version / alias / model id.
    """
    from mlflow import MlflowClient

    from ablate.tracking import resolve_tracking_uri

    store = resolve_tracking_uri(tracking_uri)
    body = uri[len("models:/"):].strip("/") if uri.startswith("models:/") else ""
    if not body:
        raise CheckpointError(
            f"{uri!r} is not a model URI; give models:/NAME/VERSION, models:/NAME@ALIAS "
            "or models:/<model_id>"
        )
    client = MlflowClient(store, registry_uri=store)
    try:
        if "/" in body or "@" in body:
            if "/" in body:
                name, version = body.rsplit("/", 1)
                mv = client.get_model_version(name, version)
            else:
                name, alias = body.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
            source = str(mv.source or "")
            # a version registered from models:/<model_id> names its logged model in source
            model_id = mv.model_id or (source[len("models:/"):] if source.startswith(
                "models:/m-") else None)
            if model_id is None:
                return None, source
        else:
            model_id = body
        return model_id, client.get_logged_model(model_id).artifact_location
    except Exception as err:  # MlflowException: unknown name, version or id
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise CheckpointError(f"cannot find {uri} in {store}: {first}") from None


def read_logged_model(uri: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """A logged model as our checkpoint dict (``format``, ``name``, ``arch``, ``model``,
    ``config``, ``epoch``, ``val_acc``, ``variant_params``), read without executing code.

    Args:
        uri: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``models:/<model_id>``.
        tracking_uri: the store (None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).
    """
    import yaml
    from mlflow.artifacts import download_artifacts
    from safetensors.torch import load_file

    from ablate.models.checkpoint import CHECKPOINT_FORMAT
    from ablate.tracking import resolve_tracking_uri

    model_id, location = resolve_model_uri(uri, tracking_uri)
    store = resolve_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="ablate-model-") as tmp:
        try:
            local = Path(download_artifacts(artifact_uri=location, dst_path=tmp,
                                            tracking_uri=store))
            meta = json.loads((local / META_FILE).read_text())
            weights = load_file(str(local / WEIGHTS_FILE))
            config = yaml.safe_load((local / CONFIG_FILE).read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(
                f"{uri} (logged model {model_id}) is not an ablate model: {err}"
            ) from None
    if meta.get("format") != MODEL_FORMAT:
        raise CheckpointError(
            f"{uri}: format {meta.get('format')!r} is not {MODEL_FORMAT!r}"
        )
    state = {k: v for k, v in meta.items() if k not in ("format", "arch", "name")}
    state.update(format=CHECKPOINT_FORMAT, name=meta["name"], arch=meta["arch"],
                 model=weights, config=config, model_id=model_id)
    return state


def load_model(uri: str, tracking_uri: str | None = None) -> "nn.Module":
    """A logged (or registered) ablate model as a plain PyTorch module in eval mode.

    Example::

        from ablate.tracking.models import load_model
        model = load_model("models:/cct-digits/1")  # nn.Module, weights on the CPU
    """
    from ablate.models.checkpoint import model_from_checkpoint

    state = read_logged_model(uri, tracking_uri)
    model = model_from_checkpoint(state)
    saved = {k: v for k, v in (state.get("variant_params") or {}).items() if v is not None}
    if saved and hasattr(model, "set_variant_params"):
        model.set_variant_params(**saved)
    return model.eval()


def export_model_file(uri: str, out: str | Path, tracking_uri: str | None = None) -> Path:
    """Write a logged model as our checkpoint file (``torch.load(weights_only=True)``;
    ``ablate.models.checkpoint.model_from_checkpoint(path)`` rebuilds the module, and
    ``--init-from`` takes it)."""
    from ablate.models.checkpoint import atomic_torch_save

    state = read_logged_model(uri, tracking_uri)
    return atomic_torch_save(state, out)
