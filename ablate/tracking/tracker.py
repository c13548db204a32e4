"""The :class:`Tracker`: one MLflow run, opened, logged to and closed through ``MlflowClient``.

Every write that creates a run, tags it, ends it or changes its status goes through a
method here; statuses and tag names come from :mod:`ablate.tracking.conventions`.

Faults, the way lease-based systems handle them:

- **a lease** (tag ``ablate.lease``): each process that opens or resumes a run writes a new
  token; :meth:`Tracker.check_lease`, called before each epoch's writes, stops a process
  whose run was taken over (a paused worker whose trial was handed on) before it writes;
- **bounded patience** with a tracking server: MLflow's HTTP retries are capped at about a
  minute (:data:`HTTP_PATIENCE`, unless the environment sets them), and
  :func:`unavailable` tells a store that is gone or full from a bug, so the recorder ends
  with one line and leaves the run resumable;
- **a stop history** (tag ``stops``): every stop, why and after which epoch, and where each
  resume started (:meth:`Tracker.stop`, :meth:`Tracker.resumed`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

from ablate.exceptions import (
    AblateError,
    LeaseLost,
    ResumableError,
    TrackingUnavailable,
    first_line,
)
from ablate.tracking import conventions as cv
from ablate.tracking.store import (
    context_tags,
    experiment_id,
    git_commit,
    quiet_mlflow,
    resolve_tracking_uri,
)
from ablate.tracking.study_runs import StudyRecords

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from ablate.data import DataBundle, Split

__all__ = [
    "Tracker", "LeaseLost", "ResumableError", "TrackingUnavailable", "unavailable", "LEASE",
    "STOPS", "SPLIT_CONTEXTS", "MODEL_FORMAT", "WEIGHTS_FILE", "DatasetRef", "log_datasets",
    "log_trial_models",
]  # fmt: skip

LEASE = "ablate.lease"  # the token of the process that owns the run now
STOPS = "stops"  # JSON list: {"reason", "epoch"} per stop, "resumed" once resumed
# MLflow retries a request 7 times over about 4 minutes by default, and a run makes three
# requests on its way out (metrics, upload, end): 12.5 minutes for a server that never
# returns. 5 retries (waits 0, 4, 8, 16, 32 s) still ride out a server down for 44 s or frozen
# for 60 s, then give up after about a minute.
HTTP_PATIENCE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}  # fmt: skip


def unavailable(err: BaseException | None) -> str | None:
    """Why the MLflow store cannot be written now (the root cause, one line), or None when
    ``err`` is not a store failure: a lost connection or a timeout of the server, an
    operational error of its database (disk full, locked, unreachable). Our own errors
    (:class:`AblateError`) already say what they mean."""
    import requests
    import sqlalchemy.exc

    failures = (requests.ConnectionError, requests.Timeout, sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.InterfaceError)
    chain: list[BaseException] = []
    while err is not None and len(chain) < 20 and not isinstance(err, AblateError):
        chain.append(err)
        err = err.__cause__ if err.__cause__ or err.__suppress_context__ else err.__context__
    if not any(isinstance(e, failures) for e in chain):
        return None
    return " ".join(str(chain[-1]).split())[:200] or type(chain[-1]).__name__


class Tracker(StudyRecords):
    """Logs one run. Create with :meth:`start` (new run), :meth:`attach` (resume) or
    :meth:`find` (an existing run, status unchanged).

    Args:
        tracking_uri: any MLflow tracking URI (sqlite:///, file:, http://...).
        run_id: the run this tracker writes to.
        client: an ``MlflowClient`` to share (another run of the same store); made if None.
    """

    def __init__(self, tracking_uri: str | None, run_id: str, client: Any = None):
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        if self.tracking_uri.startswith(("http://", "https://")):
            for key, value in HTTP_PATIENCE.items():
                os.environ.setdefault(key, value)
        if client is None:
            from mlflow import MlflowClient

            client = MlflowClient(self.tracking_uri)
        self.client = client
        self.run_id = run_id
        self.lease: str | None = None  # set when this process owns the run (start, attach)

    @classmethod
    def start(
        cls,
        tracking_uri: str | None,
        experiment: str,
        *,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
    ) -> "Tracker":
        """Create a run (RUNNING) in ``experiment``, tagged with the git commit and source;
        this process holds its lease."""
        quiet_mlflow()
        tracker = cls(tracking_uri, "")
        exp_id = experiment_id(tracker.client, experiment)
        all_tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        all_tags = {**context_tags(), **all_tags}  # mlflow.user, mlflow.source.*, user code
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        commit = git_commit()
        if commit:
            all_tags.setdefault("mlflow.source.git.commit", commit)
        all_tags.setdefault("mlflow.source.name", "ablate")
        tracker.lease = all_tags[LEASE] = uuid.uuid4().hex
        tracker.run_id = tracker.client.create_run(
            exp_id, tags=all_tags, run_name=run_name).info.run_id
        return tracker

    @classmethod
    def attach(cls, tracking_uri: str | None, run_id: str) -> "Tracker":
        """Take an existing run over (``--resume``, a retried trial): a new lease fences off
        any process still writing to it, the run is RUNNING again and the reason it stopped
        goes (a run that then finishes carries no stale failure; ``stops`` keeps it)."""
        quiet_mlflow()
        tracker = cls(tracking_uri, run_id)
        tags = tracker.client.get_run(run_id).data.tags  # a clear MLflow error for unknown ids
        tracker.lease = uuid.uuid4().hex
        tracker.set_tags({LEASE: tracker.lease})
        tracker.client.update_run(run_id, status=cv.RUNNING)
        for key in {cv.FAILURE_REASON, cv.STOP_REASON} & set(tags):
            tracker.client.delete_tag(run_id, key)
        return tracker

    @classmethod
    def find(cls, tracking_uri: str | None, run_id: str) -> "Tracker | None":
        """The existing, not deleted run ``run_id``; None when the store does not have it."""
        quiet_mlflow()
        tracker = cls(tracking_uri, run_id)
        try:
            run = tracker.client.get_run(run_id)
        except Exception:
            return None
        return None if run.info.lifecycle_stage == "deleted" else tracker

    def other(self, run_id: str) -> "Tracker":
        """A tracker for another run of the same store (shares the client)."""
        return Tracker(self.tracking_uri, run_id, self.client)

    # -- reading -----------------------------------------------------------------------
    def check_lease(self) -> None:
        """Raise :class:`LeaseLost` when another process has taken the run over since this
        one opened it (no-op for a tracker that never held it)."""
        if self.lease is None:
            return
        if self.tags().get(LEASE) != self.lease:
            raise LeaseLost(
                f"run {self.run_id} was taken over by another process while this one was "
                "paused or cut off; this one stops without writing to it again"
            )

    def tags(self) -> dict[str, str]:
        return self.client.get_run(self.run_id).data.tags

    def logged_models(self) -> list[Any]:
        """The run's logged models (``LoggedModel``: model_id, status, tags)."""
        exp = self.client.get_run(self.run_id).info.experiment_id
        return list(self.client.search_logged_models(
            [exp], filter_string=f"source_run_id = '{self.run_id}'"))

    def forget_models(self, models: list[Any]) -> set[str]:
        """Delete ``models`` (what an end cut short left); returns the run's metric names."""
        for model in models:
            self.client.delete_logged_model(model.model_id)
        return set(self.client.get_run(self.run_id).data.metrics)

    def status(self) -> str:
        """The run's MLflow status: RUNNING, FINISHED, FAILED, KILLED or SCHEDULED."""
        return self.client.get_run(self.run_id).info.status

    def list_artifacts(self, path: str | None = None) -> list[str]:
        """Paths of the run's artifacts directly under ``path`` (relative to the run root)."""
        return [f.path for f in self.client.list_artifacts(self.run_id, path)]

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(self.run_id, key)]

    def download_artifact(self, artifact_path: str, dst: str | Path) -> Path:
        from mlflow.artifacts import download_artifacts

        return Path(
            download_artifacts(
                run_id=self.run_id, artifact_path=artifact_path, dst_path=str(dst),
                tracking_uri=self.tracking_uri,
            )
        )

    # -- logging -----------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        # Unset values are left out: a param "None" reads as if None had been chosen.
        items = [Param(k, str(v)[:6000]) for k, v in params.items() if v is not None]
        for i in range(0, len(items), 100):  # MLflow's per-batch limit for params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, tags=items)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """One batched call per epoch (not one request per metric)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_linked_metrics(self, metrics: list[Any]) -> None:
        """``mlflow.entities.Metric`` objects carrying a logged model and / or a data set
        (MLflow 3 keeps the link on the model's metrics; the run gets each value once)."""
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_inputs(self, datasets: list[Any], models: tuple[str, ...] = ()) -> None:
        """The run's data sets (``mlflow.entities.DatasetInput``): the UI's Datasets column;
        ``models``: ids of logged models the run started from (its lineage, issue #26).

        Workers sharing a store log the same data set at the same moment; MLflow's SQL store
        checks for it and then inserts it, so the slower one hits the unique constraint. Its
        transaction was rolled back whole, and on the retry it finds the other's row.
        """
        from mlflow.entities import LoggedModelInput
        from mlflow.exceptions import MlflowException

        for attempt in range(3):
            try:
                self.client.log_inputs(self.run_id, datasets=datasets,
                                       models=[LoggedModelInput(m) for m in models] or None)
                return
            except MlflowException as err:
                text = str(err)
                if attempt == 2 or not ("UNIQUE" in text or "duplicate key" in text):
                    raise
                time.sleep(0.2 * (attempt + 1))

    def log_model_output(self, model_id: str, step: int) -> None:
        """Record a logged model as this run's output at ``step`` (the epoch it came from)."""
        from mlflow.entities import LoggedModelOutput

        self.client.log_outputs(self.run_id, [LoggedModelOutput(model_id, step=int(step))])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def attach_files(self, paths: list[str | Path], folder: str) -> None:
        """Copy local files into the run's artifacts under ``folder`` (e.g. ``compare``)."""
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), folder)

    # -- lifecycle ---------------------------------------------------------------------
    def end(self, status: str = cv.FINISHED, reason: str | None = None) -> None:
        """Close the run: FINISHED, FAILED (with ``failure_reason`` tag) or KILLED."""
        if reason:
            self.set_tags({cv.FAILURE_REASON: reason[: cv.REASON_LIMIT]})
        self.client.set_terminated(self.run_id, status=status)

    def stop(self, reason: str, message: str, epoch: int | None = None,
             status: str = cv.KILLED) -> None:
        """End the run (KILLED by a stop signal: ``stop_reason`` preempted, time_limit or
        user) and add the stop, after ``epoch``, to its ``stops`` history."""
        self._stop(reason, epoch, {cv.STOP_REASON: reason} if status == cv.KILLED else {})
        self.end(status, message)

    def resumed(self, epoch: int) -> None:
        """The run continues after ``epoch`` (0: from the start): the last stop gets
        ``resumed``; a stop nobody recorded (SIGKILL, the store gone) is added first."""
        self._stop("unrecorded", epoch, {"resumed_from_epoch": epoch}, resumed=epoch)

    def _stop(self, reason: str, epoch: int | None, tags: Mapping[str, Any],
              resumed: int | None = None) -> None:
        stops = json.loads(self.tags().get(STOPS, "[]"))
        if resumed is None or not stops or "resumed" in stops[-1]:
            stops.append({"reason": reason, "epoch": epoch})
        if resumed is not None:
            stops[-1]["resumed"] = resumed
        self.set_tags({**tags, STOPS: json.dumps(stops[-50:], separators=(",", ":"))})

    def resume(self) -> None:
        """Mark the run RUNNING again (a resumed study's parent); no-op when it is."""
        if self.status() != cv.RUNNING:
            self.client.update_run(self.run_id, status=cv.RUNNING)


# -- data sets and logged models ----------------------------------------------------------
# Data sets. Each split is logged with ``log_inputs`` as an MLflow data set named
# ``<dataset>-<split>`` (``digits-train``), with context ``train`` / ``validation`` / ``test``,
# a digest of the exact tensors (labels included), the source the data came from and a
# profile with the row count, class count and input shape. Identical data gives identical
# digests across runs, so the UI groups runs trained on the same split.
#
# Logged models. The final and the best-validation weights become two LoggedModels of the
# run (``<run name> final`` / ``best``, tag ``ablate.weights``), run outputs at the epoch they
# come from, with params naming that epoch and its alpha, and metrics linked to their data
# set. Each is what ``mlflow.pytorch.save_model`` writes, plus our weights:
#
# - ``data/model.pt2`` (flavors ``pytorch``, ``python_function``): the eval-mode forward
#   exported by ``torch.export`` on the CPU, LoRA adapters merged: raw tensor bytes and a JSON
#   graph, no pickled code (MLflow checks it before loading). ``mlflow.pytorch.load_model``
#   gives a ``torch.fx.GraphModule`` (eval mode: dropout is not in the graph, and torch refuses
#   ``.train()`` / ``.eval()`` on it), ``mlflow.pyfunc.load_model(uri).predict(batch)``
#   predicts on the CPU; both need torch, not ablate;
# - ``MLmodel`` with the signature (input: what the backbone takes, any batch size: images
#   normalised by ``DataBundle.eval_transform``, or token ids; output: logits),
#   ``input_example.json`` (two test rows) and the environment files;
# - ``model.safetensors`` and the ``ablate`` flavor (registry name, architecture, epoch,
#   alpha, val_acc, variant parameters, the run's config): what :func:`load_model`,
#   ``--init-from`` and ``ablate export`` rebuild our own module from, whose variant
#   parameters can change and which trains further (the graph can do neither). The weights
#   are stored twice (cct_7_3x1_32: 15 MB each; the export adds about 1 s per model, so when
#   the best epoch is the last one the folder is exported once and logged for both models).
# DataBundle attribute -> MLflow data set context
SPLIT_CONTEXTS = {"train": "train", "val": "validation", "test": "test"}
MODEL_FORMAT = "ablate-logged-model-v2"
WEIGHTS_FILE = "model.safetensors"


class DatasetRef(NamedTuple):
    """A logged data set: what a metric links to."""

    name: str
    digest: str


# ---------------------------------------------------------------------------------------
# data sets


def split_digest(split: "Split") -> str:
    """First 16 hex digits of the SHA-256 of the split's inputs, labels and shapes."""
    import torch

    h = hashlib.sha256()
    for t in (split.x, split.y):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _dataset_input(bundle: "DataBundle", attr: str, source: str) -> tuple[Any, DatasetRef]:
    import torch
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
    import torch
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
