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
import time
import urllib.request

import pytest
from cli_process import ablate_cli  # tests/ helper, not collected

from ablate.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A store with a 2-trial study and then one finished run, served by `ablate ui`; yields
    (the URL `ablate ui` printed, its port, what `ablate study` printed)."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("mlflow_ui")
    uri = f"sqlite:///{root}/mlflow.db"
    study = root / "two.yaml"
    study.write_text(
        "name: two\nbase: {img_size: 8, epochs: 1, quiet: true, system_metrics: false}\n"
        "grid: {variant: [softmax, softmax_v]}\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["study", str(study), "--storage", f"sqlite:///{root}/optuna.db"]) == 0
        args = ["run", "--img-size", "8", "--epochs", "1", "--quiet", "--no-system-metrics",
                "--variant", "softmax_v", "--alpha-schedule", "linear"]
        assert main([*args, "--run-name", "ui-run"]) == 0
    port = _free_port()
    args = ["ui", "--tracking-uri", uri, "--port", str(port)]
    url = io.StringIO()
    with contextlib.redirect_stdout(url):
        assert main([*args, "--print-url"]) == 0
    printed = url.getvalue().strip()
    # MLflow's background job runner (8 more processes) serves none of the pages tested here
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = ablate_cli(root, *args, env=env, new_session=True, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)  # fmt: skip
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
        yield printed, port, out.getvalue()
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


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by Playwright (waits on what the page renders, where
    ``--dump-dom`` raced the charts' lazy rendering)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (optional)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
        ])
        yield browser
        browser.close()


def _open(browser, url: str, wait_for: str):
    """The page at ``url``, once ``wait_for`` (a text) is on it; 1600 x 1400 px."""
    page = browser.new_page(viewport={"width": 1600, "height": 1400})
    page.goto(url)
    page.get_by_text(wait_for).first.wait_for(timeout=90_000)
    return page


def _chart_rows(page, legend: str) -> list[list[str]]:
    """Metric charts top to bottom, each row left to right, by the metric their legend names
    (``<run name> (acc/val)``)."""
    cards = page.evaluate(
        """legend => {
            const found = new Map();
            for (const el of document.querySelectorAll('div')) {
                const box = el.getBoundingClientRect();
                const text = el.innerText || '';
                if (box.width < 150 || box.width > 450 || !text.includes(legend)) continue;
                const m = text.match(/\\(([^()]+)\\)\\s*$/);
                if (m && !found.has(m[1])) found.set(m[1], [box.top, box.left]);
            }
            return Array.from(found, ([metric, [top, left]]) => [metric, top, left]);
        }""",
        legend,
    )
    rows: dict[float, list] = {}
    for metric, top, left in sorted(cards, key=lambda c: (c[1], c[2])):
        rows.setdefault(next((t for t in rows if abs(t - top) < 20), top), []).append(metric)
    return list(rows.values())


@pytest.mark.slow
def test_printed_url_is_the_experiment_in_the_model_training_view(served):
    url, port, _ = served
    assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/")
    assert url.endswith("/runs?workflowType=machine_learning")


@pytest.mark.slow
def test_rest_api_behind_the_page_has_the_run_its_datasets_and_models(served):
    url, port, _ = served
    exp_id = re.search(r"/experiments/(\d+)/", url).group(1)
    runs = _post(port, "/ajax-api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})["runs"]
    (run,) = runs
    assert run["info"]["run_name"] == "ui-run"
    names = {d["dataset"]["name"] for d in run["inputs"]["dataset_inputs"]}
    assert names == {"digits-train", "digits-validation", "digits-test"}
    models = _post(
        port, "/ajax-api/2.0/mlflow/logged-models/search", {"experiment_ids": [exp_id]}
    )["models"]
    assert {m["info"]["name"] for m in models} == {"ui-run final", "ui-run best"}
    assert {m["info"]["source_run_id"] for m in models} == {run["info"]["run_id"]}


@pytest.mark.slow
def test_headless_chromium_shows_run_dataset_and_logged_models(served, browser):
    url, _, _ = served
    runs_page = _open(browser, url, "digits-train").inner_text("body")
    assert "Model training" in runs_page and "ui-run" in runs_page
    assert "Judges" not in runs_page  # not the GenAI view
    models_page = _open(browser, url.replace("/runs?", "/models?"), "ui-run best").inner_text(
        "body")
    assert "ui-run final" in models_page and "ui-run best" in models_page


@pytest.mark.slow
def test_run_page_opens_on_the_learning_curves(served, browser):
    """MLflow groups charts into sections by the part of a metric's name before "/" and puts
    un-prefixed metrics last: the first row is the accuracy curves (train and val), and the
    one-point end-of-run scalars (test_*, best_*) come after every curve."""
    url, port, _ = served
    exp_id = re.search(r"/experiments/(\d+)/", url).group(1)
    runs = _post(port, "/ajax-api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})["runs"]
    run_url = f"{url.split('#')[0]}#/experiments/{exp_id}/runs/{runs[0]['info']['run_id']}"
    page = _open(browser, f"{run_url}/model-metrics", "(acc/val)")
    rows = _chart_rows(page, "ui-run (")
    assert rows[0] == ["acc/train", "acc/val"]
    sections = re.findall(r"^([^\n]+)\n\((\d+)\)\nAdd chart", page.inner_text("body"), flags=re.M)
    assert sections[0] == ("acc", "2") and sections[-1][0] == "Model metrics"


@pytest.mark.slow
def test_a_studys_trials_have_distinct_names_and_curves_side_by_side(served, browser):
    url, port, printed = served
    trials_url = re.search(r"its trials' curves side by side: (\S+)", printed).group(1)
    trials_url = trials_url.replace("127.0.0.1:5000", f"127.0.0.1:{port}")
    exp_id = re.search(r"/experiments/(\d+)/", trials_url).group(1)
    runs = _post(port, "/ajax-api/2.0/mlflow/runs/search", {
        "experiment_ids": [exp_id], "filter": "tags.role = 'trial'"})["runs"]
    names = sorted(r["info"]["run_name"] for r in runs)
    assert len(names) == 2 and names[0] != names[1]
    assert names[0].startswith("two#") and "softmax_v" in names[1]
    page = _open(browser, trials_url, "(acc/val)")
    listed = page.inner_text("body")
    assert all(name[:20] in listed for name in names)  # flat: not folded under the study run
    legends = page.get_by_text(re.compile(r"\(acc/val\)$")).all_inner_texts()
    assert len(legends) >= 2  # both trials' curves in the acc/val chart
