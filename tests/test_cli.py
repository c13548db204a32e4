"""The command-line surface: help texts, and `ablate ui` serving the store on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cli_process import ablate_cli  # tests/ helper, not collected

from ablate.cli import _COMMANDS, build_parser, main
from ablate.config import config_fields


def test_every_command_and_run_flag_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    top = capsys.readouterr().out
    for name in _COMMANDS:
        assert name in top
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest not in ("help",):
                assert action.help, f"ablate {name}: {action.option_strings} has no help"
    run_help = sub.choices["run"].format_help()
    for f in config_fields():
        assert "--" + f.name.replace("_", "-") in run_help, f.name


def test_unknown_choice_is_a_one_line_usage_error_with_a_hint(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--apply-to", "mlp"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "invalid choice: 'mlp'" in err[0]
    assert err[0].startswith("ablate run: error:")
    assert err[1] == "hint: run 'ablate run --help' for usage"


def test_a_mistyped_flag_is_reported_by_its_command_with_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--epochz", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ablate run: error: unrecognized arguments: --epochz (did you mean --epochs?)",
        "hint: run 'ablate run --help' for usage",
    ]
    with pytest.raises(SystemExit):
        main(["variants", "soft*", "extra"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "ablate variants: error: unrecognized arguments: extra"


def test_shared_options_have_one_meaning_in_every_command():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    with_output, with_uri = [], []
    for name, p in sub.choices.items():
        for action in p._actions:
            if "--output" in action.option_strings:
                with_output.append(name)
                assert tuple(action.choices) == ("table", "json"), name
            if "--tracking-uri" in action.option_strings:
                with_uri.append(name)
                assert action.help.startswith("MLflow tracking URI (default: "), name
                assert action.help.endswith("$MLFLOW_TRACKING_URI, sqlite:///mlflow.db)"), name
    assert {"variants", "models"} <= set(with_output)
    assert {"run", "finetune", "study", "compare", "ui"} <= set(with_uri)


def test_ui_refuses_no_server_process_in_one_line(capsys):
    assert main(["ui", "--workers", "0", "--print-url"]) == 2
    assert capsys.readouterr().err.strip() == "ablate ui: error: --workers: must be >= 1, got 0"


def test_a_closed_pipe_ends_the_command_quietly():
    """`ablate models | head -1`: the reader goes away; no BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ablate", "models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    proc.stdout.close()  # before the command prints anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141  # 128 + SIGPIPE, as `ls | head` ends
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_python_dash_m_ablate_is_the_command():
    out = subprocess.run(
        [sys.executable, "-m", "ablate", "variants"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert out.returncode == 0, out.stderr
    assert "softmax_v" in out.stdout


def test_models_lists_text_pooling_and_sizes(capsys):
    assert main(["models", "text_vit_lite_2", "--output", "json"]) == 0
    import json

    (row,) = json.loads(capsys.readouterr().out)
    assert row["task"] == "text" and row["pooling"] == "class token"
    assert row["layers"] == 2 and row["dim"] != "-" and row["input"] == 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ui_serves_the_store_on_loopback(tmp_path):
    psutil = pytest.importorskip("psutil")
    port = _free_port()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # without MLflow's background job runner (8 more processes), which serves no page
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = ablate_cli(tmp_path, "ui", "--tracking-uri", uri, "--port", str(port), env=env,
                      new_session=True)  # fmt: skip
    try:
        first = proc.stdout.readline()
        assert f"at http://127.0.0.1:{port}" in first and uri in first
        deadline = time.monotonic() + 90
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    body = resp.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert body is not None and "OK" in body, f"UI did not answer (exit {proc.poll()})"
        # bound to loopback only: no listener on the machine's other addresses
        with socket.socket() as s:
            s.settimeout(1)
            other = socket.gethostbyname(socket.gethostname())
            if not other.startswith("127."):
                assert s.connect_ex((other, port)) != 0
        # one server process for one user (MLflow's default starts four)
        (server,) = [p for p in psutil.Process(proc.pid).children(recursive=True)
                     if "mlflow" in p.cmdline()]  # fmt: skip
        assert server.cmdline()[-2:] == ["--workers", "1"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
