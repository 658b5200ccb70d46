"""Keep freed memory in the process, so that large tensors reuse pages instead of faulting in new ones.

glibc's ``malloc`` serves every request above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and gives it back with ``munmap`` when the tensor is freed. A training step on CPU allocates
many such tensors (a (64, 64, 112, 112) float32 MIParT pair tensor is 205 MiB), so every step pays
the kernel to map and zero each page again: on a 2-core VM that was a quarter of ParT's and MIParT's
training step. With ``mmap`` off for allocations and the heap never trimmed, a freed tensor's pages
stay in the process and the next step's tensors reuse them (the remedy Intel's PyTorch CPU guide
gets from preloading jemalloc or tcmalloc). The peak resident memory stays what it was; the process
keeps it until it exits.

The ``jettag`` command applies this at start (:func:`jettag.cli.main`). A Python program can call
:func:`keep_freed_memory` itself. ``JETTAG_MALLOC=system`` leaves the allocator as it is.
"""

from __future__ import annotations

import ctypes
import os
import platform

ENV = "JETTAG_MALLOC"
M_TRIM_THRESHOLD = -1  # <malloc.h>: top-of-heap bytes kept before free() returns them; -1: never trim
M_MMAP_MAX = -4  # <malloc.h>: most chunks served by mmap at once; 0: none, all from the heap


def keep_freed_memory() -> bool:
    """Set glibc's malloc to serve every allocation from its heap and never trim it.

    Returns whether the setting took effect: False on other C libraries (macOS, musl), when
    ``JETTAG_MALLOC=system`` or when glibc refuses it.
    """
    if os.environ.get(ENV, "").strip().lower() == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) & bool(libc.mallopt(M_TRIM_THRESHOLD, -1))
