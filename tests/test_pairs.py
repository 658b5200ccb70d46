"""Pair features against a direct O(N^2) numpy double loop and against weaver-core itself.

The loop below is written from the definitions in features.md (rapidity, wrapped azimuth,
min-pT, invariant mass of the pair, each log argument clamped to 1e-8) in float64 on the same
float32 4-vectors, so it checks ``jettag.physics.pairs`` independently of its vectorised
lower-triangle implementation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from jetfactory import random_jets

from jettag.data.features import build_inputs
from jettag.physics.pairs import (
    PAIR_FEATURE_NAMES,
    pair_features,
    pair_features_dense,
    pair_features_tril,
    real_pair_features,
    scatter_tril,
)

EPS = 1e-8


def loop_reference(v: np.ndarray) -> np.ndarray:
    """(4, n, n) = (ln kT, ln z, ln Delta, ln m^2) of one jet's (4, n) vectors, pair by pair."""
    v = v.astype(np.float64)
    n = v.shape[1]
    out = np.zeros((4, n, n))
    for a in range(n):
        for b in range(n):
            pxa, pya, pza, ea = v[:, a]
            pxb, pyb, pzb, eb = v[:, b]
            pta, ptb = math.hypot(pxa, pya), math.hypot(pxb, pyb)
            ya = 0.5 * math.log((ea + pza) / (ea - pza))
            yb = 0.5 * math.log((eb + pzb) / (eb - pzb))
            dphi = math.atan2(pya, pxa) - math.atan2(pyb, pxb)
            while dphi >= math.pi:
                dphi -= 2 * math.pi
            while dphi < -math.pi:
                dphi += 2 * math.pi
            delta = math.sqrt((ya - yb) ** 2 + dphi**2)
            ptmin = min(pta, ptb)
            m2 = (ea + eb) ** 2 - ((pxa + pxb) ** 2 + (pya + pyb) ** 2 + (pza + pzb) ** 2)
            out[:, a, b] = (math.log(max(ptmin * delta, EPS)), math.log(max(ptmin / (pta + ptb), EPS)),
                            math.log(max(delta, EPS)), math.log(max(m2, EPS)))
    return out


@pytest.fixture(scope="module")
def batch() -> dict[str, np.ndarray]:
    # 12 jets of 2..40 particles: enough pairs (~7k) for the comparison, cheap for the Python loop
    return build_inputs(random_jets(12, seed=7, min_len=2, max_len=40), "kin", max_len=40)


def test_names():
    assert PAIR_FEATURE_NAMES == ("ln_kt", "ln_z", "ln_delta", "ln_m2")


def test_matches_double_loop(batch):
    u = pair_features(torch.from_numpy(batch["vectors"]), torch.from_numpy(batch["mask"])).numpy()
    assert u.shape == (12, 4, 40, 40) and u.dtype == np.float32
    for k in range(len(u)):
        n = int(batch["mask"][k, 0].sum())
        ref = loop_reference(batch["vectors"][k, :, :n])
        got = u[k, :, :n, :n]
        # ln kT, ln z, ln Delta: float32 rounding of the rapidities/angles only
        np.testing.assert_allclose(got[:3], ref[:3], atol=2e-4, rtol=0)
        # m^2 = (E_a + E_b)^2 - |p_a + p_b|^2 cancels catastrophically in float32 for near-collinear
        # pairs, so compare m^2 itself with an absolute tolerance on the scale of (E_a + E_b)^2.
        e = batch["vectors"][k, 3, :n].astype(np.float64)
        scale = (e[:, None] + e[None, :]) ** 2
        np.testing.assert_array_less(np.abs(np.exp(got[3]) - np.exp(ref[3])), 1e-6 * scale + 1e-7)
        assert not u[k, :, n:, :].any() and not u[k, :, :, n:].any(), f"pairs with padding of jet {k} not 0"
        np.testing.assert_array_equal(got, got.transpose(0, 2, 1))


def test_padding_does_not_change_real_entries():
    jets = random_jets(6, seed=11, min_len=3, max_len=16)
    short = build_inputs(jets, "kin", max_len=16)
    long = build_inputs(jets, "kin", max_len=48)
    u16 = pair_features(torch.from_numpy(short["vectors"]), torch.from_numpy(short["mask"]))
    u48 = pair_features(torch.from_numpy(long["vectors"]), torch.from_numpy(long["mask"]))
    # Not bit-exact across paddings: torch's log/atan2/sqrt kernels run a SIMD body and a scalar
    # tail (AVX-512 bodies are 16 floats wide), and which pairs fall into the tail depends on the
    # padded length. Both paths are accurate to a few float32 ulp; the largest |U| here is ~15, so
    # 8 ulp there is ~8e-6 (seen: 3.8e-6 on an AVX-512 Xeon).
    torch.testing.assert_close(u48[:, :, :16, :16], u16, rtol=2e-6, atol=8e-6)
    assert not u48[:, :, 16:].any() and not u48[:, :, :, 16:].any()
    # garbage in padded slots (weaver pads by repeating particles) must not leak either
    noisy = long["vectors"].copy()
    pad = ~long["mask"].repeat(4, axis=1)
    noisy[pad] = np.random.default_rng(0).uniform(1, 50, size=int(pad.sum()))
    u_noisy = pair_features(torch.from_numpy(noisy), torch.from_numpy(long["mask"]))
    torch.testing.assert_close(u_noisy, u48, rtol=0, atol=0)  # same shape, same kernels: bit-exact


def test_tril_scatter_is_the_full_matrix(batch):
    v, m = torch.from_numpy(batch["vectors"]), torch.from_numpy(batch["mask"])
    tril, i, j = pair_features_tril(v, m)
    assert (i >= j).all() and tril.shape[-1] == 40 * 41 // 2
    torch.testing.assert_close(scatter_tril(tril, i, j, 40), pair_features(v, m), rtol=0, atol=0)


def test_dense_export_form_equals_triangle_form(batch):
    v, m = torch.from_numpy(batch["vectors"]), torch.from_numpy(batch["mask"])
    dense = pair_features_dense(v, m).permute(0, 3, 1, 2)
    torch.testing.assert_close(dense, pair_features(v, m), rtol=1e-5, atol=1e-5)  # float32 op order


def test_agrees_with_weaver_core(batch):
    """Same numbers as weaver's ParT PairEmbed path: gather (i, j) of the lower triangle, then
    ``pairwise_lv_fts_pp`` (gathering both sides keeps weaver's self-pairs at Delta = 0 exactly)."""
    pytest.importorskip("weaver")
    from weaver.nn.model.ParticleTransformer import pairwise_lv_fts_pp

    v = torch.from_numpy(batch["vectors"])
    m = torch.from_numpy(batch["mask"])
    i, j = torch.tril_indices(40, 40)
    ref = pairwise_lv_fts_pp(v[:, :, i].unsqueeze(-1), v[:, :, j].unsqueeze(-1), num_outputs=4).squeeze(-1)
    ours, oi, oj = pair_features_tril(v, m)
    assert torch.equal(oi, i) and torch.equal(oj, j)
    real = (m[:, 0, i] & m[:, 0, j]).unsqueeze(1).expand_as(ref)
    # float32 rounding of weaver's own log/atan2 kernels only
    torch.testing.assert_close(ours[real], ref[real], rtol=0, atol=1e-6)


def test_ultra_soft_particle_agrees_with_weaver_core():
    pytest.importorskip("weaver")
    from weaver.nn.model.ParticleTransformer import pairwise_lv_fts_pp

    # (px, py, pz, E) of a 50 GeV particle and a 1e-5 GeV one (below the 1e-4 GeV the clamp implies)
    v = torch.tensor([[[50.0, 1e-5], [3.0, 0.0], [10.0, 2e-6], [51.0, 2.1e-5]]])
    ours, i, j = pair_features_tril(v)
    ref = pairwise_lv_fts_pp(v[:, :, i].unsqueeze(-1), v[:, :, j].unsqueeze(-1), num_outputs=4).squeeze(-1)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_real_pair_features_are_the_triangle_at_real_pairs(batch):
    """The CPU kernel (one pass over the real pairs) against the torch triangle and its selection:
    same pairs in the same (b, i, j) order, same values. Jet 0 gets a hole in its mask, jet 1 no real
    particle, and jet 2 particles on both sides of phi = +-pi (the wrapped azimuth)."""
    v, m = torch.from_numpy(batch["vectors"]).clone(), torch.from_numpy(batch["mask"]).clone()
    m[0, 0, 1] = False
    m[1] = False
    n2 = int(m[2, 0].sum())
    phi = math.pi + torch.linspace(-0.3, 0.3, n2)  # across the branch cut of atan2
    pt = torch.hypot(v[2, 0, :n2], v[2, 1, :n2])
    v[2, 0, :n2], v[2, 1, :n2] = pt * torch.cos(phi), pt * torch.sin(phi)
    feats, bidx, ii, jj = real_pair_features(v, m)
    tril, i, j = pair_features_tril(v, m)
    rb, rt = (m[:, 0, i] & m[:, 0, j]).nonzero(as_tuple=True)
    assert torch.equal(bidx, rb) and torch.equal(ii, i[rt]) and torch.equal(jj, j[rt])
    # scalar logf/sqrtf against torch's vectorised kernels: a few float32 ulp of |U| <= ~16
    torch.testing.assert_close(feats, tril.transpose(1, 2)[rb, rt], rtol=0, atol=4e-6)
    jet2 = torch.zeros(4, n2, n2)
    jet2[:, ii[bidx == 2], jj[bidx == 2]] = feats[bidx == 2].T
    ref = loop_reference(v[2, :, :n2].numpy())
    low = np.tril(np.ones((n2, n2), dtype=bool))
    np.testing.assert_allclose(jet2[:3].numpy()[:, low], ref[:3][:, low], atol=2e-4, rtol=0)  # as above
    with_grad = real_pair_features(v.requires_grad_(True), m)  # autograd: the torch path
    torch.testing.assert_close(with_grad[0].detach(), feats, rtol=0, atol=4e-6)
