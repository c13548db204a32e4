"""`ablate ui` opens the MLflow 3 UI in its model-training view, where a finished run shows
with its data set and its logged models: checked through the REST API the page reads and,
where Chromium is installed, on the page headless Chromium renders."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from html import unescape
from pathlib import Path

import pytest

from ablate.cli import main

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A store with one finished run, served by `ablate ui`; yields (url printed, port, run)."""
    root = tmp_path_factory.mktemp("mlflow_ui")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        args = ["run", "--img-size", "8", "--epochs", "1", "--quiet", "--no-system-metrics"]
        assert main([*args, "--run-name", "ui-run"]) == 0
    port = _free_port()
    cmd = [sys.executable, "-m", "ablate.cli", "ui", "--tracking-uri", uri, "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    printed = subprocess.run(
        [*cmd, "--print-url"], capture_output=True, text=True, cwd=root, env=env, check=True
    ).stdout.strip()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root, env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"the MLflow UI did not answer (exit {proc.poll()})")
        yield printed, port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _post(port: int, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _page_text(url: str, tmp_path: Path) -> str:
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path}", "--virtual-time-budget=30000",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=180,
    ).stdout
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", text)).split())


@pytest.mark.slow
def test_printed_url_is_the_experiment_in_the_model_training_view(served):
    url, port = served
    assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/")
    assert url.endswith("/runs?workflowType=machine_learning")


@pytest.mark.slow
def test_rest_api_behind_the_page_has_the_run_its_datasets_and_models(served):
    url, port = served
    exp_id = re.search(r"/experiments/(\d+)/", url).group(1)
    runs = _post(port, "/ajax-api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})["runs"]
    (run,) = runs
    assert run["info"]["run_name"] == "ui-run"
    names = {d["dataset"]["name"] for d in run["inputs"]["dataset_inputs"]}
    assert names == {"digits-train", "digits-validation", "digits-test"}
    models = _post(
        port, "/ajax-api/2.0/mlflow/logged-models/search", {"experiment_ids": [exp_id]}
    )["models"]
    assert {m["info"]["name"] for m in models} == {"final", "best"}
    assert {m["info"]["source_run_id"] for m in models} == {run["info"]["run_id"]}


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (optional)")
def test_headless_chromium_shows_run_dataset_and_logged_models(served, tmp_path):
    url, _ = served
    runs_page = _page_text(url, tmp_path / "a")
    assert "Model training" in runs_page and "ui-run" in runs_page
    assert "digits-train" in runs_page
    assert "Judges" not in runs_page  # not the GenAI view
    models_page = _page_text(url.replace("/runs?", "/models?"), tmp_path / "b")
    assert "final" in models_page and "best" in models_page and "ui-run" in models_page
