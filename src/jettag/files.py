"""Where jettag keeps files and how it writes them: the cache folder (``cache_root``), and atomic
writes (a file jettag writes is either absent, the old one, or complete)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$JETTAG_CACHE``, else ``~/.cache/jettag``: generated samples, Lund trees
    and built C++ kernels are kept below it."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("JETTAG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "jettag"


@contextmanager
def atomic_path(path: str | os.PathLike, tmp: str | os.PathLike | None = None) -> Iterator[Path]:
    """A temporary file beside ``path`` (``tmp``, default ``<path>.tmp``) for the block to write;
    it replaces ``path`` in one rename when the block ends, and is removed if the block fails, so
    a crash never leaves a half-written ``path``."""
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str, tmp: str | os.PathLike | None = None) -> None:
    """Write ``text`` to ``path`` atomically (``atomic_path``)."""
    with atomic_path(path, tmp) as t:
        t.write_text(text)
