"""``ablate ui`` (the MLflow UI) and ``ablate dashboard`` (optuna-dashboard), both bound to
127.0.0.1 by default, and ``ablate export`` (a logged model as a plain checkpoint file).

MLflow 3's UI opens experiments in its GenAI view (traces, judges, prompts) unless the URL
asks for the model-training view: every URL printed here carries
``?workflowType=machine_learning`` (the query parameter the UI's router reads), so the first
click shows runs, learning curves, data sets and logged models.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

from ablate.cli_options import add_server_address, add_tracking_uri
from ablate.exceptions import AblateError

__all__ = [
    "add_arguments",
    "command",
    "add_dashboard_arguments",
    "dashboard_command",
    "add_export_arguments",
    "export_command",
    "experiment_url",
    "run_url",
    "WORKFLOW_QUERY",
]

WORKFLOW_QUERY = "workflowType=machine_learning"


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table in the model-training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{WORKFLOW_QUERY}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page in the model-training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{WORKFLOW_QUERY}"


def url_of_run(tracking_uri: str | None, run_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """``run_url`` for a run id of ``tracking_uri`` (what `ablate run` / `ablate study` print)."""
    from mlflow import MlflowClient

    from ablate.tracking import resolve_tracking_uri

    run = MlflowClient(resolve_tracking_uri(tracking_uri)).get_run(run_id)
    return run_url(base, run.info.experiment_id, run_id)


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
    parser.add_argument(
        "--experiment",
        default=None,
        metavar="NAME",
        help="open this experiment (default: the one with the newest run)",
    )
    parser.add_argument(
        "--open", action="store_true", help="also open the URL in the default web browser"
    )
    parser.add_argument(
        "--print-url", action="store_true", help="print the URL and exit without starting the UI"
    )


def command(args: argparse.Namespace) -> int:
    """Print the URL of the newest experiment in the model-training view, then serve the UI
    (``--print-url``: print only the URL)."""
    from mlflow import MlflowClient

    from ablate.tracking import resolve_tracking_uri
    from ablate.tracking.store import quiet_mlflow

    quiet_mlflow()  # a new store's "creating tables" notices are not the first line
    uri = resolve_tracking_uri(args.tracking_uri)
    base = f"http://{args.host}:{args.port}"
    exp_id = _newest_experiment(MlflowClient(uri), args.experiment)
    url = experiment_url(base, exp_id) if exp_id is not None else f"{base}/?{WORKFLOW_QUERY}"
    if args.print_url:
        print(url, flush=True)
        return 0
    print(f"MLflow UI for {uri} at {url}  (Ctrl-C to stop)", flush=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", args.host, "--port", str(args.port)]
    proc = subprocess.Popen(cmd)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return 0


def add_dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="Optuna storage of the study (default: sqlite:///ablate-optuna.db here)",
    )
    add_server_address(parser, port=8080)


def dashboard_command(args: argparse.Namespace) -> int:
    """optuna-dashboard on a study storage (``pip install 'ablate[dashboard]'``)."""
    import shutil
    from pathlib import Path

    from ablate.study.storage import resolve_storage_url

    beside = Path(sys.executable).with_name("optuna-dashboard")
    exe = str(beside) if beside.is_file() else shutil.which("optuna-dashboard")
    if exe is None:
        raise AblateError(
            "ablate dashboard needs optuna-dashboard: pip install 'ablate[dashboard]'"
        )
    storage = resolve_storage_url(args.storage)
    print(f"optuna-dashboard at http://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
    cmd = [exe, storage, "--host", args.host, "--port", str(args.port)]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model_uri", metavar="MODEL_URI",
        help="models:/NAME/VERSION, models:/NAME@ALIAS or models:/<model_id>",
    )
    parser.add_argument(
        "file", metavar="FILE",
        help="checkpoint file to write (.pt, read with torch.load(weights_only=True))",
    )
    add_tracking_uri(parser)


def export_command(args: argparse.Namespace) -> int:
    """A logged / registered model as a plain checkpoint file (weights + architecture)."""
    from ablate.tracking.models import export_model_file

    path = export_model_file(args.model_uri, args.file, args.tracking_uri)
    print(f"{args.model_uri} -> {path} (ablate.models.checkpoint.model_from_checkpoint loads it)")
    return 0
