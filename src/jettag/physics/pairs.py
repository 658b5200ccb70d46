"""Pairwise interaction features U of ParT and MIParT, computed in torch on the batch's device.

For particles a, b (features.md):

- Delta = sqrt((y_a - y_b)^2 + dphi_ab^2) with rapidity y,
- kT = min(pT_a, pT_b) * Delta,  z = min(pT_a, pT_b) / (pT_a + pT_b),
- m^2 = (E_a + E_b)^2 - |p_a + p_b|^2,

returned as channels (ln kT, ln z, ln Delta, ln m^2), each argument clamped to at least ``eps``
before the log, exactly as weaver-core's ``pairwise_lv_fts`` so that weaver-trained weights work.

U is symmetric, so it is computed only on the lower triangle (i >= j): per-particle quantities
(pT, y, phi) are computed once per particle and gathered per pair, which halves the pair work.
Models that embed pairs pointwise can stay on the triangle until after the embedding and scatter
only the few output channels (``pair_features_tril`` + ``scatter_tril``), or take the real pairs
alone (``real_pair_features``: on CPU one numba pass that writes the same formulas scalar by scalar).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from jettag.jit import njit, numba_threads

PAIR_FEATURE_NAMES = ("ln_kt", "ln_z", "ln_delta", "ln_m2")

_TRIL_CACHE: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def tril_indices(n: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices (i >= j) of the lower triangle with diagonal, cached per size/device."""
    device = torch.device(device)
    key = (n, device)
    if key not in _TRIL_CACHE:
        idx = torch.tril_indices(n, n, device=device)
        _TRIL_CACHE[key] = (idx[0], idx[1])
    return _TRIL_CACHE[key]


def _pt_rap_phi(vectors: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-particle pT, rapidity and phi from (B, 4, P) vectors, as weaver computes them."""
    px, py, pz, energy = vectors.unbind(dim=1)
    pt = torch.sqrt(px * px + py * py)  # unclamped like weaver: a clamp shifts ln kT, ln z of soft particles
    # 0.5 ln((E + pz) / (E - pz)) written as weaver writes it, so the float32 rounding matches.
    rap = 0.5 * torch.log(1 + (2 * pz) / (energy - pz).clamp(min=1e-20))
    phi = torch.atan2(py, px)
    return pt, rap, phi


def _ln_pair_features(pti, ptj, rapi, rapj, phii, phij, psum, eps: float, dim: int) -> torch.Tensor:
    """(ln kT, ln z, ln Delta, ln m^2) of pairs given each side's pT, y, phi and the summed 4-vector
    ``psum`` (4 along dim 1), for the triangle and dense forms; ``_real_pairs`` writes the same
    formulas for one pair at a time (a test keeps the two equal)."""
    dphi = torch.remainder(phii - phij + math.pi, 2 * math.pi) - math.pi
    delta = torch.sqrt((rapi - rapj) ** 2 + dphi**2)
    ptmin = torch.minimum(pti, ptj)
    ln_delta = torch.log(delta.clamp(min=eps))
    ln_kt = torch.log((ptmin * delta).clamp(min=eps))
    ln_z = torch.log((ptmin / (pti + ptj).clamp(min=eps)).clamp(min=eps))
    m2 = psum[:, 3] ** 2 - (psum[:, 0] ** 2 + psum[:, 1] ** 2 + psum[:, 2] ** 2)
    ln_m2 = torch.log(m2.clamp(min=eps))
    return torch.stack((ln_kt, ln_z, ln_delta, ln_m2), dim=dim)


def pair_features_tril(
    vectors: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pair features on the lower triangle.

    Args:
        vectors: (B, 4, P) float tensor of (px, py, pz, E).
        mask: optional (B, 1, P) bool tensor, True for real particles. Pairs that involve a padded
            particle are set to 0, so padding can never leak into a real entry.
        eps: the clamp applied to each log argument.

    Returns:
        (features (B, 4, P(P+1)/2), i, j): the features of pair (i[k], j[k]) with i >= j.
    """
    vectors = vectors.float()
    n = vectors.shape[-1]
    i, j = tril_indices(n, vectors.device)
    pt, rap, phi = _pt_rap_phi(vectors, eps)
    psum = vectors[:, :, i] + vectors[:, :, j]
    feats = _ln_pair_features(
        pt[:, i], pt[:, j], rap[:, i], rap[:, j], phi[:, i], phi[:, j], psum, eps, dim=1
    )
    if mask is not None:
        m = mask[:, 0].bool()
        feats = feats * (m[:, i] & m[:, j]).unsqueeze(1).to(feats.dtype)
    return feats, i, j


def scatter_tril(values: torch.Tensor, i: torch.Tensor, j: torch.Tensor, n: int) -> torch.Tensor:
    """Mirror lower-triangle values (B, C, n(n+1)/2) into a full symmetric (B, C, n, n) tensor."""
    out = values.new_zeros(values.shape[0], values.shape[1], n, n)
    out[:, :, i, j] = values
    out[:, :, j, i] = values
    return out


def pair_features(vectors: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Full symmetric pair features (B, 4, P, P); see ``pair_features_tril``."""
    feats, i, j = pair_features_tril(vectors, mask, eps)
    return scatter_tril(feats, i, j, vectors.shape[-1])


def pair_features_dense(vectors: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """All P x P pair features by broadcasting, channel-last (B, P, P, 4): the export path.

    ``pair_features_tril`` indexes a cached triangle whose size is a Python int, which ONNX and
    ``torch.export`` cannot keep symbolic; this broadcast form has no index tensors, so an exported
    graph accepts any jet length. Pairs with a padded particle are 0 (set with ``where``, not a
    product: ONNX's atan2 decomposition gives NaN at (0, 0), and NaN * 0 is NaN).
    """
    vectors = vectors.float()
    pt, rap, phi = _pt_rap_phi(vectors, eps)
    psum = vectors.unsqueeze(-1) + vectors.unsqueeze(-2)  # (B, 4, P, P)
    feats = _ln_pair_features(
        pt.unsqueeze(-1), pt.unsqueeze(-2), rap.unsqueeze(-1), rap.unsqueeze(-2),
        phi.unsqueeze(-1), phi.unsqueeze(-2), psum, eps, dim=-1,
    )
    m = mask[:, 0].bool()
    return torch.where((m.unsqueeze(-1) & m.unsqueeze(-2)).unsqueeze(-1), feats, torch.zeros_like(feats))


_PI, _TWO_PI = np.float32(math.pi), np.float32(2 * math.pi)


@njit()
def _pair_starts(real):  # pragma: no cover - compiled
    """starts[b]: the index of jet b's first real pair (r_b (r_b + 1) / 2 pairs for r_b real particles)."""
    starts = np.zeros(real.shape[0] + 1, np.int64)
    for b in range(real.shape[0]):
        r = 0
        for i in range(real.shape[1]):
            r += real[b, i]
        starts[b + 1] = starts[b] + r * (r + 1) // 2
    return starts


@njit(parallel=True)
def _real_pairs(vectors, pt, rap, phi, real, starts, eps, out, bidx, ii, jj):  # pragma: no cover - compiled
    """``_ln_pair_features`` in float32 for every real pair (i >= j) of every jet, in (b, i, j) order."""
    for b in numba.prange(real.shape[0]):
        q = starts[b]
        for i in range(real.shape[1]):
            if not real[b, i]:
                continue
            for j in range(i + 1):
                if not real[b, j]:
                    continue
                d = phi[b, i] - phi[b, j] + _PI  # torch.remainder(d, 2 pi), exact for d in [-pi, 3 pi]
                if d >= _TWO_PI:
                    d -= _TWO_PI
                elif d < 0:
                    d += _TWO_PI
                dphi = d - _PI
                dy = rap[b, i] - rap[b, j]
                delta = np.sqrt(dy * dy + dphi * dphi)
                ptmin = min(pt[b, i], pt[b, j])
                out[q, 0] = np.log(max(ptmin * delta, eps))
                out[q, 1] = np.log(max(ptmin / max(pt[b, i] + pt[b, j], eps), eps))
                out[q, 2] = np.log(max(delta, eps))
                px = vectors[b, 0, i] + vectors[b, 0, j]
                py = vectors[b, 1, i] + vectors[b, 1, j]
                pz = vectors[b, 2, i] + vectors[b, 2, j]
                e = vectors[b, 3, i] + vectors[b, 3, j]
                out[q, 3] = np.log(max(e * e - (px * px + py * py + pz * pz), eps))
                bidx[q], ii[q], jj[q] = b, i, j
                q += 1


def real_pair_features(vectors: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The features of the real pairs alone: (features (N, 4), b, i, j), one row per pair of real
    particles i >= j of jet b, in (b, i, j) order.

    On CPU, without autograd through ``vectors``, one numba pass over the pairs (per-particle pT, y,
    phi from torch): ParT's 4 inference batches of 128 jets took 9 ms against 34 ms for
    ``pair_features_tril`` and the selection of real pairs, on 2 cores. Elsewhere those two.
    """
    m = mask[:, 0].bool()
    if vectors.device.type != "cpu" or vectors.requires_grad:
        feats, i, j = pair_features_tril(vectors, mask, eps)
        bidx, tidx = (m[:, i] & m[:, j]).nonzero(as_tuple=True)
        return feats.transpose(1, 2)[bidx, tidx], bidx, i[tidx], j[tidx]
    vectors = vectors.float().contiguous()
    pt, rap, phi = (t.contiguous() for t in _pt_rap_phi(vectors, eps))
    real = m.contiguous().numpy()
    starts = _pair_starts(real)
    n = int(starts[-1])
    out = torch.empty(n, 4)
    bidx, ii, jj = (torch.empty(n, dtype=torch.int64) for _ in range(3))
    numba_threads()
    _real_pairs(vectors.numpy(), pt.numpy(), rap.numpy(), phi.numpy(), real, starts, np.float32(eps),
                out.numpy(), bidx.numpy(), ii.numpy(), jj.numpy())
    return out, bidx, ii, jj
