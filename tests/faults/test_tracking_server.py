"""A tracking server that never comes back (issue #25, item 12): a real ``mlflow server``
killed mid-run. The run gives up after its bounded retries with one line naming the server
and the resume command; once a server is back on the same store, the resume finishes the run
with every epoch once."""

from __future__ import annotations

import subprocess
import time

import pytest
from cli_process import ablate_cli  # tests/ helper, not collected
from mlflow import MlflowClient

from ablate.cli import main
from ablate.tracking.conventions import VAL_ACC

EPOCHS = 5


@pytest.mark.slow
def test_a_server_that_never_comes_back_ends_the_run_in_one_resumable_line(
    workdir, mlflow_server, monkeypatch
):
    # two quick retries instead of a minute of them (the defaults, HTTP_PATIENCE, yield to these)
    patience = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}  # fmt: skip
    for key, value in patience.items():
        monkeypatch.setenv(key, value)
    url = mlflow_server.url
    args = ["run", "--dataset", "digits", "--img-size", "8", "--epochs", str(EPOCHS),
            "--batch-size", "128", "--no-system-metrics", "--checkpoint-dir", "checkpoints",
            "--tracking-uri", url]  # fmt: skip
    proc = ablate_cli(workdir, *args, threads=1, stderr=subprocess.PIPE)
    client = MlflowClient(url)
    run_id, deadline = None, time.time() + 300
    while run_id is None and time.time() < deadline:
        time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        folders = list((workdir / "checkpoints").glob("*"))
        if folders and len(client.get_metric_history(folders[0].name, VAL_ACC)) >= 2:
            run_id = folders[0].name
    assert run_id, "the run never finished epoch 1"
    mlflow_server.stop()
    stopped = time.time()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if " epoch " not in line]  # one, no more
    assert line.startswith(f"ablate run: error: MLflow tracking store {url} is unavailable ("), err
    assert f"run {run_id} is left as it was" in line and "Connection refused" in line
    assert f"(resume with: ablate run --resume {run_id} --tracking-uri {url})" in line
    assert time.time() - stopped < 60

    mlflow_server.start()  # the same store, back
    assert main(["run", "--resume", run_id, "--tracking-uri", url, "--quiet"]) == 0
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run_id, VAL_ACC))
    assert steps == list(range(EPOCHS + 1))  # every finished epoch once, none lost
