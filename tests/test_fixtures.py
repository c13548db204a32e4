"""The suite's own fixtures: the reference facts in tests/fixtures/reference/ and the CI rule
that a test skipped for a missing reference / fixture file fails."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ablate.models import list_models

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")


def test_reference_facts_come_from_the_official_commit(cct_keys, cct_model_table, cct_checkpoints):
    assert cct_checkpoints["commit"].startswith("cd11f09")
    pretrained = cct_checkpoints["src/cct.py model_urls"]
    assert pretrained and all(url.endswith(".pth") for url in pretrained.values())
    # Every model with a published checkpoint is in the official table and registered here.
    assert set(pretrained) <= set(cct_model_table)
    assert set(pretrained) <= set(list_models(include_aliases=True))
    # The key lists add up to the table's parameter counts.
    rows = {name.split("(")[0]: row for name, row in cct_model_table.items()}
    assert set(cct_keys) == {"cct_7_3x1_32", "cct_2_3x2_32", "cvt_7_4_32", "vit_7_4_32",
                             "text_cct_2"}
    for name, keys in cct_keys.items():
        assert sum(math.prod(shape) for _, shape in keys) == rows[name]["n_params"], name


SKIPS = '''
import pytest


def test_missing_reference_path():
    pytest.skip("tests/fixtures/reference/cct_keys.json is missing")


def test_reference_not_available():
    pytest.skip("the official reference key list is not available")


def test_no_postgres():
    pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) found; install a server")


@pytest.mark.skipif(True, reason="needs CUDA")
def test_gpu():
    pass


@pytest.mark.xfail(reason="a reference file is missing")
def test_expected_failure():
    assert False
'''
MODULE_SKIP = '''
import pytest

pytest.skip("../shared/reference does not exist", allow_module_level=True)


def test_never_collected():
    pass
'''


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A scratch test suite run with a copy of this conftest (and no fixture files)."""
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makepyfile(test_skips=SKIPS, test_module_skip=MODULE_SKIP)
    return pytester


@pytest.mark.parametrize("ci", ["true", "1"])
def test_ci_fails_skips_for_missing_files_and_keeps_optional_ones(suite, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    # A module skipped at import is a collection error, which would end the session early.
    result = suite.runpytest("-p", "no:cacheprovider", "-rfE", "--continue-on-collection-errors")
    result.assert_outcomes(failed=2, errors=1, skipped=2, xfailed=1)
    result.stdout.fnmatch_lines([
        "FAILED test_skips.py::test_missing_reference_path - CI does not allow skipping*",
        "FAILED test_skips.py::test_reference_not_available - CI does not allow skipping*",
        "ERROR test_module_skip.py*",
    ])


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_outside_ci_the_skips_stay_skips(suite, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(skipped=5, xfailed=1)


def test_a_missing_reference_file_fails_rather_than_skips(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makepyfile(test_keys="def test_keys(cct_keys):\n    assert cct_keys\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*missing reference file*cct_keys.json*"])
