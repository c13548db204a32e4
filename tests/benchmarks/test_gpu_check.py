"""benchmarks/gpu_check.py end to end on the CPU (--quick): the report CUDA would print."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from variants import _registry  # noqa: E402

# gpu_check imports benchmarks/throughput.py, which registers its `explicit` baseline variant;
# keep it out of the registry the rest of the test session sees.
_before = dict(_registry._REGISTRY)
import gpu_check  # noqa: E402
from cli_process import run_ablate  # noqa: E402  (tests/ helper, not collected)

_registry._REGISTRY.clear()
_registry._REGISTRY.update(_before)

pytestmark = pytest.mark.slow  # one report (a process) for the module: with the other slow tests


def _table_columns(text: str, first: str) -> tuple[str, ...]:
    """Column names of the Markdown table whose header starts with ``first``."""
    for line in text.splitlines():
        cells = tuple(c.strip() for c in line.strip().strip("|").split("|"))
        if line.startswith("|") and cells[0] == first:
            return cells
    raise AssertionError(f"no table starting with {first!r}")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    # `python benchmarks/gpu_check.py ...`, forked from an interpreter that has torch imported
    done = run_ablate(ROOT, "--device", "cpu", "--quick", "--out", str(out), "--quiet",
                      threads=1, main="gpu_check:main")  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (json_file,) = out.glob("gpu_check-cpu-*.json")
    (md_file,) = out.glob("gpu_check-cpu-*.md")
    assert json_file.stem == md_file.stem and f"wrote {out / json_file.stem}" in done.stdout
    return json.loads(json_file.read_text()), md_file.read_text(), done.stdout


def test_header_names_machine_software_and_commit(report):
    data, markdown, _ = report
    header = data["header"]
    for key in ("machine", "gpu", "driver", "torch", "torchvision", "git commit", "date"):
        assert header[key], key
        assert f"- **{key}**: {header[key]}" in markdown
    assert header["device"] == "cpu" and header["gpu"] == "n/a" and header["driver"] == "n/a"
    assert data["status"] == "pass" and data["seconds"] > 0


def test_tests_step_is_skipped_without_cuda(report):
    data, markdown, _ = report
    assert data["tests"]["status"] == "skipped" and "CUDA" in data["tests"]["summary"]
    assert "## GPU tests (pytest -m gpu)" in markdown


def test_numerics_cover_every_variant_dtype_and_site(report):
    data, markdown, _ = report
    rows = data["numerics"]
    assert all(tuple(r) == gpu_check.NUMERICS_COLUMNS for r in rows)
    cells = {(r["variant"], r["case"], r["dtype"]) for r in rows}
    assert len(cells) == len(rows) == len(gpu_check.NUMERIC_VARIANTS) * 3 * 3
    assert {r["dtype"] for r in rows} == {"fp32", "bf16", "fp16"}
    assert {r["case"] for r in rows} == {"encoder", "seqpool", "masked"}
    assert all(r["status"] == "PASS" and r["out rel err"] < r["tolerance"] for r in rows)
    assert all(r["backend"] in ("flash", "math") for r in rows)  # what the CPU has
    assert _table_columns(markdown, "variant") == gpu_check.NUMERICS_COLUMNS


def test_throughput_table_has_the_cuda_shape(report):
    data, markdown, stdout = report
    rows = data["throughput"]
    assert all(tuple(r) == gpu_check.THROUGHPUT_COLUMNS for r in rows)
    combos = {(r["model"], r["variant"], r["mode"], r["dtype"]) for r in rows}
    assert combos == {
        (m, v, mode, d)
        for m in gpu_check.MODELS
        for v in gpu_check.VARIANTS
        for mode in gpu_check.MODES
        for d in gpu_check.DTYPES
    }
    for r in rows:
        if r["mode"] == "eager":
            assert r["train img/s"] > 0 and r["infer img/s"] > 0
            assert r["train peak MiB"] is None  # measured on CUDA only
            assert r["sdpa train"] == "math"  # attention dropout: no CPU flash kernel
            if r["variant"] == "explicit":
                assert r["train / explicit"] == r["infer / explicit"] == 1.0
        else:  # compile is skipped in --quick on CPU, and says so
            assert r["train img/s"] is None and "skipped" in r["note"]
    for text in (markdown, stdout):  # written and printed
        assert _table_columns(text, "model") == gpu_check.THROUGHPUT_COLUMNS


def test_study_ran_through_the_cli_and_projects_the_full_study(report):
    data, markdown, _ = report
    study = data["study"]
    assert study["status"] == "passed" and study["trials"] == study["trials_finished"] == 2
    assert study["epochs"] == 1 and study["full_epochs"] == 200
    assert study["trials_per_hour"] > 0 and study["epoch_s"] > 0
    assert study["projected_full_h"] > study["wall_s"] / 3600  # 25 trials x 200 epochs
    assert study["gpu_util_mean"] == study["gpu_util_max"] == "n/a"
    assert "-m ablate study" in study["command"] and "--trials 2" in study["command"]
    assert set(gpu_check.STUDY_KEYS) <= set(study) | {"note"}
    assert "## Study" in markdown and _table_columns(markdown, "key") == ("key", "value")
    assert "| trials_per_hour" in markdown
