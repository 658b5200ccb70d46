"""``--detector simple``: a parametrised particle-flow detector of tracks and calorimeter clusters.

Why parametrised rather than Delphes: it needs no extra install, runs columnar on the whole batch,
and captures what a tagger is sensitive to: lost and mismeasured tracks, impact-parameter
resolution (so ``d0err``/``dzerr`` are real uncertainties), calorimeter granularity that merges
nearby photons and neutral hadrons, and the split of a shower between the EM and hadronic layers
(seed 001's cluster features E_EM/E and E_Had/E). The numbers are CMS/ATLAS-like (Delphes card
magnitudes). Every constituent carries ``kind`` (``KIND_TRACK`` or ``KIND_CLUSTER``).

Tracks (charged particles, ``|eta| < 2.5``, ``pT > 0.1`` GeV):
  efficiency 0.70 (``pT < 1`` GeV) / 0.95 (barrel ``|eta| < 1.5``) / 0.90 (endcap);
  ``sigma(pT)/pT = 0.005 (+) 1.5e-4 pT`` in the barrel, ``0.01 (+) 3e-4 pT`` in the endcap;
  ``sigma(d0) = 0.020 (+) 0.200 / pT`` mm, ``sigma(dz) = 0.060 (+) 0.300 / pT`` mm (``pT`` in GeV;
  ``particles.d0_resolution``; chosen with the reference JetClass ``full`` model, see realism.md);
  the measured d0/dz are the true ones plus a Gaussian of that width; d0err/dzerr are the widths.
Calorimeter clusters (``|eta| < 3``), ideal particle flow: the energy of tracked particles is
  subtracted exactly, so clusters are built from the particles that left no track (neutral ones,
  and charged ones the tracker missed or that are outside it). Each such particle deposits a share
  ``f_EM`` of its energy in the EM layer and ``1 - f_EM`` in the hadronic layer: ``f_EM = 1`` for
  photons and electrons; for every other particle (hadrons; a missed muon is treated alike)
  ``f_EM`` is drawn per particle from a Gaussian of mean ``HAD_EM_SHARE = 0.25`` and width
  ``HAD_EM_SHARE_SPREAD = 0.15``, clipped to [0, 1] (the early, EM-like part of a hadron shower).
  Deposits are summed per tower of 0.087 x 0.087 in (eta, phi) (the HCAL granularity) and layer:
  EM layer ``sigma(E)/E = 0.03/sqrt(E) (+) 0.005``, threshold 0.5 GeV; hadronic layer
  ``sigma(E)/E = 1.0/sqrt(E) (+) 0.05``, threshold 1 GeV (a layer below its threshold reads 0; a
  tower with both layers at 0 makes no cluster). A tower becomes one massless cluster with
  ``E = E_EM + E_Had``, ``emfrac = E_EM/E``, ``hadfrac = E_Had/E``, at the tower centre shifted by
  the EM layer's energy-weighted centroid of its 0.02 x 0.02 cells (weight ``E_EM/E``): the fine EM
  segmentation still locates photons within a tower. Its PDG id is 22 (photon) when
  ``emfrac >= 0.5``, else 130 (neutral hadron), so the ParT feature sets see neutral particles.
(+) = in quadrature.
"""

from __future__ import annotations

import math

import numpy as np

from jettag.data.generate.particles import Particles, d0_resolution, dz_resolution
from jettag.data.store import KIND_CLUSTER, KIND_TRACK

DETECTORS = ("none", "simple")

TRACKER_ETA = 2.5
CALO_ETA = 3.0
TRACK_PT_MIN = 0.1
ECAL_CELL = 0.02
TOWER = 0.087
ECAL_RES = (0.03, 0.005)  # stochastic, constant
HCAL_RES = (1.0, 0.05)
ECAL_THRESHOLD = 0.5
HCAL_THRESHOLD = 1.0
HAD_EM_SHARE = 0.25
HAD_EM_SHARE_SPREAD = 0.15


def _quad(*terms: np.ndarray | float) -> np.ndarray:
    return np.sqrt(sum(np.square(t) for t in terms))


def track_efficiency(pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Configured probability that a charged particle in the tracker acceptance leaves a track."""
    return np.where(pt < 1.0, 0.70, np.where(np.abs(eta) < 1.5, 0.95, 0.90))


def track_pt_resolution(pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Configured relative pT resolution sigma(pT)/pT of a track."""
    return np.where(np.abs(eta) < 1.5, _quad(0.005, 1.5e-4 * pt), _quad(0.01, 3e-4 * pt))


def layer_resolution(energy: np.ndarray, res: tuple[float, float]) -> np.ndarray:
    """Absolute energy resolution sigma(E) of a calorimeter layer (``ECAL_RES`` or ``HCAL_RES``)."""
    e = np.clip(energy, 1e-9, None)
    return e * _quad(res[0] / np.sqrt(e), res[1])


def tracks(p: Particles, rng: np.random.Generator) -> tuple[Particles, np.ndarray]:
    """Smeared tracks, and the mask over ``p`` of the particles that were tracked (in order)."""
    pt = np.hypot(p.px, p.py)
    eta = np.arcsinh(p.pz / pt)
    in_acc = (p.charge != 0) & (np.abs(eta) < TRACKER_ETA) & (pt > TRACK_PT_MIN)
    tracked = in_acc & (rng.random(len(p)) < track_efficiency(pt, eta))
    scale = np.clip(1.0 + track_pt_resolution(pt, eta) * rng.standard_normal(len(p)), 0.05, None)
    mass2 = np.clip(p.e**2 - (p.px**2 + p.py**2 + p.pz**2), 0.0, None)
    px, py, pz = p.px * scale, p.py * scale, p.pz * scale
    e = np.sqrt(px**2 + py**2 + pz**2 + mass2)
    d0err = d0_resolution(pt * scale)
    dzerr = dz_resolution(pt * scale)
    d0 = p.d0 + d0err * rng.standard_normal(len(p))
    dz = p.dz + dzerr * rng.standard_normal(len(p))
    t = tracked
    n = int(t.sum())
    out = Particles(
        event=p.event[t], px=px[t], py=py[t], pz=pz[t], e=e[t], pid=p.pid[t], charge=p.charge[t],
        d0=d0[t], dz=dz[t], d0err=d0err[t], dzerr=dzerr[t],
        kind=np.full(n, KIND_TRACK, dtype=np.int32), emfrac=np.zeros(n), hadfrac=np.zeros(n),
    )
    return out, tracked


def em_share(p: Particles, rng: np.random.Generator) -> np.ndarray:
    """Per particle, the share of its energy deposited in the EM layer (module docstring)."""
    em = (p.pid == 22) | (np.abs(p.pid) == 11)
    had = np.clip(HAD_EM_SHARE + HAD_EM_SHARE_SPREAD * rng.standard_normal(len(p)), 0.0, 1.0)
    return np.where(em, 1.0, had)


def _wrap(dphi: np.ndarray) -> np.ndarray:
    return (dphi + math.pi) % (2 * math.pi) - math.pi


def clusters(p: Particles, use: np.ndarray, f_em: np.ndarray, rng: np.random.Generator) -> Particles:
    """Calorimeter clusters (one per tower with energy) from the particles selected by ``use``."""
    pt = np.hypot(p.px, p.py)
    eta = np.arcsinh(p.pz / pt)
    phi = np.arctan2(p.py, p.px)
    sel = use & (np.abs(eta) < CALO_ETA)
    eta, phi, energy, f = eta[sel], phi[sel], p.e[sel], f_em[sel]
    n_phi = round(2 * math.pi / TOWER)
    dphi_tower = 2 * math.pi / n_phi
    n_eta = 2 * math.ceil(CALO_ETA / TOWER) + 2
    ieta = np.floor(eta / TOWER).astype(np.int64)
    iphi = np.floor((phi + math.pi) / dphi_tower).astype(np.int64) % n_phi
    key = (p.event[sel].astype(np.int64) * n_eta + (ieta + n_eta // 2)) * n_phi + iphi
    towers, inverse = np.unique(key, return_inverse=True)
    t_phi_idx = towers % n_phi
    t_eta_idx = (towers // n_phi) % n_eta - n_eta // 2
    event = towers // (n_phi * n_eta)
    t_eta = (t_eta_idx + 0.5) * TOWER
    t_phi = (t_phi_idx + 0.5) * dphi_tower - math.pi
    # EM deposits sit at the centre of their fine ECAL cell: their offsets from the tower centre
    n_phi_cell = round(2 * math.pi / ECAL_CELL)
    dphi_cell = 2 * math.pi / n_phi_cell
    cell_eta = (np.floor(eta / ECAL_CELL) + 0.5) * ECAL_CELL
    cell_phi = (np.floor((phi + math.pi) / dphi_cell) + 0.5) * dphi_cell - math.pi
    e_em_dep, e_had_dep = f * energy, (1.0 - f) * energy
    n = len(towers)
    e_em = np.bincount(inverse, weights=e_em_dep, minlength=n)
    e_had = np.bincount(inverse, weights=e_had_dep, minlength=n)
    w = np.where(e_em > 0, e_em, 1.0)
    em_deta = np.bincount(inverse, weights=e_em_dep * (cell_eta - t_eta[inverse]), minlength=n) / w
    em_dphi = np.bincount(inverse, weights=e_em_dep * _wrap(cell_phi - t_phi[inverse]), minlength=n) / w
    # smear each layer with its own resolution; a layer below its threshold reads 0
    e_em = np.where(e_em > 0, e_em + layer_resolution(e_em, ECAL_RES) * rng.standard_normal(n), 0.0)
    e_had = np.where(e_had > 0, e_had + layer_resolution(e_had, HCAL_RES) * rng.standard_normal(n), 0.0)
    e_em = np.where(e_em > ECAL_THRESHOLD, e_em, 0.0)
    e_had = np.where(e_had > HCAL_THRESHOLD, e_had, 0.0)
    total = e_em + e_had
    keep = total > 0
    e_em, e_had, total = e_em[keep], e_had[keep], total[keep]
    emfrac = e_em / total
    c_eta = t_eta[keep] + emfrac * em_deta[keep]
    c_phi = _wrap(t_phi[keep] + emfrac * em_dphi[keep])
    c_pt = total / np.cosh(c_eta)
    m = int(keep.sum())
    zeros = np.zeros(m)
    return Particles(
        event=event[keep],
        px=c_pt * np.cos(c_phi),
        py=c_pt * np.sin(c_phi),
        pz=c_pt * np.sinh(c_eta),
        e=total,
        pid=np.where(emfrac >= 0.5, 22, 130).astype(np.int32),
        charge=zeros.astype(np.float32),
        d0=zeros,
        dz=zeros,
        d0err=zeros,
        dzerr=zeros,
        kind=np.full(m, KIND_CLUSTER, dtype=np.int32),
        emfrac=emfrac,
        hadfrac=e_had / total,
    )


def simple_detector(p: Particles, rng: np.random.Generator) -> Particles:
    """Apply the parametrised detector (module docstring) to the particles of a whole batch."""
    trk, tracked = tracks(p, rng)
    calo = clusters(p, ~tracked, em_share(p, rng), rng)
    merged = {
        name: np.concatenate([getattr(x, name) for x in (trk, calo)])
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
