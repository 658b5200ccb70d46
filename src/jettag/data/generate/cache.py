"""``cached_dataset``: generate a sample once per machine and reuse it (demo, tests, benchmarks).

The cache key holds everything that changes the jets: recipe, size, seed, detector, the Pythia MPI
switch and jettag's ``GENERATOR_VERSION``; the number of workers does not change the jets and is not
part of the key. A half-finished entry (an interrupted generation) is simply resumed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jettag.data.generate.runner import DEFAULT_CHUNK_SIZE, GENERATOR_VERSION, generate, require_generate
from jettag.files import cache_root


def cache_entry(
    recipe: str,
    n_jets: int,
    seed: int = 0,
    detector: str = "none",
    cache_dir: str | os.PathLike | None = None,
    mpi: bool | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Path:
    """The cache directory of a sample (whether or not it exists yet)."""
    mpi_tag = "" if mpi is None else f"-mpi{int(mpi)}"
    chunk_tag = "" if chunk_size == DEFAULT_CHUNK_SIZE else f"-c{chunk_size}"
    key = f"{recipe}-n{n_jets}-s{seed}-{detector}{mpi_tag}{chunk_tag}-g{GENERATOR_VERSION}"
    return cache_root(cache_dir) / "generated" / key


def is_complete(entry: Path) -> bool:
    """Whether a generated sample is finished: its manifest exists and lists no missing chunk."""
    manifest = entry / "manifest.json"
    return manifest.exists() and bool(json.loads(manifest.read_text()).get("complete"))


def require_generate_unless_cached(
    recipe: str,
    n_jets: int,
    seed: int = 0,
    detector: str = "none",
    cache_dir: str | os.PathLike | None = None,
    mpi: bool | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> None:
    """Raise ``MissingExtraError`` now if this sample must still be generated and the extra is missing.

    For callers that would do other work (make a run directory, print a plan) before
    ``cached_dataset``; a complete cached sample needs no Pythia or FastJet.
    """
    if not is_complete(cache_entry(recipe, n_jets, seed, detector, cache_dir, mpi, chunk_size)):
        require_generate()


def require_generation(data: Mapping[str, Any]) -> None:
    """Raise ``MissingExtraError`` now if a ``generate:`` dataset of a run's ``data`` section (its
    ``path``, ``val`` or ``test``) must still be generated and the extra is missing: for callers
    (``jettag train``, a study) that would make run directories or train before reaching it."""
    from jettag.data.dataset import GENERATE_PREFIX, parse_generate

    for key in ("path", "val", "test"):
        spec = str(data.get(key) or "")
        if spec.startswith(GENERATE_PREFIX):
            recipe, n_jets, seed = parse_generate(spec)
            require_generate_unless_cached(recipe, n_jets, seed, data.get("detector", "none"))


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
    """The directory of a generated sample, generating (or finishing) it first if needed.

    A failed generation leaves no manifest (and, on a first attempt that finished no chunk, no
    directory), so a later call never takes a failed entry for a finished one.
    """
    path = cache_entry(recipe, n_jets, seed, detector, cache_dir, mpi, chunk_size)
    if is_complete(path):
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
