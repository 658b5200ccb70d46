"""MIParT's MI attention with its dropout, in CPU training, as four fused kernels (numba).

An MI block mixes tokens with the shared probabilities P = softmax(U1) (N = B x H rows of T x S) and
its own dropout mask K (an independent Bernoulli(1 - p) keep per element and block):

    out[n, i] = 1 / (1 - p) * sum_j K[n, i, j] P[n, i, j] v[n, j]

Written with torch operations each block reads and writes several (B, H, P, P) tensors (a masked
copy, an outer-product gradient, a sum), so on a CPU the five MI blocks were memory-bound and made
MIParT slower to train than ParT. Here each kernel reads P once and writes no (B, H, P, P) tensor
but U1, and the mask is never stored: element e of a block's mask is a pure function of (seed, e),
regenerated where P is read (cheaper, measured, than writing and reading it back even as bits):

- ``square_logits``: U1 from the pair MLP's values, padded keys at -inf, in one write (its softmax
  is torch's, in place);
- ``mix``: the forward;
- ``mix_grad_values``: dL/dv;
- ``softmax_grad_pairs``: once per step, after all blocks' backward, dL/dU1 = P * (G - sum_j P G)
  with G = sum over blocks of K g v^T / (1 - p), jet by jet in a square that stays in cache, and
  from it straight the gradient of the pair MLP's values at (i, j) and (j, i).

The mask: each pair of neighbouring elements of a row takes the two 32-bit halves of one output of
SplitMix64 (Steele, Lea and Flood 2014), a generator that passes BigCrush, at the step given by the
pair's position (``keep_mask``); an element is dropped when its 32 bits are below round(p * 2^32),
i.e. with probability p, independently of every other element. Each block draws its 63-bit seed
from torch's default generator (``draw_seed``), so the generator's state, which the trainer
checkpoints, fixes every mask and resume stays exact. ``keep_mask`` gives the same mask as a NumPy
array (tests).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from jettag.jit import njit, numba_threads

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
_ONE = np.uint64(1)
_LOW = np.uint64(0xFFFFFFFF)


def draw_seed() -> int:
    """A block's mask seed: 63 random bits from torch's default CPU generator."""
    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))


def drop_threshold(p: float) -> np.uint64:
    """Elements whose 32 random bits fall below this are dropped: round(p * 2^32), so an element is
    dropped with probability p to within 2^-33."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {p}")
    return np.uint64(min(round(p * 2.0**32), 2**32 - 1))


def keep_mask(seed: int, shape: tuple[int, ...], p: float) -> np.ndarray:
    """The keep mask (bool, ``shape``) the kernels apply for ``seed`` to a tensor of that shape: the
    element in row r (all but the last axis, flattened) and column j takes the low (j even) or high
    (j odd) 32 bits of SplitMix64's output at step r * ceil(S / 2) + j // 2 + 1 from ``seed``."""
    s = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    step = (np.arange(rows, dtype=np.uint64)[:, None] * np.uint64((s + 1) // 2)
            + (np.arange(s, dtype=np.uint64) // np.uint64(2))[None, :] + _ONE)
    z = np.uint64(seed) + step * _GAMMA
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    z = z ^ (z >> _S31)
    bits = np.where(np.arange(s) % 2 == 0, z & _LOW, z >> _S32)
    return (bits >= drop_threshold(p)).reshape(shape)


@numba.njit
def _row_keep(seed, threshold, scale, row, half, keep):  # pragma: no cover - compiled
    """keep[j] = scale where element j of ``row`` is kept, else 0 (``keep_mask``), j < 2 * half."""
    base = np.uint64(row) * np.uint64(half) + _ONE
    for q in range(half):
        z = seed + (base + np.uint64(q)) * _GAMMA
        z = (z ^ (z >> _S30)) * _MIX1
        z = (z ^ (z >> _S27)) * _MIX2
        z = z ^ (z >> _S31)
        keep[2 * q] = scale if (z & _LOW) >= threshold else 0.0
        keep[2 * q + 1] = scale if (z >> _S32) >= threshold else 0.0


@numba.njit(inline="always")
def _kept_row(probs, n, i, seed, threshold, scale, half, weights):  # pragma: no cover - compiled
    """weights[j] = probs[n, i, j] / (1 - p) where kept, else 0: row i of dropout(probs[n], p)."""
    _row_keep(seed, threshold, scale, n * probs.shape[1] + i, half, weights)
    for j in range(probs.shape[2]):
        weights[j] *= probs[n, i, j]


@njit(parallel=True)
def _square_logits(values, real, starts, ii, jj, out):  # pragma: no cover - compiled
    n_batch, n_heads, t, s = out.shape
    for b in numba.prange(n_batch):
        for h in range(n_heads):  # one (P, P) plane at a time: its writes stay in cache
            for i in range(t):
                for j in range(s):
                    out[b, h, i, j] = 0.0 if real[b, j] else -np.inf
            for q in range(starts[b], starts[b + 1]):
                out[b, h, ii[q], jj[q]] = values[q, h]
                out[b, h, jj[q], ii[q]] = values[q, h]


@njit(parallel=True, fastmath={"reassoc", "contract"})
def _mix(probs, v, seed, threshold, scale, out):  # pragma: no cover - compiled
    n_rows, t, s = probs.shape
    d = v.shape[2]
    half = (s + 1) // 2
    for n in numba.prange(n_rows):
        weights = np.empty(2 * half, probs.dtype)
        for i in range(t):
            _kept_row(probs, n, i, seed, threshold, scale, half, weights)
            for c in range(d):
                acc = np.float32(0.0)  # float32 sums for float32 inputs, float64 for float64
                for j in range(s):
                    acc += weights[j] * v[n, j, c]
                out[n, i, c] = acc


@njit(parallel=True, fastmath={"reassoc", "contract"})
def _mix_grad_values(probs, g, seed, threshold, scale, grad_v):  # pragma: no cover - compiled
    n_rows, t, s = probs.shape
    d = g.shape[2]
    half = (s + 1) // 2
    for n in numba.prange(n_rows):
        weights = np.empty(2 * half, probs.dtype)
        grad_v[n] = 0.0
        for i in range(t):
            _kept_row(probs, n, i, seed, threshold, scale, half, weights)
            for c in range(d):
                gi = g[n, i, c]
                for j in range(s):
                    grad_v[n, j, c] += weights[j] * gi


@njit(parallel=True, fastmath={"reassoc", "contract"})
def _softmax_grad_pairs(probs, real, seeds, thresholds, scales, gs, vs, starts, ii, jj, squares, out
                        ):  # pragma: no cover - compiled
    n_batch, n_heads, t, s = probs.shape
    d = gs.shape[3]
    half = (s + 1) // 2
    for b in numba.prange(n_batch):
        square = squares[numba.get_thread_id()]  # dL/dU1 of this jet, in this thread's scratch
        grad = np.empty(s, probs.dtype)
        keep = np.empty(2 * half, probs.dtype)
        for h in range(n_heads):
            n = b * n_heads + h
            for i in range(t):
                if not real[b, i]:  # no real pair has a padded query
                    continue
                grad[:] = 0.0
                for k in range(seeds.shape[0]):
                    _row_keep(seeds[k], thresholds[k], scales[k], n * t + i, half, keep)
                    for c in range(d):
                        gi = gs[k, n, i, c]
                        for j in range(s):
                            grad[j] += keep[j] * gi * vs[k, n, j, c]
                row_dot = np.float32(0.0)  # float32 sums for float32 inputs, float64 for float64
                for j in range(s):
                    row_dot += probs[b, h, i, j] * grad[j]
                for j in range(s):
                    square[h, i, j] = probs[b, h, i, j] * (grad[j] - row_dot)
        for q in range(starts[b], starts[b + 1]):  # U1 is symmetric: pair (i, j) feeds (i, j) and (j, i)
            i, j = ii[q], jj[q]
            for h in range(n_heads):
                out[q, h] = square[h, i, j] if i == j else square[h, i, j] + square[h, j, i]


def _scale(p: float, like: torch.Tensor) -> np.floating:
    """1 / (1 - p) as a NumPy scalar of ``like``'s dtype (so the kernels multiply in that precision)."""
    return np.asarray(1.0 / (1.0 - p), dtype=like.numpy().dtype)[()]


def mix(probs: torch.Tensor, v: torch.Tensor, seed: int, p: float) -> torch.Tensor:
    """dropout(probs, p) @ v for probs (N, T, S) and v (N, S, D), contiguous CPU float tensors, with
    the keep mask of ``seed`` (``keep_mask``)."""
    out = probs.new_empty(probs.shape[0], probs.shape[1], v.shape[2])
    numba_threads()
    _mix(probs.detach().numpy(), v.detach().numpy(), np.uint64(seed), drop_threshold(p), _scale(p, out),
         out.numpy())
    return out


def mix_grad_values(probs: torch.Tensor, grad: torch.Tensor, seed: int, p: float) -> torch.Tensor:
    """dL/dv of ``mix`` for dL/dout ``grad`` (N, T, D): dropout(probs, p)^T @ grad."""
    grad_v = grad.new_empty(probs.shape[0], probs.shape[2], grad.shape[2])
    numba_threads()
    _mix_grad_values(probs.detach().numpy(), grad.numpy(), np.uint64(seed), drop_threshold(p),
                     _scale(p, grad_v), grad_v.numpy())
    return grad_v


Block = tuple[int, float, torch.Tensor, torch.Tensor]  # (seed, p, dL/dout (N, T, D), v (N, S, D)) of a mix


def square_logits(values: torch.Tensor, real: torch.Tensor, starts: torch.Tensor, ii: torch.Tensor,
                  jj: torch.Tensor) -> torch.Tensor:
    """U1 (B, H, P, P) ready for the softmax over keys: the real pairs' values (N, H) at (b, i, j) and
    (b, j, i) (``starts[b]``: the first pair of jet b), 0 at the other real keys, -inf at padded keys
    (``real`` (B, P) bool), written jet by jet in one pass."""
    out = values.new_empty(real.shape[0], values.shape[1], real.shape[1], real.shape[1])
    numba_threads()
    _square_logits(values.detach().numpy(), real.numpy(), starts.numpy(), ii.numpy(), jj.numpy(), out.numpy())
    return out


def softmax_grad_pairs(probs: torch.Tensor, real: torch.Tensor, blocks: list[Block], starts: torch.Tensor,
                       ii: torch.Tensor, jj: torch.Tensor) -> torch.Tensor:
    """dL/d(pair values) (N, H) of U1 = the symmetric (B, H, P, P) square of the real pairs' values
    (b, i, j), i >= j (``starts[b]``: the first pair of jet b), with probs = softmax(U1 at real keys)
    and each block's (seed, p, dL/dout, v) of ``mix``: for every jet, P * (G - rowsum(P * G)),
    G = sum_blocks K g v^T / (1 - p), in a scratch square that stays in cache, then summed at
    (i, j) and (j, i) for each pair. ``real`` (B, P) bool: the real particles."""
    seeds = np.array([np.uint64(seed) for seed, _, _, _ in blocks], dtype=np.uint64)
    thresholds = np.array([drop_threshold(p) for _, p, _, _ in blocks], dtype=np.uint64)
    scales = np.array([1.0 / (1.0 - p) for _, p, _, _ in blocks], dtype=probs.numpy().dtype)
    gs = torch.stack([g for _, _, g, _ in blocks]).numpy()
    vs = torch.stack([v for _, _, _, v in blocks]).numpy()
    out = probs.new_empty(ii.shape[0], probs.shape[1])
    squares = probs.new_empty(numba_threads(), *probs.shape[1:])  # one jet's (H, P, P) per thread
    _softmax_grad_pairs(probs.detach().numpy(), real.numpy(), seeds, thresholds, scales, gs, vs,
                        starts.numpy(), ii.numpy(), jj.numpy(), squares.numpy(), out.numpy())
    return out
