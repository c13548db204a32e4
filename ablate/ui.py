"""``ablate ui`` (the MLflow UI) and ``ablate dashboard`` (optuna-dashboard), both bound to
127.0.0.1 by default, and ``ablate export`` (a logged model as a plain checkpoint file).

Every URL printed here opens the model-training view (:func:`ablate.tracking.store.run_url`).
For a tracking server (``http(s)://``) the UI is the server itself: nothing is started.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from typing import Any

from ablate.cli_options import add_server_address, add_tracking_uri
from ablate.exceptions import AblateError, ConfigError
from ablate.tracking.store import WORKFLOW_QUERY, experiment_url, is_server

__all__ = ["add_arguments", "command", "add_dashboard_arguments", "dashboard_command",
           "add_export_arguments", "export_command"]  # fmt: skip


def _newest_experiment(client: Any, name: str | None) -> str | None:
    """The id of experiment ``name``, else of the one with the newest run (None: no runs)."""
    if name:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
            raise AblateError(f"--experiment: no experiment {name!r}; the store has: {names}")
        return exp.experiment_id
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return None
    runs = client.search_runs(ids, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.experiment_id if runs else ids[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_tracking_uri(parser)
    add_server_address(parser, port=5000)
    parser.add_argument("--experiment", metavar="NAME",
                        help="open this experiment (default: the one with the newest run)")
    parser.add_argument("--open", action="store_true",
                        help="also open the URL in the default web browser")
    parser.add_argument("--print-url", action="store_true",
                        help="print the URL and exit without starting the UI")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="server processes (default: 1, for one user on this machine; "
                             "MLflow's own default is 4)")  # fmt: skip


def command(args: argparse.Namespace) -> int:
    """Print the URL of the newest experiment in the model-training view, then serve the UI
    (``--print-url``: print only the URL)."""
    if args.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {args.workers}")
    from mlflow import MlflowClient

    from ablate.tracking import resolve_tracking_uri
    from ablate.tracking.store import quiet_mlflow

    quiet_mlflow()  # a new store's "creating tables" notices are not the first line
    uri = resolve_tracking_uri(args.tracking_uri)
    base = uri.rstrip("/") if is_server(uri) else f"http://{args.host}:{args.port}"
    exp_id = _newest_experiment(MlflowClient(uri), args.experiment)
    url = experiment_url(base, exp_id) if exp_id is not None else f"{base}/?{WORKFLOW_QUERY}"
    if args.print_url or is_server(uri):
        print(url if args.print_url else f"MLflow UI of the tracking server {uri}: {url}")
    else:
        print(f"MLflow UI for {uri} at {url}  (Ctrl-C to stop)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    if args.print_url or is_server(uri):
        return 0
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    return _serve(cmd)


def _serve(cmd: list[str]) -> int:
    """Run a server in its own process group until it ends; SIGINT, SIGTERM and SIGHUP sent
    to this process reach the whole group (the UI's worker processes too), then it is
    waited for, so nothing keeps serving after ``ablate ui`` is gone."""
    import os
    import signal

    proc = subprocess.Popen(cmd, start_new_session=True)
    stopped: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        stopped.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM if signum == signal.SIGINT else signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    code = proc.wait()
    if not stopped:
        return code
    return 0 if stopped[0] == signal.SIGINT else 128 + stopped[0]


def add_dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", metavar="URL", help="Optuna storage of the study "
                        "(default: sqlite:///ablate-optuna.db here)")  # fmt: skip
    add_server_address(parser, port=8080)


def dashboard_command(args: argparse.Namespace) -> int:
    """optuna-dashboard on a study storage (``pip install 'ablate[dashboard]'``)."""
    import shutil
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from ablate.study.storage import resolve_storage_url

    storage = resolve_storage_url(args.storage)
    database = make_url(storage).database if storage.startswith("sqlite") else None
    if database and database != ":memory:" and not Path(database).is_file():
        raise AblateError(  # optuna-dashboard would create an empty file and fail at length
            f"--storage {args.storage or storage}: no such SQLite file {database!r}; give the "
            "storage a study ran with (ablate study ... --storage URL)"
        )
    beside = Path(sys.executable).with_name("optuna-dashboard")
    exe = str(beside) if beside.is_file() else shutil.which("optuna-dashboard")
    if exe is None:
        raise AblateError("ablate dashboard needs optuna-dashboard: "
                          "pip install 'ablate[dashboard]'")  # fmt: skip
    print(f"optuna-dashboard at http://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
    return _serve([exe, storage, "--host", args.host, "--port", str(args.port)])


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_uri", metavar="MODEL_URI",
                        help="models:/NAME/VERSION, models:/NAME@ALIAS or models:/<model_id>")
    parser.add_argument("file", metavar="FILE", help="checkpoint file to write (.pt, read with "
                        "torch.load(weights_only=True))")  # fmt: skip
    add_tracking_uri(parser)


def export_command(args: argparse.Namespace) -> int:
    """A logged / registered model as a plain checkpoint file (weights + architecture)."""
    from ablate.tracking.models import export_model_file

    path = export_model_file(args.model_uri, args.file, args.tracking_uri)
    print(f"{args.model_uri} -> {path} (ablate.models.checkpoint.model_from_checkpoint loads it)")
    return 0
