"""Physically valid random jets for format and feature tests (not a physics generator).

Each jet is a bundle of massless or massive constituents scattered around a random jet axis, so
every 4-vector is on shell with E >= |p|, pT is positive and the jet has a well-defined axis.
Physics tests use real Pythia jets instead (see the generation fixtures).
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from jettag.data.store import make_jets
from jettag.physics import kinematics as kin

PIDS = np.array([211, -211, 321, -321, 2212, -2212, 130, 2112, 22, 11, -11, 13, -13])
CHARGE = {211: 1, -211: -1, 321: 1, -321: -1, 2212: 1, -2212: -1, 130: 0, 2112: 0, 22: 0,
          11: -1, -11: 1, 13: -1, -13: 1}
MASS = {211: 0.13957, 321: 0.49368, 2212: 0.93827, 130: 0.49761, 2112: 0.93957, 22: 0.0,
        11: 0.000511, 13: 0.10566}


def random_jets(n: int = 50, seed: int = 0, min_len: int = 1, max_len: int = 150, n_classes: int = 2,
                with_impact: bool = False) -> ak.Array:
    rng = np.random.default_rng(seed)
    counts = rng.integers(min_len, max_len + 1, size=n)
    total = int(counts.sum())
    jet_pt = rng.uniform(500, 700, size=n)
    jet_eta = rng.uniform(-2, 2, size=n)
    jet_phi = rng.uniform(-np.pi, np.pi, size=n)
    rep = np.repeat(np.arange(n), counts)
    frac = rng.exponential(1.0, size=total) ** 2 + 1e-3
    pt = jet_pt[rep] * frac / np.bincount(rep, weights=frac)[rep]
    eta = jet_eta[rep] + rng.normal(0, 0.25, size=total)
    phi = kin.delta_phi(jet_phi[rep] + rng.normal(0, 0.25, size=total), 0.0)
    pid = rng.choice(PIDS, size=total)
    m = np.array([MASS[abs(p)] for p in pid])
    charge = np.array([CHARGE[p] for p in pid], dtype=np.float32)
    px, py, pz, e = kin.from_pt_eta_phi_m(pt, eta, phi, m)
    unflat = lambda x: ak.unflatten(x, counts)  # noqa: E731
    extra = None
    if with_impact:
        d0 = np.where(charge != 0, rng.normal(0, 0.05, size=total), 0.0)
        dz = np.where(charge != 0, rng.normal(0, 0.08, size=total), 0.0)
        extra = {"part_d0val": unflat(d0), "part_d0err": unflat(np.abs(d0) * 0.1 + 0.01),
                 "part_dzval": unflat(dz), "part_dzerr": unflat(np.abs(dz) * 0.1 + 0.02)}
    return make_jets(unflat(px), unflat(py), unflat(pz), unflat(e),
                     label=rng.integers(0, n_classes, size=n), pid=unflat(pid), charge=unflat(charge),
                     extra_particle=extra)
