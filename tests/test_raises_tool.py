"""tools/raise_coverage.py: counts each raise statement once, by the line coverage records for it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from coverage import CoverageData

TOOL = Path(__file__).resolve().parent.parent / "tools" / "raise_coverage.py"

SOURCE = '''\
def f(x):
    if x:
        raise ValueError(
            "multi-line"
        )
    try:
        g()
    except KeyError:
        raise
    raise RuntimeError("never")
'''


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("raise_coverage", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_counts_raises_by_their_first_line(tool, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text(SOURCE)
    assert [(r.line, r.text) for r in tool.find_raises(pkg)] == [
        (3, "raise ValueError("), (9, "raise"), (10, 'raise RuntimeError("never")')]
    data = CoverageData(basename=str(tmp_path / ".coverage"))
    data.add_lines({str(pkg / "mod.py"): [1, 2, 3, 6, 7, 8, 9]})  # line 10 never ran
    data.write()
    code = tool.main(["--data-file", str(tmp_path / ".coverage"), "--package", str(pkg), "--min", "60"])
    out = capsys.readouterr().out
    assert code == 0
    assert "TOTAL" in out and "2      3  (66.7%)" in out
    assert out.rstrip().endswith(f'{pkg / "mod.py"}:10: raise RuntimeError("never")')
    assert tool.main(["--data-file", str(tmp_path / ".coverage"), "--package", str(pkg), "--min", "70"]) == 1


def test_refuses_data_that_measured_another_package(tool, tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text(SOURCE)
    data = CoverageData(basename=str(tmp_path / ".coverage"))
    data.add_lines({str(tmp_path / "other.py"): [1]})
    data.write()
    with pytest.raises(SystemExit, match=r"no file under .*pkg was measured"):
        tool.main(["--data-file", str(tmp_path / ".coverage"), "--package", str(pkg)])
    with pytest.raises(SystemExit, match=r"nothing\.cov: no coverage data file"):
        tool.main(["--data-file", str(tmp_path / "nothing.cov"), "--package", str(pkg)])
