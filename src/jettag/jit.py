"""What jettag's numba kernels share: the on-disk cache of their machine code, and torch's thread
count."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numba
import torch

_UNCACHED_WARNED = False


def njit(**options: Any) -> Callable[[Callable], Callable]:
    """``numba.njit(cache=True, **options)``, or without the cache where numba has nowhere to write
    it (neither ``__pycache__`` beside jettag's sources nor the user's cache directory is writable,
    e.g. a read-only install run without a home directory): the kernels are then compiled again in
    every process, after one warning, instead of jettag failing at import."""

    def decorate(fn: Callable) -> Callable:
        global _UNCACHED_WARNED
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError as err:
            if "no locator available" not in str(err):
                raise
        if not _UNCACHED_WARNED:
            _UNCACHED_WARNED = True
            warnings.warn("numba finds no writable cache directory, so jettag's kernels are compiled in "
                          "every process; set NUMBA_CACHE_DIR to a writable directory to keep them",
                          RuntimeWarning, stacklevel=2)
        return numba.njit(**options)(fn)

    return decorate


def numba_threads() -> int:
    """Set numba's thread count to torch's intra-op count (at most numba's pool) and return it, so a
    numba kernel run between torch operations uses the same cores and no more."""
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n
