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
from jettag.physics import kinematics as kin

_banner_shown = False


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
        per_particle = np.repeat(keep, self.counts)
        return Jets(
            self.event[keep],
            self.px[keep],
            self.py[keep],
            self.pz[keep],
            self.e[keep],
            self.counts[keep],
            self.constituents[per_particle],
        )


def cluster(parts: Particles, n_events: int, radius: float, min_pt: float) -> Jets:
    """Anti-kT(R) jets with pT >= ``min_pt`` of every event of the batch (E-scheme recombination)."""
    global _banner_shown
    import fastjet

    counts = np.bincount(parts.event, minlength=n_events)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    record = ak.zip({"px": parts.px, "py": parts.py, "pz": parts.pz, "E": parts.e}, with_name="Momentum4D")
    events = ak.unflatten(record, counts)
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, radius)
    if _banner_shown:
        seq = fastjet.ClusterSequence(events, jetdef)
    else:
        with _quiet_stdout():
            seq = fastjet.ClusterSequence(events, jetdef)
        _banner_shown = True
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
