"""Anti-kT clustering of many events in one FastJet call, and the selection of jets in a window.

fastjet's awkward interface clusters a whole batch of events in C++ in one call and returns each
jet's constituent indices, so no Python runs per particle or per jet.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import awkward as ak
import numpy as np

from jettag.data.generate.particles import Particles
from jettag.data.generate.recipes import EventSelection
from jettag.physics import kinematics as kin

_fastjet_ready = False


@contextmanager
def _quiet_stdout():
    """Send C++ stdout to /dev/null (FastJet prints its banner there on first use)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


@dataclass
class Jets:
    """Clustered jets of a batch: per jet its event, FastJet 4-vector and constituent indices.

    ``constituents`` are row indices into the ``Particles`` that were clustered, grouped per jet by
    ``counts``; jets are sorted by event.
    """

    event: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    counts: np.ndarray
    constituents: np.ndarray

    @property
    def pt(self) -> np.ndarray:
        return kin.pt(self.px, self.py)

    def select(self, keep: np.ndarray) -> Jets:
        """The jets where ``keep`` is True, with their constituents."""
        return self.take(np.flatnonzero(keep))

    def take(self, index: np.ndarray) -> Jets:
        """The jets ``index`` in that order, with their constituents."""
        counts = self.counts[index]
        starts = np.cumsum(self.counts) - self.counts
        # position of every kept constituent: its jet's start in the old list plus its rank in the jet
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return Jets(
            self.event[index],
            self.px[index],
            self.py[index],
            self.pz[index],
            self.e[index],
            counts,
            self.constituents[np.repeat(starts[index], counts) + within],
        )


# Fraction of a jet's pT allowed to come from constituents beyond the 3x3 block of cells around its
# axis (anti-kT constituents lie within R of the axis they joined; the final axis moves little).
BLOCK_ALLOWANCE = 0.1


def may_hold_jet(
    parts: Particles, n_events: int, radius: float, pt_min: float, abs_eta_max: float
) -> np.ndarray:
    """Per event: False when it cannot yield an anti-kT jet with pT >= ``pt_min``, |eta| < ``abs_eta_max``.

    A jet's constituents lie within R of its axis, so its pT is at most the scalar pT sum of the
    particles in the 3x3 block of (eta, phi) cells of size >= R centred on the axis's cell. Events
    whose largest block sum (over centres up to |eta| < abs_eta_max + R) stays below
    ``(1 - BLOCK_ALLOWANCE) * pt_min`` are not clustered: FastJet is the costliest step after Pythia,
    and with MPI off about half the events of a recipe have no jet in reach of the window. The
    filter only saves work: the generation tests check that it leaves the selected jets unchanged.
    """
    n_phi = max(3, int(2 * np.pi / radius))  # cells of width 2 pi / n_phi >= R
    half = abs_eta_max + 2.5 * radius  # block centres to |eta| < abs_eta_max + R, blocks 1.5 R further
    n_eta = int(np.ceil(2 * half / radius))
    pt = np.hypot(parts.px, parts.py)
    eta = np.arcsinh(parts.pz / np.where(pt > 0, pt, 1.0))
    inside = np.abs(eta) < half
    ieta = ((eta[inside] + half) / radius).astype(np.int64)
    iphi = ((np.arctan2(parts.py[inside], parts.px[inside]) + np.pi) * (n_phi / (2 * np.pi))).astype(np.int64)
    iphi %= n_phi
    flat = (parts.event[inside] * n_eta + ieta) * n_phi + iphi
    grid = np.bincount(flat, weights=pt[inside], minlength=n_events * n_eta * n_phi)
    grid = np.pad(grid.reshape(n_events, n_eta, n_phi), ((0, 0), (1, 1), (0, 0)))
    rows = grid[:, :-2] + grid[:, 1:-1] + grid[:, 2:]  # eta neighbours (zero beyond the range)
    blocks = rows + np.roll(rows, 1, axis=2) + np.roll(rows, -1, axis=2)  # phi wraps around
    return blocks.max(axis=(1, 2), initial=0.0) >= (1 - BLOCK_ALLOWANCE) * pt_min


def warm_up() -> None:
    """Load FastJet's awkward interface (it imports ``vector``, ~0.5 s) and swallow its banner.

    Process set-up, done once per worker before any chunk starts its clock, so chunk timings and the
    "share outside Pythia" measure per-event work only.
    """
    global _fastjet_ready
    if _fastjet_ready:
        return
    import fastjet

    one = ak.Array([[{"px": 1.0, "py": 0.0, "pz": 0.0, "E": 2.0}]], with_name="Momentum4D")
    with _quiet_stdout():  # FastJet prints its banner to C++ stdout on first use
        fastjet.ClusterSequence(one, fastjet.JetDefinition(fastjet.antikt_algorithm, 0.4)).inclusive_jets()
    _fastjet_ready = True


def cluster(parts: Particles, n_events: int, radius: float, min_pt: float) -> Jets:
    """Anti-kT(R) jets with pT >= ``min_pt`` of every event of the batch (E-scheme recombination)."""
    warm_up()
    import fastjet

    counts = np.bincount(parts.event, minlength=n_events)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    record = ak.zip({"px": parts.px, "py": parts.py, "pz": parts.pz, "E": parts.e}, with_name="Momentum4D")
    events = ak.unflatten(record, counts)
    seq = fastjet.ClusterSequence(events, fastjet.JetDefinition(fastjet.antikt_algorithm, radius))
    jets = seq.inclusive_jets(min_pt)
    index = seq.constituent_index(min_pt)
    n_per_event = ak.to_numpy(ak.num(jets, axis=1))
    flat_jets = ak.flatten(jets, axis=1)
    jet_event = np.repeat(np.arange(n_events), n_per_event)
    per_jet = ak.flatten(index, axis=1)
    n_const = ak.to_numpy(ak.num(per_jet, axis=1)).astype(np.int64)
    local = ak.to_numpy(ak.flatten(per_jet, axis=1)).astype(np.int64)
    const = local + np.repeat(offsets[jet_event], n_const)
    return Jets(
        event=jet_event,
        px=ak.to_numpy(flat_jets["px"]).astype(np.float64),
        py=ak.to_numpy(flat_jets["py"]).astype(np.float64),
        pz=ak.to_numpy(flat_jets["pz"]).astype(np.float64),
        e=ak.to_numpy(flat_jets["E"]).astype(np.float64),
        counts=n_const,
        constituents=const,
    )


def leading_jets(jets: Jets, selection: EventSelection, abs_eta_max: float) -> np.ndarray:
    """Indices of the leading jets of every event that passes ``selection``, event by event, leading first.

    Only jets within ``|eta| < abs_eta_max`` count; an event passes when its n leading ones exist,
    each above its own pT threshold and all inside the mass window.
    """
    n = selection.n_jets
    central = np.flatnonzero(np.abs(kin.eta(jets.px, jets.py, jets.pz)) < abs_eta_max)
    pt = jets.pt
    order = central[np.lexsort((-pt[central], jets.event[central]))]  # by event, then pT descending
    event = jets.event[order]
    first = np.flatnonzero(np.r_[True, event[1:] != event[:-1]])  # no jets: [0] with size 0 below
    size = np.diff(np.r_[first, len(order)])
    idx = order[first[size >= n][:, None] + np.arange(n)]  # (events, n) jet indices
    mass = kin.mass(jets.px[idx], jets.py[idx], jets.pz[idx], jets.e[idx])
    good = (pt[idx] >= np.asarray(selection.pt_min)).all(axis=1)
    good &= ((mass > selection.mass_min) & (mass < selection.mass_max)).all(axis=1)
    return idx[good].ravel()


def in_window(
    jets: Jets, pt_min: float, pt_max: float, abs_eta_max: float, use_rapidity: bool, leading_only: bool
) -> np.ndarray:
    """Jets in the pT window and |eta| (or |y|) range; with ``leading_only`` the event's hardest jet only."""
    pt = jets.pt
    if use_rapidity:
        centre = kin.rapidity(jets.pz, jets.e)
    else:
        centre = kin.eta(jets.px, jets.py, jets.pz)
    keep = (pt >= pt_min) & (pt < pt_max) & (np.abs(centre) < abs_eta_max)
    if leading_only and len(pt):
        # jets are listed per event; the hardest of each event is where pT equals the event maximum
        n_events = int(jets.event.max()) + 1
        best = np.full(n_events, -np.inf)
        np.maximum.at(best, jets.event, pt)
        keep &= pt == best[jets.event]
    return keep
