"""A real install: build the wheel, install it into a fresh environment, run ``jettag`` from elsewhere.

Guards what an editable install hides: the recipes must travel inside the wheel (package data) and
be found from any directory. No network: the wheel is built from a copy of the sources without
build isolation, and the new environment sees the dependencies already installed for this test
run through a ``.pth`` file, never the source tree.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from jetfactory import random_jets

from jettag.data.store import write_store

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_wheel_installs_and_trains_from_a_recipe_name(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JETTAG_CONFIGS", "PYTHONHOME")}
    # a copy of what the sdist holds, so that the build leaves nothing in the checkout
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(wheels), str(source)], tmp_path, env)
    (wheel,) = wheels.glob("jettag-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        tmp_path, env).stdout.strip())
    # the dependencies of this test run (torch, awkward, ...), appended after the venv's own packages
    deps = [p for p in [*site.getsitepackages(), sysconfig.get_path("purelib")] if Path(p).is_dir()]
    (purelib / "_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index"]
    # `pip install 'jettag[generate,onnx]'`: every dependency and extra resolves (to what is installed)
    _run([*pip, "--dry-run", f"{wheel}[generate,onnx]"], tmp_path, env)
    _run([*pip, "--no-deps", "-q", str(wheel)], tmp_path, env)

    work = tmp_path / "elsewhere"  # neither the checkout nor the venv
    work.mkdir()
    where = _run([str(python), "-c", "import jettag; print(jettag.__file__)"], work, env).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    assert (Path(where).parent / "models" / "attention16.cpp").is_file()  # built at first use

    jettag = str(venv / "bin" / "jettag")
    models = _run([jettag, "models", "--no-flops"], work, env).stdout
    assert "mipart" in models and "pfn" in models

    data = tmp_path / "tiny.parquet"
    write_store(data, random_jets(64, seed=3, max_len=12), ["QCD", "top"], "random")
    run_dir = work / "run"
    _run([jettag, "train", "top_pfn", f"data.path={data}", "train.max_steps=2", "data.max_len=12",
          "batch_size=16", "progress=false", "--run-dir", str(run_dir)], work, env)
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.safetensors").is_file()


# Run in a process where numba finds no writable cache location: every jettag module with kernels is
# imported, and one kernel (the real pairs' features) runs.
_UNCACHED_SCRIPT = """
import torch
import jettag.models  # every model module, so every kernel is decorated
from jettag.data.kinds.particles import example_inputs
from jettag.physics.pairs import real_pair_features
_, _, vectors, mask = example_inputs(7, batch_size=3, length=12, seed=4)
feats = real_pair_features(vectors, mask)[0]
print(repr(feats.double().sum().item()), feats.shape[0])
"""


def test_kernels_compile_where_numba_cannot_cache(tmp_path: Path) -> None:
    """A read-only install run without a home directory: numba then has no cache location and
    ``numba.njit(cache=True)`` raises at import. jettag compiles its kernels uncached instead, with
    one warning, and they give what the cached ones give (the same compiled code)."""
    from jettag.data.kinds.particles import example_inputs
    from jettag.physics.pairs import real_pair_features

    # numba's locator list cut to the IPython one, which finds nothing for a file on disk
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "numba.core.caching.IPythonCacheLocator",
           "PYTHONWARNINGS": "default"}
    proc = _run([sys.executable, "-c", _UNCACHED_SCRIPT], tmp_path, env)
    _, _, vectors, mask = example_inputs(7, batch_size=3, length=12, seed=4)
    feats = real_pair_features(vectors, mask)[0]
    assert proc.stdout.split() == [repr(feats.double().sum().item()), str(feats.shape[0])]
    assert proc.stderr.count("no writable cache directory") == 1, proc.stderr
