"""Multi-head attention at head width 16 for CPU inference: the C++ kernel ``attention16.cpp``.

At head width 16 (ParT, MIParT's particle blocks: 128 channels in 8 heads) SDPA's CPU kernel spends
most of its time on per-block bookkeeping rather than arithmetic; the kernel keeps one head's 16
floats in one vector register and runs on torch's threads. It computes the same function,
softmax(q k^T / sqrt(16) + bias) v, with its own exponential (relative error ~1e-7) and summation
order, so outputs agree with SDPA to float32 rounding, not bit for bit. ``Attention`` calls it only
in fp32 eager inference on CPU; training, autograd, bf16, CUDA, ONNX export and ``torch.compile``
keep SDPA.
"""

from __future__ import annotations

import ctypes
import functools
import math
from pathlib import Path

import torch

from jettag.jit import cpp_library

HEAD_DIM = 16


@functools.cache
def _kernel() -> ctypes._CFuncPtr | None:
    lib = cpp_library(Path(__file__).with_name("attention16.cpp"))
    if lib is None:
        return None
    fn = lib.jettag_attention16
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 4 + [ctypes.c_float]
    lib.jettag_attention16_max_keys.restype = ctypes.c_int64
    fn.max_keys = lib.jettag_attention16_max_keys()
    return fn


def usable(q: torch.Tensor, keys: int, bias: torch.Tensor | None) -> bool:
    """True where ``attend`` can take this call: CPU float32 without autograd, a float32 bias, at most
    the kernel's key count, and the kernel built (``jettag.jit.cpp_library``)."""
    if (q.device.type != "cpu" or q.dtype != torch.float32 or torch.is_grad_enabled() or bias is None
            or bias.dtype != torch.float32 or bias.stride(-1) != 1):
        return False
    fn = _kernel()
    return fn is not None and keys <= fn.max_keys


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(16) + bias) v for ``heads`` heads of width 16, heads side by side.

    q (B, T, 16 heads), k and v (B, S, 16 heads), each with a contiguous last axis (views into a packed
    projection are fine); bias (B or 1, heads or 1, T, >= S) float32, -inf at keys to ignore (its
    columns past S are not read). Returns (B, T, 16 heads), contiguous. Check ``usable`` first."""
    b, t, d = q.shape
    s = k.shape[1]
    if (d != heads * HEAD_DIM or k.shape[-1] != d or v.shape[-1] != d or bias.dim() != 4
            or bias.shape[0] not in (1, b) or bias.shape[1] not in (1, heads) or bias.shape[2] != t
            or bias.shape[3] < s):
        raise ValueError(f"attend: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, "
                         f"bias {tuple(bias.shape)} for {heads} heads of width {HEAD_DIM}")
    kernel = _kernel()
    if s > kernel.max_keys:
        raise ValueError(f"attend: {s} keys, the kernel takes at most {kernel.max_keys}")
    if any(x.stride(-1) != 1 for x in (q, k, v, bias)):
        raise ValueError("attend: the last axis of q, k, v and bias must be contiguous")
    out = q.new_empty(b, t, d)
    bias_b, bias_h, bias_i = (bias.stride(a) if bias.shape[a] > 1 else 0 for a in range(3))
    strides = (ctypes.c_int64 * 11)(q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0),
                                    v.stride(1), bias_b, bias_h, bias_i, out.stride(0), out.stride(1))
    kernel(q.data_ptr(), k.data_ptr(), v.data_ptr(), bias.data_ptr(), out.data_ptr(),
           ctypes.addressof(strides), b, heads, t, s, 1.0 / math.sqrt(HEAD_DIM))
    return out
