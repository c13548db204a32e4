"""The command line around the commands: typo hints, shell completion (run in a real bash),
one-line answers for a missing storage or a variant file that ends the interpreter, values
checked before torch loads, and `ablate ui` against a real MLflow server: its printed URLs
and SIGTERM reaching the server it started."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cli_process import ablate_cli  # tests/ helper, not collected

from ablate.cli import main

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _ablate(*args: str, cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablate.cli", *args], capture_output=True,
                          text=True, timeout=300, env=ENV, cwd=cwd, **kwargs)


def test_a_mistyped_command_gets_the_closest_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["rn", "--epochs", "1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "ablate: error: argument COMMAND: invalid choice: 'rn' (did you mean run?)",
        "hint: run 'ablate --help' for usage",
    ]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash to complete in")
def test_bash_completes_commands_flags_and_choices(tmp_path):
    script = tmp_path / "ablate.bash"
    script.write_text(_ablate("completion", "bash").stdout)

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        out = subprocess.run(
            ["bash", "-c", f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1};"
             f" COMP_LINE='{line}'; COMP_POINT={len(line)}; _shtab_ablate;"
             ' printf "%s\\n" "${COMPREPLY[@]}"'],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert complete("ablate", "ru") == ["run"]
    assert complete("ablate", "study", "f.yaml", "--wor") == ["--workers", "--workers-per-device"]
    assert complete("ablate", "run", "--apply-to", "''") == ["attention", "seqpool", "both"]


def test_zsh_completion_is_a_compdef_script():
    out = _ablate("completion", "zsh")
    assert out.returncode == 0 and out.stdout.startswith("#compdef ablate")
    assert "study" in out.stdout and "--workers-per-device" in out.stdout
    if shutil.which("zsh"):
        assert subprocess.run(["zsh", "-n"], input=out.stdout, text=True).returncode == 0


def test_dashboard_of_a_missing_sqlite_file_is_one_line_and_creates_nothing(workdir, capsys):
    assert main(["dashboard", "--storage", "sqlite:///nonexistent.db"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such SQLite file 'nonexistent.db'" in err, err
    assert not (workdir / "nonexistent.db").exists()


@pytest.mark.parametrize("args, error", [
    (["run", "--epochs", "0"], "ablate run: error: epochs: must be >= 1, got 0"),
    (["study", "studies/quick.yaml", "--workers", "0"],
     "ablate study: error: --workers: must be >= 1, got 0"),
])  # fmt: skip
def test_bad_values_are_reported_before_torch_optuna_or_mlflow_load(args, error):
    code = (
        f"import sys; from ablate.cli import main; code = main({args!r}); "
        "print(code, *[m for m in ('torch', 'optuna', 'mlflow') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env=ENV, timeout=120)
    assert out.stdout.split() == ["2"], out.stdout + out.stderr  # nothing heavy was imported
    assert out.stderr.strip() == error


@pytest.mark.parametrize("body", ["import os\nos._exit(0)\n", "import sys\nsys.exit(0)\n"])
def test_a_variant_file_that_ends_the_interpreter_is_one_line(tmp_path, body):
    path = tmp_path / "exits.py"
    path.write_text(body)
    out = _ablate("variants", "--variant-file", str(path), cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == "", out.stdout
    assert out.stderr.strip() == (
        f"ablate variants: error: variant file {str(path)!r} ends the Python interpreter on "
        "import (exit status 0: sys.exit or os._exit at module level; move that code under "
        "`if __name__ == '__main__':`)"
    )


def test_a_variant_file_that_fails_on_import_is_one_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import nowhere_to_be_found\n")
    out = _ablate("variants", "--variant-file", str(path), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().endswith(
        "fails on import: ModuleNotFoundError: No module named 'nowhere_to_be_found'"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_ui_of_a_tracking_server_and_sigterm_stops_the_server_it_started(
    tmp_path, capsys, mlflow_template
):
    psutil = pytest.importorskip("psutil")
    from mlflow import MlflowClient

    port = _free_port()
    server = f"http://127.0.0.1:{port}"
    ui = ablate_cli(tmp_path, "ui", "--tracking-uri", mlflow_template.copy_to(tmp_path),
                    "--port", str(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    served: list = []
    try:
        deadline = time.monotonic() + 120
        while not _answers(f"{server}/health") and time.monotonic() < deadline:
            assert ui.poll() is None, "ablate ui ended"
            time.sleep(0.5)
        served = psutil.Process(ui.pid).children(recursive=True)
        assert served, "ablate ui started no server"

        # the server is also a tracking URI: its UI is itself, on its own port
        client = MlflowClient(server)
        run = client.create_run(client.create_experiment("remote"))
        from ablate.tracking.store import url_of_run

        url = url_of_run(server, run.info.run_id)
        assert url.startswith(f"{server}/#/experiments/{run.info.experiment_id}/runs/")
        assert main(["ui", "--tracking-uri", server, "--experiment", "remote"]) == 0  # no 2nd UI
        printed = capsys.readouterr().out
        assert f"{server}/#/experiments/{run.info.experiment_id}/runs?" in printed
        assert _answers(printed.split(": ", 1)[1].split("#")[0])

        ui.send_signal(signal.SIGTERM)  # this process only, as a service manager does
        assert ui.wait(timeout=60) == 128 + signal.SIGTERM
        gone = psutil.wait_procs(served, timeout=30)[1] == []
        assert gone and not _answers(f"{server}/health")  # nothing keeps serving
    finally:
        for process in served:
            if process.is_running():
                process.kill()
        if ui.poll() is None:
            ui.kill()
            ui.wait()


def test_the_command_exits_with_its_status_skipping_the_last_garbage_collection():
    code = ("import atexit, gc; from ablate.cli import exit_with; "
            "atexit.register(lambda: print(gc.get_freeze_count() > 0)); exit_with(3)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=ENV, timeout=120)  # fmt: skip
    assert out.returncode == 3, out.stderr
    assert out.stdout.split() == ["True"]  # everything made so far is out of the collector's way
