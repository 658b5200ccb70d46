"""Command layer: bad arguments are refused in one stderr line naming the option or file, before work.

``jettag.cli.main`` runs in process (no subprocess), so these also count for the raise coverage.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from jetfactory import random_jets

from jettag.cli import main
from jettag.data.store import write_store


def refused(argv: list[str], pattern: str) -> None:
    """``jettag argv`` exits with 2 and one stderr line matching ``pattern``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    lines = err.getvalue().splitlines()
    assert code == 2 and len(lines) == 1 and re.search(pattern, lines[0]), (code, err.getvalue())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "jets.parquet"
    return write_store(path, random_jets(6, seed=1, max_len=4), ["QCD", "top"], "random")


def test_convert_options_named(store: Path, tmp_path: Path) -> None:
    refused(["convert", str(store), "--out", str(tmp_path), "--chunk-size", "0"],
            r"--chunk-size must be positive, got 0$")
    refused(["convert", str(store), "--out", str(tmp_path), "--max-jets", "-3"],
            r"--max-jets must be positive, got -3$")
    refused(["convert", str(store), "--out", str(store.parent)],
            rf"{re.escape(str(store))}: output .* would overwrite the input; choose another --out$")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        write_store(tmp_path / d / "jets.parquet", random_jets(3, seed=2, max_len=4), ["QCD", "top"], "x")
    refused(["convert", str(tmp_path / "a" / "jets.parquet"), str(tmp_path / "b" / "jets.parquet"),
             "--out", str(tmp_path / "out")],
            r"b/jets\.parquet and .*a/jets\.parquet would both be written to ")


def test_train_export_generate_options_named(tmp_path: Path) -> None:
    refused(["train"], r"give a RECIPE \(or --resume RUN_DIR\)$")
    refused(["export", str(tmp_path)], r"give --onnx PATH and/or --weaver PATH$")
    refused(["generate", "top", "--jets", "0", "--out", str(tmp_path)],
            r"--jets, --workers and --num-shards must be positive$")


@pytest.mark.parametrize(("argv", "pattern"), [
    (["study"], r"^jettag study: give a study NAME"),
    (["study", "top", "--seeds", "0"], r"^jettag study: --seeds must be >= 1, got 0$"),
    (["study", "top", "--data", "jets.parquet"], r"^jettag study: --data 'jets\.parquet' is not NAME=PATH$"),
])
def test_study_arguments_named(argv: list[str], pattern: str) -> None:
    with pytest.raises(SystemExit, match=pattern):
        main(argv)
