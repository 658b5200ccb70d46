"""Seed 002's jet-frame preprocessing of fat jets and its event kinematics tokens, columnar (numpy).

Per jet (``jet_frame``), on all its constituents at once:

1. **shift**: (eta, phi) relative to the pT-weighted centroid of the constituents (phi wrapped around
   the jet axis first), so the pT-weighted centroid is at (0, 0); the centroid is the jet-image
   estimate of the jet axis and differs from the four-vector axis by O(R^2) only;
2. **rotate** by ``theta`` so that the principal axis (the eigenvector of the largest eigenvalue) of
   the pT-weighted (eta, phi) covariance is vertical (along phi'). ``theta`` is the rotation angle
   applied, counter-clockwise in the (eta, phi) plane, in (-pi/2, pi/2]; the axis has no sign, so
   ``theta`` is defined modulo pi;
3. **flip** eta' -> -eta' when the constituents with eta' < 0 carry more energy than those with
   eta' > 0 (so the eta' > 0 half carries at least half);
4. keep the ``max_particles`` (50) leading constituents in pT order (the store's order), each as
   (eta', phi', pT, ln pT), zero-padded, with a mask.

**Degenerate jets.** With fewer than 2 constituents, or when the covariance is isotropic (its two
eigenvalues equal to 1e-9 of its trace, e.g. every constituent at one point), no principal axis
exists: such a jet is shifted and flipped but not rotated, and its ``theta`` is 0.

``event_tokens`` makes the three kinematics tokens of a two-jet event: jet 1, jet 2 and their
four-vector sum (the H candidate), each (m, eta, phi, pT, E, theta), theta = 0 for the sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

from jettag.physics import kinematics as kin

MAX_PARTICLES = 50
#: per-particle channels of ``JetFrame.features``
PARTICLE_CHANNELS = ("eta", "phi", "pt", "log_pt")
#: channels of an event token
TOKEN_CHANNELS = ("mass", "eta", "phi", "pt", "energy", "theta")
_ISOTROPIC = 1e-9


@dataclass
class JetFrame:
    """Preprocessed jets: ``features`` (N, P, 4) float32 (eta', phi', pT, ln pT; 0 where padded),
    ``mask`` (N, P) bool, ``theta`` (N,) float64 the rotation angle, ``flipped`` (N,) bool, and the
    shift: ``centroid_eta``, ``centroid_dphi`` (N,) (the latter relative to the jet's phi)."""

    features: np.ndarray
    mask: np.ndarray
    theta: np.ndarray
    flipped: np.ndarray
    centroid_eta: np.ndarray
    centroid_dphi: np.ndarray

    def transform(self, eta: ak.Array, dphi: ak.Array) -> tuple[ak.Array, ak.Array]:
        """(eta', phi') of other directions in each jet's frame (``dphi`` relative to the jet's phi)."""
        x, y = eta - self.centroid_eta, dphi - self.centroid_dphi
        cos, sin = np.cos(self.theta), np.sin(self.theta)
        return (x * cos - y * sin) * np.where(self.flipped, -1.0, 1.0), x * sin + y * cos


def on_flat(fn, *jagged: ak.Array) -> ak.Array:
    """``fn`` of numpy arrays applied to jagged arrays of one layout (through their flat contents)."""
    counts = ak.num(jagged[0], axis=1)
    return ak.unflatten(fn(*(ak.to_numpy(ak.flatten(a)) for a in jagged)), counts)


def particle_kinematics(jets: ak.Array) -> tuple[ak.Array, ak.Array, ak.Array]:
    """(eta, phi, pT) of canonical jets' constituents, jagged."""
    p = (jets.part_px, jets.part_py, jets.part_pz)
    return on_flat(kin.eta, *p), on_flat(kin.phi, *p[:2]), on_flat(kin.pt, *p[:2])


def principal_angle(cov_ee: np.ndarray, cov_pp: np.ndarray, cov_ep: np.ndarray) -> np.ndarray:
    """Angle of the principal (major) axis of 2x2 covariances from the eta axis, in (-pi/2, pi/2]."""
    return 0.5 * np.arctan2(2.0 * cov_ep, cov_ee - cov_pp)


def _wrap_half_pi(angle: np.ndarray) -> np.ndarray:
    """``angle`` modulo pi, in (-pi/2, pi/2]."""
    return np.pi / 2 - np.mod(np.pi / 2 - angle, np.pi)


def jet_frame(
    part_eta: ak.Array,
    part_phi: ak.Array,
    part_pt: ak.Array,
    part_energy: ak.Array,
    jet_phi: np.ndarray,
    max_particles: int = MAX_PARTICLES,
) -> JetFrame:
    """Shift, rotate, flip and truncate jagged constituents (one list per jet, pT ordered) as above."""

    def jagged(a: ak.Array) -> ak.Array:  # per-jet numpy arrays broadcast against var-length lists only
        return ak.values_astype(ak.from_regular(ak.Array(a), axis=1), np.float64)

    eta = jagged(part_eta)
    dphi = kin.delta_phi(jagged(part_phi), np.asarray(jet_phi, dtype=np.float64))
    w = jagged(part_pt)
    wsum = ak.to_numpy(ak.sum(w, axis=1))
    safe = np.where(wsum > 0, wsum, 1.0)
    c_eta = ak.to_numpy(ak.sum(w * eta, axis=1)) / safe
    c_phi = ak.to_numpy(ak.sum(w * dphi, axis=1)) / safe
    x = eta - c_eta
    y = dphi - c_phi
    cxx = ak.to_numpy(ak.sum(w * x * x, axis=1)) / safe
    cyy = ak.to_numpy(ak.sum(w * y * y, axis=1)) / safe
    cxy = ak.to_numpy(ak.sum(w * x * y, axis=1)) / safe
    # eigenvalue gap of the 2x2 covariance relative to its trace: 0 when isotropic or a single point
    gap = np.sqrt((cxx - cyy) ** 2 + 4.0 * cxy**2)
    n = ak.to_numpy(ak.num(w, axis=1))
    degenerate = (n < 2) | (gap <= _ISOTROPIC * (cxx + cyy)) | (gap == 0)
    theta = np.where(degenerate, 0.0, _wrap_half_pi(np.pi / 2 - principal_angle(cxx, cyy, cxy)))
    cos, sin = np.cos(theta), np.sin(theta)
    xr = x * cos - y * sin
    yr = x * sin + y * cos
    e = jagged(part_energy)
    e_pos = ak.to_numpy(ak.sum(ak.where(xr > 0, e, 0.0), axis=1))
    e_neg = ak.to_numpy(ak.sum(ak.where(xr < 0, e, 0.0), axis=1))
    flipped = e_neg > e_pos
    xr = xr * np.where(flipped, -1.0, 1.0)

    def padded(a: ak.Array) -> np.ndarray:
        cut = ak.pad_none(a[:, :max_particles], max_particles, axis=1, clip=True)
        return ak.to_numpy(ak.fill_none(cut, 0.0)).astype(np.float64)

    count = np.minimum(n, max_particles)
    mask = np.arange(max_particles)[None, :] < count[:, None]
    pt = padded(w)
    log_pt = np.where(mask, np.log(np.where(mask & (pt > 0), pt, 1.0)), 0.0)
    features = np.stack([padded(xr), padded(yr), pt, log_pt], axis=-1).astype(np.float32)
    return JetFrame(
        features=features, mask=mask, theta=theta, flipped=flipped, centroid_eta=c_eta, centroid_dphi=c_phi
    )


SUBJET_CHANNELS = ("eta", "phi", "pt", "log_pt", "mass")


def kt_subjets(
    part_px: ak.Array,
    part_py: ak.Array,
    part_pz: ak.Array,
    part_energy: ak.Array,
    jet_phi: np.ndarray,
    frame: JetFrame,
    kt_cut: float = 5.0,
    max_subjets: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Exclusive-kT subjets of each jet (FastJet, R = 1, merging stops once every pair and every
    subjet is harder than ``kt_cut`` GeV: ``dcut = kt_cut^2``), the ``max_subjets`` hardest kept,
    each as (eta', phi', pT, ln pT, m) in the jet's frame ``frame``; returns ``features``
    (N, S, 5) float32 (0 where padded) and ``mask`` (N, S). A jet always has at least one subjet."""
    from jettag.data.generate.clustering import _quiet_stdout
    from jettag.physics.lund import _fastjet

    fastjet = _fastjet()
    record = ak.zip(
        {
            c: ak.values_astype(a, np.float64)
            for c, a in zip(("px", "py", "pz", "E"), (part_px, part_py, part_pz, part_energy))
        }
    )
    jet_def = fastjet.JetDefinition(fastjet.kt_algorithm, 1.0)
    import warnings

    with _quiet_stdout(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fastjet's note on dcut with other algorithms
        sub = fastjet.ClusterSequence(record, jet_def).exclusive_jets(dcut=kt_cut**2)
    pt = on_flat(kin.pt, sub.px, sub.py)
    order = ak.argsort(pt, axis=1, ascending=False)
    sub, pt = sub[order][:, :max_subjets], pt[order][:, :max_subjets]
    eta = on_flat(kin.eta, sub.px, sub.py, sub.pz)
    dphi = kin.delta_phi(on_flat(kin.phi, sub.px, sub.py), np.asarray(jet_phi, dtype=np.float64))
    x, y = frame.transform(eta, dphi)
    m = on_flat(kin.mass, sub.px, sub.py, sub.pz, sub.E)

    def padded(a: ak.Array) -> np.ndarray:
        return ak.to_numpy(ak.fill_none(ak.pad_none(a, max_subjets, axis=1, clip=True), 0.0)).astype(
            np.float64
        )

    count = np.minimum(ak.to_numpy(ak.num(pt, axis=1)), max_subjets)
    mask = np.arange(max_subjets)[None, :] < count[:, None]
    ptp = padded(pt)
    log_pt = np.where(mask, np.log(np.where(mask & (ptp > 0), ptp, 1.0)), 0.0)
    return np.stack([padded(x), padded(y), ptp, log_pt, padded(m)], axis=-1).astype(np.float32), mask


def event_tokens(
    pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mass: np.ndarray, theta: np.ndarray
) -> np.ndarray:
    """Tokens (E, 3, 6) of two-jet events from per-jet arrays (E, 2) (leading jet first): jet 1,
    jet 2 and the four-vector sum, each (m, eta, phi, pT, E, theta), theta = 0 for the sum."""
    pt, eta, phi, mass, theta = (np.asarray(a, dtype=np.float64) for a in (pt, eta, phi, mass, theta))
    if pt.ndim != 2 or pt.shape[1] != 2:
        raise ValueError(f"event_tokens needs (events, 2) arrays, got {pt.shape}")
    px, py, pz, e = kin.from_pt_eta_phi_m(pt, eta, phi, mass)
    sx, sy, sz, se = (a.sum(axis=1) for a in (px, py, pz, e))
    jets = np.stack([mass, eta, phi, pt, e, theta], axis=-1)  # (E, 2, 6)
    total = np.stack(
        [
            kin.mass(sx, sy, sz, se),
            kin.eta(sx, sy, sz),
            kin.phi(sx, sy),
            kin.pt(sx, sy),
            se,
            np.zeros_like(se),
        ],
        axis=-1,
    )
    return np.concatenate([jets, total[:, None, :]], axis=1)
