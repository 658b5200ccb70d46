"""Atomic file writes: a file jettag writes is either absent, the old one, or complete."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
