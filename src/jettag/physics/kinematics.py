"""Four-vector kinematics shared by every part of jettag.

Each function takes arrays of any shape and works on numpy arrays, awkward arrays (through numpy's
ufunc dispatch) and torch tensors alike; the feature builder, the readers, the generator and the
tests use them. No per-particle loops. The pair features (``physics/pairs.py``) write their own
float32 expressions, in weaver-core's order of operations so that weaver-trained weights see the
same numbers; they agree with these functions within float32 rounding.

Conventions: momenta in GeV, phi in [-pi, pi), pseudorapidity eta = asinh(pz / pT), rapidity
y = 0.5 ln((E + pz) / (E - pz)).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

# Smallest transverse momentum / energy difference used to keep eta and rapidity finite for
# massless particles along the beam or for padded (all-zero) entries.
_TINY = 1e-20


def _xp(x: Any):
    """The array library that owns ``x`` (torch for tensors, numpy for numpy and awkward arrays)."""
    if isinstance(x, torch.Tensor):
        return torch
    return np


def pt(px, py):
    """Transverse momentum sqrt(px^2 + py^2)."""
    return _xp(px).sqrt(px * px + py * py)


def phi(px, py):
    """Azimuth atan2(py, px) in [-pi, pi]."""
    return _xp(px).arctan2(py, px)


def eta(px, py, pz):
    """Pseudorapidity asinh(pz / pT); a particle with pT = 0 gets a large finite value."""
    xp = _xp(px)
    return xp.arcsinh(pz / xp.clip(pt(px, py), _TINY, None))


def rapidity(pz, energy):
    """Rapidity 0.5 ln((E + pz) / (E - pz)), with both arguments kept positive."""
    xp = _xp(pz)
    return 0.5 * xp.log(xp.clip(energy + pz, _TINY, None) / xp.clip(energy - pz, _TINY, None))


def mass2(px, py, pz, energy):
    """Invariant mass squared E^2 - |p|^2 (can be slightly negative from rounding)."""
    return energy * energy - (px * px + py * py + pz * pz)


def mass(px, py, pz, energy):
    """Invariant mass sqrt(max(m^2, 0))."""
    return _xp(px).sqrt(_xp(px).clip(mass2(px, py, pz, energy), 0, None))


def delta_phi(phi_a, phi_b):
    """phi_a - phi_b wrapped to [-pi, pi)."""
    return _xp(phi_a).remainder(phi_a - phi_b + math.pi, 2 * math.pi) - math.pi


def delta_r(eta_a, phi_a, eta_b, phi_b):
    """Angular distance hypot(d eta, d phi) with the azimuth difference wrapped."""
    return _xp(eta_a).hypot(eta_a - eta_b, delta_phi(phi_a, phi_b))


def from_pt_eta_phi_m(pt_, eta_, phi_, m):
    """(px, py, pz, E) from (pT, eta, phi, m)."""
    xp = _xp(pt_)
    px = pt_ * xp.cos(phi_)
    py = pt_ * xp.sin(phi_)
    pz = pt_ * xp.sinh(eta_)
    energy = xp.sqrt(px * px + py * py + pz * pz + m * m)
    return px, py, pz, energy


def from_pt_y_phi_m(pt_, y, phi_, m):
    """(px, py, pz, E) from (pT, rapidity y, phi, m): mT = sqrt(pT^2 + m^2), E = mT cosh y."""
    xp = _xp(pt_)
    mt = xp.sqrt(pt_ * pt_ + m * m)
    return pt_ * xp.cos(phi_), pt_ * xp.sin(phi_), mt * xp.sinh(y), mt * xp.cosh(y)
