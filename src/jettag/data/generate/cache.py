"""``cached_dataset``: generate a sample once per machine and reuse it (demo, tests, benchmarks).

The cache key holds everything that changes the jets: recipe, size, seed, detector, the Pythia MPI
switch and jettag's ``GENERATOR_VERSION``; the number of workers does not change the jets and is not
part of the key. A half-finished entry (an interrupted generation) is simply resumed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jettag.data.generate.runner import DEFAULT_CHUNK_SIZE, GENERATOR_VERSION, generate


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$JETTAG_CACHE``, else ``~/.cache/jettag``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("JETTAG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "jettag"


def cached_dataset(
    recipe: str,
    n_jets: int,
    seed: int = 0,
    detector: str = "none",
    workers: int = 1,
    cache_dir: str | os.PathLike | None = None,
    mpi: bool | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
) -> Path:
    """The directory of a generated sample, generating (or finishing) it first if needed."""
    mpi_tag = "" if mpi is None else f"-mpi{int(mpi)}"
    chunk_tag = "" if chunk_size == DEFAULT_CHUNK_SIZE else f"-c{chunk_size}"
    key = f"{recipe}-n{n_jets}-s{seed}-{detector}{mpi_tag}{chunk_tag}-g{GENERATOR_VERSION}"
    path = cache_root(cache_dir) / "generated" / key
    manifest = path / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("complete"):
        return path
    generate(
        recipe,
        n_jets,
        path,
        workers=workers,
        seed=seed,
        detector=detector,
        chunk_size=chunk_size,
        mpi=mpi,
        progress=progress,
    )
    return path
