"""Property tests (hypothesis) for the laws the numerical core must obey whatever the input:
kinematic round trips and invariances, pair-feature symmetry and boost/rotation invariance, and the
metrics' invariance to monotone score transforms. Examples are few and small (the suite budget);
each law is one that a plausible bug (a sign, a wrap, a swapped argument, a dropped clamp) breaks."""

from __future__ import annotations

import itertools
import math

import awkward as ak
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jetfactory import random_jets

from jettag.data.features import build_inputs
from jettag.data.store import make_jets
from jettag.evaluate import metrics as M
from jettag.physics import kinematics as kin
from jettag.physics.pairs import pair_features, pair_features_dense

FAST = settings(max_examples=40, deadline=None)
SLOW = settings(max_examples=8, deadline=None)

pts = st.floats(0.5, 1000.0)
etas = st.floats(-3.0, 3.0)
phis = st.floats(-math.pi, math.pi, exclude_max=True)
masses = st.floats(0.0, 20.0)
angles = st.floats(-10.0, 10.0)


# ---------------------------------------------------------------- kinematics (float64)
@FAST
@given(pts, etas, phis, masses)
def test_pt_eta_phi_m_round_trip(pt: float, eta: float, phi: float, m: float) -> None:
    px, py, pz, e = kin.from_pt_eta_phi_m(np.float64(pt), np.float64(eta), np.float64(phi), np.float64(m))
    assert kin.pt(px, py) == pytest.approx(pt, rel=1e-12)
    assert kin.eta(px, py, pz) == pytest.approx(eta, abs=1e-12)
    assert kin.phi(px, py) == pytest.approx(phi, abs=1e-12)
    # m^2 = E^2 - p^2 cancels: the absolute error is ~1e-16 E^2, so compare m^2 on that scale
    assert kin.mass2(px, py, pz, e) == pytest.approx(m * m, abs=1e-14 * e * e)
    assert e >= math.sqrt(px * px + py * py + pz * pz)


@FAST
@given(pts, st.floats(-3.0, 3.0), phis, st.floats(0.1, 20.0))
def test_pt_y_phi_m_round_trip(pt: float, y: float, phi: float, m: float) -> None:
    px, py, pz, e = kin.from_pt_y_phi_m(np.float64(pt), np.float64(y), np.float64(phi), np.float64(m))
    assert kin.rapidity(pz, e) == pytest.approx(y, abs=1e-10)
    assert kin.pt(px, py) == pytest.approx(pt, rel=1e-12)
    assert kin.mass(px, py, pz, e) == pytest.approx(m, rel=1e-6, abs=1e-7 * e)
    # a massless particle's rapidity is its pseudorapidity
    qx, qy, qz, qe = kin.from_pt_eta_phi_m(np.float64(pt), np.float64(y), np.float64(phi), 0.0)
    assert kin.rapidity(qz, qe) == pytest.approx(kin.eta(qx, qy, qz), abs=1e-9)


@FAST
@given(st.floats(-20.0, 20.0), st.floats(-20.0, 20.0))
def test_delta_phi_wraps_into_half_open_interval(a: float, b: float) -> None:
    d = kin.delta_phi(np.float64(a), np.float64(b))
    assert -math.pi <= d < math.pi
    k = (a - b - d) / (2 * math.pi)  # d differs from a - b by a whole number of turns
    assert k == pytest.approx(round(k), abs=1e-9)
    # antisymmetric except on the cut (d = -pi maps to -pi both ways)
    if abs(abs(d) - math.pi) > 1e-9:
        assert kin.delta_phi(np.float64(b), np.float64(a)) == pytest.approx(-d, abs=1e-12)


def _boost_z(px, py, pz, e, a):
    """Lorentz boost along z with rapidity a (y -> y + a)."""
    return px, py, pz * math.cosh(a) + e * math.sinh(a), e * math.cosh(a) + pz * math.sinh(a)


def _rotate(px, py, pz, e, theta):
    c, s = math.cos(theta), math.sin(theta)
    return c * px - s * py, s * px + c * py, pz, e


@FAST
@given(pts, etas, phis, masses, st.floats(-2.0, 2.0), angles)
@example(1.0, 0.0, 1.0, 0.0, 0.0, math.pi)  # a turn by pi: +pi and -pi are the same azimuth
@example(1.0, 0.0, 1.0, 0.0, 0.0, -math.pi)
def test_boost_and_rotation_of_one_particle(pt, eta, phi, m, a, theta) -> None:
    v = kin.from_pt_eta_phi_m(np.float64(pt), np.float64(eta), np.float64(phi), np.float64(m))
    b = _boost_z(*v, a)
    y0 = kin.rapidity(v[2], v[3])
    assert kin.rapidity(b[2], b[3]) == pytest.approx(y0 + a, abs=1e-9)
    assert kin.pt(b[0], b[1]) == pytest.approx(pt, rel=1e-12) and kin.phi(b[0], b[1]) == kin.phi(v[0], v[1])
    assert kin.mass2(*b) == pytest.approx(m * m, abs=1e-13 * b[3] * b[3])
    r = _rotate(*v, theta)
    # phi turns by theta modulo 2 pi (compared through delta_phi so that +-pi are the same angle)
    turned = kin.delta_phi(kin.phi(r[0], r[1]), kin.phi(v[0], v[1]))
    assert abs(kin.delta_phi(turned - theta, 0.0)) < 1e-9
    assert kin.pt(r[0], r[1]) == pytest.approx(pt, rel=1e-12)
    assert kin.eta(*r[:3]) == pytest.approx(eta, abs=1e-9)
    assert kin.mass2(*r) == pytest.approx(kin.mass2(*v), abs=1e-14 * v[3] * v[3])


# ---------------------------------------------------------------- pair features (float32 inside)
@st.composite
def particle_sets(draw: st.DrawFn) -> np.ndarray:
    """(4, n) float64 (px, py, pz, E) of 2-6 massive particles on a (y, phi) grid of pitch 0.1, so
    that every pair has Delta >= 0.1 (ln Delta well inside float32's reach)."""
    cells = draw(st.lists(st.tuples(st.integers(-20, 20), st.integers(-31, 31)), min_size=2, max_size=6,
                          unique=True))
    n = len(cells)
    pt = np.array(draw(st.lists(st.floats(1.0, 300.0), min_size=n, max_size=n)))
    m = np.array(draw(st.lists(st.floats(0.1, 5.0), min_size=n, max_size=n)))
    y, phi = (0.1 * np.array(c, dtype=np.float64) for c in zip(*cells))
    return np.stack(kin.from_pt_y_phi_m(pt, y, phi, m))


def _pairs(v: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(v[None]).float()
    return pair_features(t, torch.ones(1, 1, v.shape[1], dtype=torch.bool))[0].double().numpy()


def _close_pairs(got: np.ndarray, want: np.ndarray, v: np.ndarray) -> None:
    """Pair features computed in float32: ln kT, ln z, ln Delta to 2e-3 absolute (Delta >= 0.05 and
    y, phi of O(3) carry ~1e-6 absolute float32 error, i.e. < 1e-4 in ln Delta); m^2 = E^2 - p^2
    cancels, so exp(ln m^2) is compared with a tolerance of 1e-5 (E_a + E_b)^2 (~100 ulp of E^2)."""
    off = ~np.eye(v.shape[1], dtype=bool)
    np.testing.assert_allclose(got[:3][:, off], want[:3][:, off], atol=2e-3)
    esum = (v[3][:, None] + v[3][None, :]) ** 2
    assert (np.abs(np.exp(got[3]) - np.exp(want[3]))[off] <= 1e-5 * esum[off] + 1e-6).all()


@FAST
@given(particle_sets(), st.floats(-1.5, 1.5), angles)
def test_pair_features_invariant_under_z_boost_and_phi_rotation(
    v: np.ndarray, a: float, theta: float
) -> None:
    ref = _pairs(v)
    _close_pairs(_pairs(np.stack(_boost_z(*v, a))), ref, v)
    _close_pairs(_pairs(np.stack(_rotate(*v, theta))), ref, v)


@FAST
@given(particle_sets(), st.randoms(use_true_random=False))
def test_pair_features_symmetric_and_permutation_equivariant(v: np.ndarray, rnd) -> None:
    u = _pairs(v)
    np.testing.assert_array_equal(u, u.transpose(0, 2, 1))  # mirrored from one triangle
    perm = list(range(v.shape[1]))
    rnd.shuffle(perm)
    up = _pairs(v[:, perm])
    # the same pairs in the permuted order; only float32 rounding of dphi's wrap can differ
    np.testing.assert_allclose(up, u[:, perm][:, :, perm], atol=1e-5, rtol=1e-5)
    mask = torch.ones(1, 1, v.shape[1], dtype=torch.bool)
    dense = pair_features_dense(torch.from_numpy(v[None]).float(), mask)
    np.testing.assert_allclose(dense[0].permute(2, 0, 1).double().numpy(), u, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- particle features of whole jets
def _transform(jets: ak.Array, fn) -> ak.Array:
    counts = ak.num(jets["part_px"], axis=1)
    flat = [ak.to_numpy(ak.flatten(jets[f])).astype(np.float64) for f in ("part_px", "part_py", "part_pz",
                                                                            "part_energy")]
    out = [ak.unflatten(c, counts) for c in fn(*flat)]
    return make_jets(*out, label=ak.to_numpy(jets["label"]), pid=jets["part_pid"], charge=jets["part_charge"])


@SLOW
@given(st.integers(0, 10_000), angles)
def test_kin_features_invariant_under_phi_rotation(seed: int, theta: float) -> None:
    """Every ``kin`` feature is relative to the jet axis or rotation-free (pT, E, deta, dphi, dR)."""
    jets = random_jets(4, seed=seed, min_len=2, max_len=12)
    a = build_inputs(jets, "kin", max_len=16)
    b = build_inputs(_transform(jets, lambda *v: _rotate(*v, theta)), "kin", max_len=16)
    np.testing.assert_array_equal(a["mask"], b["mask"])
    # float32 features of O(1-5) from float64 inputs: rotation rounding (1e-16) shows only as float32
    # ulps of the final values, e.g. dphi wraps: atol 1e-5
    np.testing.assert_allclose(b["features"], a["features"], atol=1e-5)


# ---------------------------------------------------------------- metrics
scores_and_labels = st.integers(6, 60).flatmap(lambda n: st.tuples(
    st.lists(st.integers(-40, 40), min_size=n, max_size=n),
    st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < len(y)),
))


@FAST
@given(scores_and_labels, st.floats(0.01, 1.0), st.floats(-5.0, 5.0))
def test_metrics_invariant_under_monotone_transform(data, scale: float, shift: float) -> None:
    """Integer scores through s -> scale * s^3 + shift (strictly increasing, exact for these sizes,
    and no new ties) and through exp: the ROC, AUC and every rejection are unchanged."""
    s, y = (np.array(x) for x in data)
    s = s.astype(np.float64)
    f1, t1, _ = M.roc_curve(y, s)
    for g in (scale * s**3 + shift, np.exp(s / 8)):
        f2, t2, _ = M.roc_curve(y, g)
        np.testing.assert_array_equal(f2, f1)
        np.testing.assert_array_equal(t2, t1)
        assert M.auc(y, g) == M.auc(y, s)
        for eff in (0.3, 0.5, 0.99):
            assert M.rejection(y, g, eff) == M.rejection(y, s, eff)
    # reversing the order mirrors the ROC: AUC(-s) = 1 - AUC(s)
    assert M.auc(y, -s) == pytest.approx(1 - M.auc(y, s), abs=1e-12)


@FAST
@given(scores_and_labels, st.lists(st.floats(0.01, 1.0), min_size=2, max_size=6))
def test_rejection_monotone_in_efficiency(data, effs) -> None:
    s, y = (np.array(x) for x in data)
    effs = sorted(effs)
    rej = [M.rejection(y, s.astype(float), e) for e in effs]
    assert all(r >= 1.0 for r in rej)
    assert all(a >= b for a, b in itertools.pairwise(rej)), (effs, rej)


@FAST
@given(st.integers(0, 10_000), st.lists(st.floats(0.1, 10.0), min_size=40, max_size=40))
def test_multiclass_rejection_depends_only_on_two_class_ratio(seed: int, row_scale) -> None:
    """Scaling a jet's whole probability row keeps every p_X / (p_X + p_QCD), hence every Rej."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.arange(4), rng.integers(0, 4, 36)]
    probs = rng.dirichlet(np.ones(4), 40)
    classes = ["label_QCD", "label_Hbb", "label_Hqql", "label_Tbl"]
    a = M.multiclass_metrics(labels, probs, classes)
    b = M.multiclass_metrics(labels, probs * np.array(row_scale)[:, None], classes)
    for k in a:
        if k.startswith("rej"):
            assert b[k] == pytest.approx(a[k], rel=1e-9), k


def test_clamps_keep_beam_axis_and_padding_finite() -> None:
    """The documented edge cases: pT = 0 (along the beam, or an all-zero padded entry) gives a large
    finite eta and rapidity, and a slightly negative m^2 from rounding gives mass 0, never NaN."""
    zero = np.zeros(2)
    beam_pz, beam_e = np.array([5.0, -5.0]), np.array([5.0, 5.0])
    eta = kin.eta(zero, zero, beam_pz)
    assert np.isfinite(eta).all() and eta[0] > 40 and eta[1] < -40  # asinh(5 / 1e-20) = 46.7
    y = kin.rapidity(beam_pz, beam_e)  # massless along the beam: E = |pz|
    assert np.isfinite(y).all() and y[0] > 20 and y[1] < -20
    assert kin.eta(zero, zero, zero).tolist() == [0.0, 0.0]
    assert kin.rapidity(zero, zero).tolist() == [0.0, 0.0]
    assert kin.mass(np.float64(3.0), 4.0, 0.0, np.float64(5.0) - 1e-12) == 0.0
    t = torch.tensor([[3.0, 0.0], [4.0, 0.0], [0.0, 12.0], [13.0, 12.0]])
    assert torch.equal(kin.mass(*t), torch.tensor([12.0, 0.0])) and kin.pt(t[0], t[1]).dtype == torch.float32


@FAST
@given(st.floats(-3.0, 3.0), phis, st.floats(-3.0, 3.0), phis)
def test_delta_r_is_the_wrapped_angular_distance(eta_a, phi_a, eta_b, phi_b) -> None:
    d = kin.delta_r(np.float64(eta_a), np.float64(phi_a), np.float64(eta_b), np.float64(phi_b))
    dphi = min(abs(phi_a - phi_b), 2 * math.pi - abs(phi_a - phi_b))  # the short way round
    assert d == pytest.approx(math.hypot(eta_a - eta_b, dphi), abs=1e-9)
    assert d == pytest.approx(kin.delta_r(np.float64(eta_b), np.float64(phi_b), eta_a, phi_a), abs=1e-12)


def test_torch_in_torch_out() -> None:
    """The same definitions serve numpy (features) and torch (pair features on the batch's device):
    a tensor in gives a tensor out, equal to the numpy result, and keeps the autograd graph (numpy
    would accept a plain CPU tensor through __array__, but neither a CUDA tensor nor one that
    requires grad)."""
    rng = np.random.default_rng(4)
    px, py, pz = rng.normal(0, 50, (3, 5))
    e = np.sqrt(px**2 + py**2 + pz**2 + 1.0)
    a = rng.uniform(-3, 3, 5)
    args = {
        kin.pt: (px, py), kin.phi: (px, py), kin.eta: (px, py, pz), kin.rapidity: (pz, e),
        kin.mass2: (px, py, pz, e), kin.mass: (px, py, pz, e), kin.delta_phi: (a, px / 20),
        kin.delta_r: (a, px / 20, a[::-1].copy(), py / 20),
        kin.from_pt_eta_phi_m: (np.abs(px), a, py / 20, np.ones(5)),
        kin.from_pt_y_phi_m: (np.abs(px), a, py / 20, np.ones(5)),
    }
    for fn, xs in args.items():
        want = fn(*xs)
        got = fn(*(torch.from_numpy(x).requires_grad_() for x in xs))
        pairs = zip(want, got) if isinstance(want, tuple) else [(want, got)]
        for w, g in pairs:
            assert isinstance(g, torch.Tensor) and g.dtype == torch.float64 and g.requires_grad, fn.__name__
            np.testing.assert_allclose(g.detach().numpy(), w, rtol=1e-12, atol=1e-12, err_msg=fn.__name__)
