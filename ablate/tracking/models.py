"""Logged models read back: ``models:/`` URIs resolved (registered names, versions, aliases),
a logged model's ``model.safetensors`` and ``ablate`` flavor read (``--init-from``), our own
module rebuilt from them (:func:`load_model`) and written as a checkpoint file (``ablate
export``). What a logged model holds is described where it is written:
:func:`ablate.tracking.tracker.log_trial_models`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ablate.exceptions import CheckpointError, first_line
from ablate.tracking.tracker import WEIGHTS_FILE

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["ModelRef", "resolve_model_uri", "read_logged_model", "load_model", "export_model_file"]

_V1_FORMAT = "ablate-logged-model-v1"  # before the pytorch flavor: JSON + YAML files


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
