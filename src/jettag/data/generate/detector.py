"""``--detector simple``: a parametrised particle-flow detector, applied before jet clustering.

Why parametrised rather than Delphes: it needs no extra install, runs columnar on the whole batch,
and captures what a tagger is sensitive to: lost and mismeasured tracks, impact-parameter
resolution (so ``d0err``/``dzerr`` are real uncertainties), and calorimeter granularity that merges
nearby photons and neutral hadrons. The numbers are CMS-like (Delphes CMS card magnitudes):

Tracks (charged particles, ``|eta| < 2.5``, ``pT > 0.1`` GeV):
  efficiency 0.70 (``pT < 1`` GeV) / 0.95 (barrel ``|eta| < 1.5``) / 0.90 (endcap);
  ``sigma(pT)/pT = 0.005 (+) 1.5e-4 pT`` in the barrel, ``0.01 (+) 3e-4 pT`` in the endcap;
  ``sigma(d0) = 0.020 (+) 0.200 / pT`` mm, ``sigma(dz) = 0.060 (+) 0.300 / pT`` mm (``pT`` in GeV;
  ``particles.d0_resolution``; chosen with the reference JetClass ``full`` model, see realism.md);
  the measured d0/dz are the true ones plus a Gaussian of that width; d0err/dzerr are the widths.
Calorimeters (``|eta| < 3``): charged particles that are not tracked deposit their energy like
  neutral ones (electrons and photons in ECAL, everything else in HCAL). ECAL cells 0.02 x 0.02 in
  (eta, phi) with ``sigma(E)/E = 0.03/sqrt(E) (+) 0.005``, threshold 0.5 GeV; HCAL cells 0.087 x
  0.087 with ``sigma(E)/E = 1.0/sqrt(E) (+) 0.05``, threshold 1 GeV. A cell becomes one massless
  particle at the cell centre: a photon (PDG 22) from ECAL, a neutral hadron (PDG 130, the generic
  code particle flow uses) from HCAL. (+) = in quadrature.
"""

from __future__ import annotations

import math

import numpy as np

from jettag.data.generate.particles import Particles, d0_resolution, dz_resolution

DETECTORS = ("none", "simple")

TRACKER_ETA = 2.5
CALO_ETA = 3.0
TRACK_PT_MIN = 0.1
ECAL_CELL = 0.02
HCAL_CELL = 0.087
ECAL_THRESHOLD = 0.5
HCAL_THRESHOLD = 1.0


def _quad(*terms: np.ndarray | float) -> np.ndarray:
    return np.sqrt(sum(np.square(t) for t in terms))


def _tracks(p: Particles, rng: np.random.Generator) -> tuple[Particles, np.ndarray]:
    """Smeared tracks, and the mask of charged particles the tracker missed."""
    pt = np.hypot(p.px, p.py)
    eta = np.arcsinh(p.pz / pt)
    charged = p.charge != 0
    barrel = np.abs(eta) < 1.5
    eff = np.where(pt < 1.0, 0.70, np.where(barrel, 0.95, 0.90))
    in_acc = charged & (np.abs(eta) < TRACKER_ETA) & (pt > TRACK_PT_MIN)
    u = rng.random(len(p))
    tracked = in_acc & (u < eff)
    rel = np.where(barrel, _quad(0.005, 1.5e-4 * pt), _quad(0.01, 3e-4 * pt))
    scale = np.clip(1.0 + rel * rng.standard_normal(len(p)), 0.05, None)
    mass2 = np.clip(p.e**2 - (p.px**2 + p.py**2 + p.pz**2), 0.0, None)
    px, py, pz = p.px * scale, p.py * scale, p.pz * scale
    e = np.sqrt(px**2 + py**2 + pz**2 + mass2)
    spt = pt * scale
    d0err = d0_resolution(spt)
    dzerr = dz_resolution(spt)
    d0 = p.d0 + d0err * rng.standard_normal(len(p))
    dz = p.dz + dzerr * rng.standard_normal(len(p))
    t = tracked
    out = Particles(
        event=p.event[t],
        px=px[t],
        py=py[t],
        pz=pz[t],
        e=e[t],
        pid=p.pid[t],
        charge=p.charge[t],
        d0=d0[t],
        dz=dz[t],
        d0err=d0err[t],
        dzerr=dzerr[t],
    )
    return out, charged & ~tracked


def _cells(
    p: Particles,
    use: np.ndarray,
    size: float,
    stoch: float,
    const: float,
    threshold: float,
    pid: int,
    rng: np.random.Generator,
) -> Particles:
    """Sum the energy of the selected particles per (event, eta cell, phi cell); smear; threshold."""
    pt = np.hypot(p.px, p.py)
    eta = np.arcsinh(p.pz / pt)
    phi = np.arctan2(p.py, p.px)
    sel = use & (np.abs(eta) < CALO_ETA)
    n_phi = round(2 * math.pi / size)
    dphi = 2 * math.pi / n_phi
    ieta = np.floor(eta[sel] / size).astype(np.int64)
    iphi = np.floor((phi[sel] + math.pi) / dphi).astype(np.int64) % n_phi
    n_eta = 2 * math.ceil(CALO_ETA / size) + 2
    key = (p.event[sel].astype(np.int64) * n_eta + (ieta + n_eta // 2)) * n_phi + iphi
    cells, inverse = np.unique(key, return_inverse=True)
    energy = np.bincount(inverse, weights=p.e[sel], minlength=len(cells))
    sigma = energy * _quad(stoch / np.sqrt(np.clip(energy, 1e-9, None)), const)
    energy = energy + sigma * rng.standard_normal(len(cells))
    keep = energy > threshold
    cells, energy = cells[keep], energy[keep]
    c_phi_idx = cells % n_phi
    c_eta_idx = (cells // n_phi) % n_eta - n_eta // 2
    event = cells // (n_phi * n_eta)
    c_eta = (c_eta_idx + 0.5) * size
    c_phi = (c_phi_idx + 0.5) * dphi - math.pi
    c_pt = energy / np.cosh(c_eta)
    zeros = np.zeros(len(cells))
    return Particles(
        event=event,
        px=c_pt * np.cos(c_phi),
        py=c_pt * np.sin(c_phi),
        pz=c_pt * np.sinh(c_eta),
        e=energy,
        pid=np.full(len(cells), pid, dtype=np.int32),
        charge=zeros.astype(np.float32),
        d0=zeros,
        dz=zeros,
        d0err=zeros,
        dzerr=zeros,
    )


def simple_detector(p: Particles, rng: np.random.Generator) -> Particles:
    """Apply the parametrised detector (module docstring) to the particles of a whole batch."""
    tracks, lost = _tracks(p, rng)
    neutral = p.charge == 0
    em = (p.pid == 22) | (lost & (np.abs(p.pid) == 11))
    had = (neutral & (p.pid != 22)) | (lost & (np.abs(p.pid) != 11))
    ecal = _cells(p, em, ECAL_CELL, 0.03, 0.005, ECAL_THRESHOLD, 22, rng)
    hcal = _cells(p, had, HCAL_CELL, 1.0, 0.05, HCAL_THRESHOLD, 130, rng)
    merged = {
        name: np.concatenate([getattr(x, name) for x in (tracks, ecal, hcal)])
        for name in Particles.__dataclass_fields__
    }
    order = np.argsort(merged["event"], kind="stable")
    return Particles(**{k: v[order] for k, v in merged.items()})


def apply_detector(name: str, p: Particles, rng: np.random.Generator) -> Particles:
    """Particles as seen by detector ``name`` (``none`` = particle level, unchanged)."""
    if name == "none":
        return p
    if name == "simple":
        return simple_detector(p, rng)
    raise ValueError(f"unknown detector {name!r}; choose one of {list(DETECTORS)}")
