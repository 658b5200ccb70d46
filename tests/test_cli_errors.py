"""How errors, interruptions, closed pipes, missing extras and progress reach a ``jettag`` user."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from jetfactory import random_jets
from test_formats import write_toplandscape

from jettag import errors
from jettag.cli import main
from jettag.data import store
from jettag.data.generate import cache, runner

SRC = Path(__file__).resolve().parents[1] / "src"


def cli(*args: str) -> subprocess.Popen:
    """``python -m jettag.cli ARGS`` in a child process running this checkout's code, its output
    buffered as in a user's shell (whatever PYTHONUNBUFFERED the test runner has)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "jettag.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli_errors")
    write_toplandscape(d / "nan.h5", random_jets(80, seed=7, max_len=20), nan_at=(5, 2))  # 3 splits
    store.write_store(d / "tiny.parquet", random_jets(400, seed=8, max_len=16), ["QCD", "top"], "random")
    return {"nan": d / "nan.h5", "tiny": d / "tiny.parquet"}


def _jets_with_nan() -> ak.Array:
    jets = random_jets(3, seed=1, max_len=4)
    px = ak.to_numpy(ak.flatten(jets["part_px"])).copy()
    px[0] = np.nan
    return ak.with_field(jets, ak.unflatten(px, ak.num(jets["part_px"])), "part_px")


def test_data_error_is_one_line_exit_2_and_debug_shows_traceback(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(files["nan"])]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jettag inspect: "), err
    # names the file, field and row, and advises the flag inspect has
    assert "nan.h5" in err and "'part_px'" in err and "row 5" in err and "pass --drop-invalid" in err
    assert out == ""

    # --debug (before or after the command) lets the exception through: Python prints its traceback
    for argv in (["--debug", "inspect", str(files["nan"])], ["inspect", str(files["nan"]), "--debug"]):
        with pytest.raises(store.JetDataError, match="row 5"):
            main(argv)


def test_train_advises_its_own_drop_invalid_spelling(files: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--run-dir", str(tmp_path / "run"), "top_pfn", f"data.path={files['nan']}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jettag train: ") and err.count("\n") == 1, err
    assert "pass data.drop_invalid=true" in err and "--drop-invalid" not in err
    assert main([*argv, "data.drop_invalid=true", "max_steps=1", "progress=false"]) == 0  # the advice works


def test_every_project_error_is_a_jettag_error() -> None:
    from jettag.data.formats.common import UnknownFormatError
    from jettag.data.generate.pythia import GenerationError
    from jettag.models.weaver import WeaverCheckpointError
    from jettag.train.checkpoint import CheckpointError
    from jettag.train.config import ConfigError

    for cls in (store.JetDataError, UnknownFormatError, ConfigError, CheckpointError, WeaverCheckpointError,
                errors.MissingExtraError, errors.UsageError):
        assert issubclass(cls, errors.JettagError) and cls.exit_code == 2, cls
    assert issubclass(GenerationError, errors.JettagError) and GenerationError.exit_code == 1
    # the library's advice text is what the CLI rewrites per command
    with pytest.raises(store.JetDataError, match=re.escape(errors.DROP_INVALID_ADVICE)):
        store.validate_jets(_jets_with_nan(), "x")


def test_closed_pipe_ends_quietly(files: dict[str, Path]) -> None:
    # `jettag inspect F F ... --json | head -1`: about 90 kB, more than a pipe holds, so the command is
    # still writing when the reader goes away
    proc = cli("inspect", *[str(files["tiny"])] * 40, "--json")
    assert proc.stdout is not None
    # one byte straight from the pipe (a buffered readline could drain enough of the pipe to let
    # the rest fit and the command end normally): the rest, over 64 kB, cannot all be written
    assert os.read(proc.stdout.fileno(), 1) == b"["
    proc.stdout.close()
    err = proc.stderr.read() if proc.stderr else ""
    proc.wait(timeout=120)
    assert proc.returncode == 1 and err == "", err

    # the reader is gone before anything is written (the output, a few lines, waits in the buffer
    # until the command ends): the closed pipe shows only when that buffer is flushed
    proc = cli("models", "--no-flops")
    assert proc.stdout is not None
    proc.stdout.close()
    err = proc.stderr.read() if proc.stderr else ""
    proc.wait(timeout=120)
    assert proc.returncode == 1 and err == "", err


def test_keyboard_interrupt_one_line_exit_130(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from jettag.commands import models

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "run", interrupted)
    assert main(["models"]) == 130
    assert capsys.readouterr().err == "jettag models: interrupted\n"


def test_missing_generate_extra_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "fastjet", None)  # `import fastjet` raises ImportError
    monkeypatch.setenv("JETTAG_CACHE", str(tmp_path / "cache"))
    want = ("generation needs the 'generate' extra (pythia8mc, fastjet; missing: fastjet): "
            "pip install 'jettag[generate]'\n")

    # one worker: without the check the chunk would be made in this process and fail on fastjet
    argv = ["demo", "--quick", "--workers", "1", "--models", "pfn", "--out", str(tmp_path / "demo")]
    assert main(argv) == 2
    assert capsys.readouterr().err == "jettag demo: " + want
    assert not (tmp_path / "cache").exists() and not (tmp_path / "demo").exists()

    assert main(["generate", "top", "--jets", "10", "--out", str(tmp_path / "gen")]) == 2
    assert capsys.readouterr().err == "jettag generate: " + want
    assert not (tmp_path / "gen").exists()

    argv = ["train", "top_pfn", "data.path=generate:top:100", "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    assert capsys.readouterr().err == "jettag train: " + want
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()

    # a study whose first run reads a file and whose later runs' data would be generated in the
    # background while that run trains: the missing extra is found before any training
    first = tmp_path / "given.parquet"
    first.write_bytes(b"not read before the check")
    argv = ["study", "scaling", "--quick", "--data", f"jetclass_1={first}", "--out", str(tmp_path / "sc")]
    assert main(argv) == 2
    assert capsys.readouterr().err == "jettag study: " + want
    assert not (tmp_path / "sc").exists() and not (tmp_path / "cache").exists()


def test_train_from_cached_sample_needs_no_generate_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          files: dict[str, Path]) -> None:
    """A complete cached sample is used without Pythia or FastJet (e.g. on a GPU node of a cluster)."""
    monkeypatch.setitem(sys.modules, "fastjet", None)
    entry = cache.cache_entry("top", 100, cache_dir=tmp_path)
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_text('{"complete": true}')
    cache.require_generate_unless_cached("top", 100, cache_dir=tmp_path)  # cached: no error
    with pytest.raises(errors.MissingExtraError, match="jettag\\[generate\\]"):
        cache.require_generate_unless_cached("top", 200, cache_dir=tmp_path)


def test_missing_onnx_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err == ("jettag export: ONNX export needs the 'onnx' extra (onnx, onnxruntime; "
                   "missing: onnxruntime): pip install 'jettag[onnx]'\n")
    assert not (tmp_path / "m.onnx").exists()


def test_failed_worker_leaves_no_cache_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk that fails in a spawned worker: no manifest, no run.json, no directory on a first attempt."""
    fake = tmp_path / "fake_modules"
    fake.mkdir()
    (fake / "fastjet.py").write_text("raise ImportError('simulated broken fastjet')\n")
    monkeypatch.syspath_prepend(str(fake))  # spawned workers start with the parent's sys.path
    monkeypatch.delitem(sys.modules, "fastjet", raising=False)  # and so does this process's next import
    monkeypatch.setattr(runner, "require_generate", lambda: None)  # let the run reach its workers
    out = tmp_path / "cache" / "generated" / "entry"
    with pytest.raises(ImportError, match="simulated broken fastjet"):
        runner.generate("top", 4, out, workers=2, chunk_size=1, progress=False)
    assert not out.exists()
    # a later run with other arguments into the same place is not blocked by a stale run.json
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("not ours")
    with pytest.raises(ImportError, match="simulated broken fastjet"):
        runner.generate("top", 6, out, workers=1, chunk_size=3, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "run.json"]  # directory not ours: kept
    assert not cache.is_complete(out)


def test_progress_in_a_log_stays_small(files: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Training with stderr redirected: one line per epoch (no batch updates are < 10 s apart here)."""
    argv = ["train", "top_pfn", f"data.path={files['tiny']}", "epochs=2", "batch_size=4", "data.max_len=16",
            "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    lines = [x for x in re.split(r"[\r\n]", err) if x.strip()]
    assert len(lines) == 2, err
    assert lines[0].startswith("epoch 1/2: 80/80 batch") and lines[1].startswith("epoch 2/2: 80/80 batch")
    assert "loss=" in lines[1] and len(err) < 400


def test_log_progress_at_most_one_line_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from jettag import progress as P

    clock = [100.0]
    monkeypatch.setattr(P.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    with P.progress(total=50, desc="generate top", unit="jet", stream=stream) as bar:
        for _ in range(50):
            clock[0] += 0.5  # 25 s in all: lines at 10 s and 20 s, then the final one
            bar.update(1)
    lines = stream.getvalue().splitlines()
    assert lines == ["generate top: 20/50 jet (40%) in 10.0 s (2 jet/s)",
                     "generate top: 40/50 jet (80%) in 20.0 s (2 jet/s)",
                     "generate top: 50/50 jet in 25.0 s (2 jet/s)"]

    stream = io.StringIO()
    with pytest.raises(RuntimeError), P.progress(total=5, desc="x", stream=stream) as bar:
        raise RuntimeError("the error is the last word")
    assert stream.getvalue() == ""
    assert list(P.progress(range(3), desc="x", enabled=False, stream=stream)) == [0, 1, 2]
    assert stream.getvalue() == ""


def test_progress_is_a_bar_on_a_terminal() -> None:
    import io

    from tqdm import tqdm

    from jettag import progress as P

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = P.progress(total=3, desc="epoch 1/1", stream=Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(P.progress(total=3, desc="x", stream=io.StringIO()), P.LogProgress)
