"""The conftest hook: under ``CI`` a skip for a missing generator, weaver-core or the reference
weights fails; without ``CI`` it stays a skip; unrelated skips are never touched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ci_required import in_ci

TESTS = """
import sys
import pytest

def test_generator(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastjet", None)  # importing fastjet now fails as if absent
    pytest.importorskip("fastjet")

def test_weaver(monkeypatch):
    monkeypatch.setitem(sys.modules, "weaver", None)
    pytest.importorskip("weaver")

def test_reference_file():
    pytest.skip("/nowhere/shared/reference/weights/ParticleNet_full.pt not present")

def test_unrelated():
    pytest.skip("needs a GPU")
"""
MODULE_SKIP = """
import pytest
pytest.importorskip("pythia8mc")

def test_never_collected():
    pass
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None) -> pytest.RunResult:
    pytester.makeconftest(Path(__file__).with_name("ci_required.py").read_text())
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest_inprocess("-rA", "-p", "no:cacheprovider")


@pytest.mark.parametrize("ci", [None, "true"])
def test_required_skips_fail_only_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    pytester.makepyfile(test_skips=TESTS)
    result = _run(pytester, monkeypatch, ci)
    if ci == "true":
        result.assert_outcomes(failed=3, skipped=1)
        result.stdout.fnmatch_lines([
            "FAILED test_skips.py::test_generator - CI is set but this test would be skipped for lack of "
            "the event generator*could not import 'fastjet'*",
            "FAILED test_skips.py::test_weaver - CI is set but*weaver-core*",
            "FAILED test_skips.py::test_reference_file - CI is set but*reference weights*",
        ], consecutive=False)
        result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_skips.py:*: needs a GPU"])
    else:
        result.assert_outcomes(skipped=4)


def test_module_level_generator_skip_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pythia8mc", None)
    pytester.makepyfile(test_gen=MODULE_SKIP)
    result = _run(pytester, monkeypatch, "1")
    result.stdout.fnmatch_lines(["*CI is set but this test would be skipped for lack of the event gen*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error stops the session
    _run(pytester, monkeypatch, None).assert_outcomes(skipped=1)


@pytest.mark.parametrize(("value", "expected"), [("", False), ("0", False), ("false", False), ("No", False),
                                                 ("true", True), ("1", True), ("yes", True)])
def test_ci_variable_values(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is expected
