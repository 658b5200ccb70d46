"""Seed 002's jet-frame preprocessing (``jettag.physics.jet_frame``) and event tokens."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from jettag.physics import kinematics as kin
from jettag.physics.jet_frame import event_tokens, jet_frame

# Preprocessing runs in float64 and returns float32 features: 1e-5 covers float32 rounding of
# coordinates of O(1).
TOL = 1e-5


def _elongated_jets(n: int, alpha: np.ndarray, seed: int = 0, size: int = 40) -> dict[str, ak.Array]:
    """Jets whose constituents lie along a line at angle ``alpha`` from the eta axis (spread 0.3
    along it, 0.03 across), centred at a random (eta0, phi0) near the phi = pi seam."""
    rng = np.random.default_rng(seed)
    along = rng.normal(0, 0.3, (n, size))
    across = rng.normal(0, 0.03, (n, size))
    c, s = np.cos(alpha)[:, None], np.sin(alpha)[:, None]
    eta0 = rng.uniform(-1, 1, (n, 1))
    phi0 = np.full((n, 1), 3.0)
    eta = eta0 + along * c - across * s
    phi = kin.delta_phi(phi0 + along * s + across * c, 0.0)  # wrapped: some cross the seam
    pt = rng.exponential(20.0, (n, size)) + 1.0
    pt = -np.sort(-pt, axis=1)
    energy = pt * np.cosh(eta)
    return {"eta": ak.Array(eta), "phi": ak.Array(phi), "pt": ak.Array(pt), "energy": ak.Array(energy),
            "jet_phi": phi0[:, 0]}


def _frame(j: dict, **kw):
    return jet_frame(j["eta"], j["phi"], j["pt"], j["energy"], j["jet_phi"], **kw)


def test_centroid_axis_and_flip() -> None:
    alpha = np.linspace(-1.5, 1.5, 9)
    f = _frame(_elongated_jets(9, alpha))
    x, y, pt = f.features[..., 0], f.features[..., 1], f.features[..., 2]
    w = pt * f.mask
    # pT-weighted centroid at (0, 0)
    assert np.abs((w * x).sum(1) / w.sum(1)).max() < TOL
    assert np.abs((w * y).sum(1) / w.sum(1)).max() < TOL
    # principal axis vertical: no eta'-phi' correlation and the larger spread along phi'
    cxy = (w * x * y).sum(1) / w.sum(1)
    cxx, cyy = (w * x * x).sum(1) / w.sum(1), (w * y * y).sum(1) / w.sum(1)
    assert np.abs(cxy).max() < TOL
    assert (cyy > 10 * cxx).all()
    # the eta' > 0 half carries more energy (energy ~ pT cosh(eta) of the original particle)
    e = ak.to_numpy(_elongated_jets(9, alpha)["energy"])  # 40 constituents: all kept, in order
    xe = x[:, :40]
    assert ((e * (xe > 0)).sum(1) >= (e * (xe < 0)).sum(1)).all()
    assert f.flipped.any() and not f.flipped.all()  # both branches of the flip are exercised
    assert f.features[..., 3][f.mask] == pytest.approx(np.log(pt[f.mask]), abs=TOL)


def test_theta_recovers_known_rotation() -> None:
    alpha = np.array([0.0, 0.3, -0.7, 1.2, 1.5])
    f = _frame(_elongated_jets(5, alpha, seed=3, size=200))
    expected = np.pi / 2 - alpha  # rotating the axis at alpha onto the phi axis, modulo pi
    diff = np.mod(f.theta - expected + np.pi / 2, np.pi) - np.pi / 2
    # the sampled cloud's axis scatters around alpha by ~ (0.03/0.3)/sqrt(200) rad
    assert np.abs(diff).max() < 0.03
    assert (f.theta > -np.pi / 2).all() and (f.theta <= np.pi / 2).all()


def test_truncation_padding_and_degenerate_jets() -> None:
    eta = ak.Array([[0.1], [0.2, 0.2], list(np.linspace(-0.5, 0.5, 70))])
    phi = ak.Array([[1.0], [1.0, 1.0], list(np.linspace(0.5, 1.5, 70))])
    pt = ak.Array([[50.0], [30.0, 20.0], list(np.linspace(100, 1, 70))])
    f = jet_frame(eta, phi, pt, pt, np.array([1.0, 1.0, 1.0]))
    assert f.features.shape == (3, 50, 4)
    assert f.mask.sum(1).tolist() == [1, 2, 50]
    assert np.isfinite(f.features).all()
    # one constituent, and two at the same point: no axis, theta 0, shifted onto (0, 0)
    assert f.theta[:2].tolist() == [0.0, 0.0]
    assert np.abs(f.features[:2, :, :2]).max() < TOL
    assert (f.features[~f.mask] == 0).all()
    # the 50 kept constituents are the leading ones in pT order
    assert f.features[2, :, 2] == pytest.approx(np.linspace(100, 1, 70)[:50], rel=1e-6)


def test_event_tokens_sum_is_four_vector_sum() -> None:
    rng = np.random.default_rng(1)
    pt = rng.uniform(250, 900, (6, 2))
    eta = rng.uniform(-2, 2, (6, 2))
    phi = rng.uniform(-np.pi, np.pi, (6, 2))
    m = rng.uniform(50, 250, (6, 2))
    theta = rng.uniform(-1.5, 1.5, (6, 2))
    tok = event_tokens(pt, eta, phi, m, theta)
    assert tok.shape == (6, 3, 6)
    assert tok[:, :2, 5] == pytest.approx(theta) and (tok[:, 2, 5] == 0).all()
    assert tok[:, :2, 0] == pytest.approx(m) and tok[:, :2, 3] == pytest.approx(pt)
    p = np.stack(kin.from_pt_eta_phi_m(pt, eta, phi, m), -1).sum(1)  # (6, 4)
    q = np.stack(kin.from_pt_eta_phi_m(tok[:, 2, 3], tok[:, 2, 1], tok[:, 2, 2], tok[:, 2, 0]), -1)
    # float64 round trip through (pT, eta, phi, m) of TeV-scale momenta: 1e-9 relative
    assert q == pytest.approx(p, rel=1e-9, abs=1e-6)
    assert tok[:, 2, 4] == pytest.approx(p[:, 3], rel=1e-9)
    with pytest.raises(ValueError, match="events, 2"):
        event_tokens(pt[:, :1], eta[:, :1], phi[:, :1], m[:, :1], theta[:, :1])
