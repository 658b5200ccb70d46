"""Visible final-state particles of a batch, with charges and track impact parameters.

Impact parameters come from Pythia's production vertices (mm), with the beam line at the origin:
``d0 = (x py - y px) / pT`` (signed transverse distance of closest approach of the straight-line
track) and ``dz = z - (x px + y py) / pT * pz / pT`` (its longitudinal position there). Particles
from the primary vertex have exactly zero; daughters of b and c hadrons carry the hadron's flight.
Tracks are straight lines: at jet-constituent momenta the bending over a few mm is negligible.

``kind``, ``emfrac``, ``hadfrac`` describe what a detector made of a particle: ``KIND_PARTICLE`` (-1)
at particle level, ``KIND_TRACK`` (0) or ``KIND_CLUSTER`` (1, with the cluster's EM and hadronic
energy fractions) after ``--detector simple`` (``detector.py``); fractions are 0 for non-clusters.

At particle level the values are exact and ``d0err``/``dzerr`` are the nominal resolution of a
tracker at the particle's pT (``d0_resolution``, ``dz_resolution``), not smeared: the ``full``
features need an error, and a constant one misleads models trained on detector-level tracks, whose
error falls with pT.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from jettag.data.generate.pythia import ChargeTable, FlatEvents
from jettag.data.generate.recipes import NEUTRINOS
from jettag.data.store import KIND_CLUSTER, KIND_TRACK

__all__ = ["KIND_CLUSTER", "KIND_PARTICLE", "KIND_TRACK", "Particles", "visible_final_state"]

# Impact-parameter resolution of a silicon tracker, in mm, vs pT in GeV: a constant term (hit
# resolution) in quadrature with multiple scattering ~ 1/pT. The values are tuned to what the reference
# JetClass-trained ``full`` ParticleNet expects (benchmarks/realism.md: with half these values, or a
# constant error, that model misreads light-quark and gluon jets, e.g. Zqq vs QCD AUC 0.64 -> 0.97).
D0_RES_MM = (0.020, 0.200)
KIND_PARTICLE = -1  # particle level; detector-level kinds (track, cluster) are the store's
DZ_RES_MM = (0.060, 0.300)


def d0_resolution(pt: np.ndarray) -> np.ndarray:
    """sigma(d0) in mm = 0.020 (+) 0.200 / pT."""
    return np.hypot(D0_RES_MM[0], D0_RES_MM[1] / np.clip(pt, 1e-3, None))


def dz_resolution(pt: np.ndarray) -> np.ndarray:
    """sigma(dz) in mm = 0.060 (+) 0.300 / pT."""
    return np.hypot(DZ_RES_MM[0], DZ_RES_MM[1] / np.clip(pt, 1e-3, None))


@dataclass
class Particles:
    """Flat per-particle columns of a batch, sorted by ``event``."""

    event: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    pid: np.ndarray
    charge: np.ndarray
    d0: np.ndarray
    dz: np.ndarray
    d0err: np.ndarray
    dzerr: np.ndarray
    kind: np.ndarray
    emfrac: np.ndarray
    hadfrac: np.ndarray

    def take(self, index: np.ndarray) -> Particles:
        """The subset ``index`` (a boolean mask or sorted indices), all columns alike."""
        return Particles(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def __len__(self) -> int:
        return len(self.event)


def impact_parameters(vx, vy, vz, px, py, pz) -> tuple[np.ndarray, np.ndarray]:
    """(d0, dz) in mm of straight tracks from production vertices; see the module docstring."""
    pt = np.hypot(px, py)
    safe = np.where(pt > 0, pt, 1.0)
    d0 = (vx * py - vy * px) / safe
    dz = vz - (vx * px + vy * py) / safe * (pz / safe)
    return d0, dz


def visible_final_state(ev: FlatEvents, charges: ChargeTable, abs_eta_max: float) -> Particles:
    """Final-state particles other than neutrinos within ``|eta| < abs_eta_max``.

    The eta cut only drops beam-remnant debris that cannot belong to a jet in the kinematic window
    (the caller passes the jet window plus R plus a margin); it makes clustering several times faster.
    """
    # final state first (a third of the record), then |eta| < a as |pz| < pT sinh(a): no arcsinh
    # (a >= 50 is no cut: no particle gets there, and sinh(a) would overflow)
    final = np.flatnonzero(ev.status > 0)
    px, py, pz = ev.px[final], ev.py[final], ev.pz[final]
    pt = np.hypot(px, py)
    visible = ~np.isin(np.abs(ev.pid[final]), NEUTRINOS)
    keep_final = visible & (pt > 0) & (np.abs(pz) < pt * np.sinh(min(abs_eta_max, 50.0)))
    keep = final[keep_final]
    pt = pt[keep_final]
    pid = ev.pid[keep]
    charge = charges(pid)
    d0, dz = impact_parameters(ev.vx[keep], ev.vy[keep], ev.vz[keep], ev.px[keep], ev.py[keep], ev.pz[keep])
    charged = charge != 0
    return Particles(
        event=ev.event[keep],
        px=ev.px[keep],
        py=ev.py[keep],
        pz=ev.pz[keep],
        e=ev.e[keep],
        pid=pid,
        charge=charge,
        d0=np.where(charged, d0, 0.0),
        dz=np.where(charged, dz, 0.0),
        d0err=np.where(charged, d0_resolution(pt), 0.0),
        dzerr=np.where(charged, dz_resolution(pt), 0.0),
        kind=np.full(len(keep), KIND_PARTICLE, dtype=np.int32),
        emfrac=np.zeros(len(keep)),
        hadfrac=np.zeros(len(keep)),
    )
