"""The one thread count torch's operations and jettag's numba kernels share."""

from __future__ import annotations

import numba
import torch


def numba_threads() -> int:
    """Set numba's thread count to torch's intra-op count (at most numba's pool) and return it, so a
    numba kernel run between torch operations uses the same cores and no more."""
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n
