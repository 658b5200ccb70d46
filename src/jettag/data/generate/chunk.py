"""One chunk of one class: a fresh Pythia run that yields exactly ``n_jets`` accepted jets.

A chunk is the unit of work, of seeding and of resuming: its Pythia seed is a function of (run
seed, shard, class, chunk) only, so a chunk comes out identical whichever worker makes it, in
whatever order, and a resumed run regenerates exactly the chunks it lacks. A chunk starts from a
fresh ``Pythia.init()`` (about half a second) rather than re-seeding a running instance, because
Pythia adapts internal state (phase-space maxima) as it runs, which would make a chunk depend on the
chunks generated before it in the same process.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import awkward as ak
import numpy as np

from jettag.data.generate.clustering import Jets, cluster, in_window, leading_jets, may_hold_jet
from jettag.data.generate.detector import apply_detector
from jettag.data.generate.particles import Particles, visible_final_state
from jettag.data.generate.pythia import (
    ChargeTable,
    FlatEvents,
    GenerationError,
    cross_section,
    make_pythia,
    next_events,
)
from jettag.data.generate.recipes import Recipe, pythia_settings
from jettag.data.generate.truth import (
    Resonances,
    contained_resonance_events,
    count_b_hadrons,
    find_resonances,
    flavour_ok,
    hard_parton_veto,
    jet_decay_products,
    matched_resonance,
)
from jettag.data.store import make_jets
from jettag.physics import kinematics as kin

# Particles beyond the jet window's |eta| + R + this margin cannot end up in a selected jet.
ETA_MARGIN = 1.0
MIN_BATCH, MAX_BATCH = 20, 400


@dataclass
class ChunkResult:
    jets: ak.Array
    stats: dict


def _gather(parts: Particles, jets: Jets) -> dict[str, np.ndarray]:
    idx = jets.constituents
    return {
        "px": parts.px[idx],
        "py": parts.py[idx],
        "pz": parts.pz[idx],
        "e": parts.e[idx],
        "pid": parts.pid[idx],
        "charge": parts.charge[idx],
        "d0": parts.d0[idx],
        "dz": parts.dz[idx],
        "d0err": parts.d0err[idx],
        "dzerr": parts.dzerr[idx],
        "kind": parts.kind[idx],
        "emfrac": parts.emfrac[idx],
        "hadfrac": parts.hadfrac[idx],
        "counts": jets.counts,
        "jet_px": jets.px,
        "jet_py": jets.py,
        "jet_pz": jets.pz,
        "jet_e": jets.e,
    }


def _event_columns(ev: FlatEvents, jets: Jets, n_per_event: int, first_event: int) -> dict[str, np.ndarray]:
    """Per stored jet of an event recipe: the event's number, the jet's rank and the jets' system.

    ``event_index`` counts Pythia events within the chunk (``first_event`` is the batch's first);
    ``event_truth_mass`` is the mass of the heavy Higgs (PDG 35, its first copy in the record, as
    produced) of a signal event, 0 otherwise.
    """
    n_events = len(jets.event) // n_per_event
    system = [getattr(jets, c).reshape(n_events, n_per_event).sum(axis=1) for c in ("px", "py", "pz", "e")]
    per_jet = [np.repeat(c, n_per_event) for c in system]
    heavy = np.flatnonzero(np.abs(ev.pid) == 35)
    truth_mass = np.zeros(ev.n_events)
    ev_of_heavy = ev.event[heavy]
    first_copy = heavy[np.r_[True, ev_of_heavy[1:] != ev_of_heavy[:-1]]] if len(heavy) else heavy
    p4 = (ev.px[first_copy], ev.py[first_copy], ev.pz[first_copy], ev.e[first_copy])
    truth_mass[ev.event[first_copy]] = kin.mass(*p4)
    return {
        "event_index": first_event + jets.event,
        "event_jet_index": np.tile(np.arange(n_per_event), n_events),
        "event_pt": kin.pt(per_jet[0], per_jet[1]),
        "event_eta": kin.eta(*per_jet[:3]),
        "event_phi": kin.phi(per_jet[0], per_jet[1]),
        "event_energy": per_jet[3],
        "event_mass": kin.mass(*per_jet),
        "event_truth_mass": truth_mass[jets.event],
    }


def _truth(recipe: Recipe, class_index: int, ev: FlatEvents, jets: Jets, res: Resonances | None
           ) -> dict[str, np.ndarray]:
    """The decay products of each selected jet's matched resonance (the store's ``truth_*`` fields):
    ``truth_counts`` per jet and flat pid, mother, pT, eta, phi; no products for jets of a class
    without a resonance match (and for event recipes)."""
    spec = recipe.classes[class_index]
    resonance = np.full(len(jets.event), -1, dtype=np.int64)
    if res is not None and spec.match is not None and recipe.event is None and len(jets.event):
        eta = kin.eta(jets.px, jets.py, jets.pz)
        phi = kin.phi(jets.px, jets.py)
        resonance = matched_resonance(jets.event, eta, phi, res, spec.match, recipe.radius, ev.n_events)
    if res is None:
        counts, idx = np.zeros(len(jets.event), dtype=np.int64), np.zeros(0, dtype=np.int64)
        pid = mother = pt = eta_p = phi_p = np.zeros(0)
    else:
        counts, idx = jet_decay_products(res, resonance)
        pid, mother, pt = res.product_pid[idx], res.product_mother[idx], res.product_pt[idx]
        eta_p, phi_p = res.product_eta[idx], res.product_phi[idx]
    return {"truth_counts": counts, "truth_pid": pid, "truth_mother": mother, "truth_pt": pt,
            "truth_eta": eta_p, "truth_phi": phi_p}


def _select(recipe: Recipe, class_index: int, ev: FlatEvents, jets: Jets, res: Resonances | None) -> Jets:
    """The jets of this batch that belong to the class (for an event recipe: its events' leading jets)."""
    if recipe.event is not None:
        return jets.take(leading_jets(jets, recipe.event, recipe.abs_eta_max))
    spec = recipe.classes[class_index]
    keep = in_window(
        jets, recipe.pt_min, recipe.pt_max, recipe.abs_eta_max, recipe.use_rapidity, recipe.leading_only
    )
    cand = np.flatnonzero(keep)
    if len(cand) and (spec.match is not None or spec.flavour is not None):
        eta = kin.eta(jets.px[cand], jets.py[cand], jets.pz[cand])
        phi = kin.phi(jets.px[cand], jets.py[cand])
        ok = np.ones(len(cand), dtype=bool)
        if spec.match is not None:
            matched = matched_resonance(jets.event[cand], eta, phi, res, spec.match, recipe.radius,
                                        ev.n_events)
            ok &= matched >= 0
        if spec.flavour is not None:
            ok &= flavour_ok(jets.event[cand], eta, phi, ev, spec.flavour, recipe.radius)
        keep[cand[~ok]] = False
    return jets.select(keep)


def generate_chunk(
    recipe: Recipe,
    class_index: int,
    n_jets: int,
    pythia_seed: int,
    detector: str = "none",
    detector_seed: int = 0,
    mpi: bool | None = None,
    variant: int = 0,
) -> ChunkResult:
    """Generate events until ``n_jets`` jets of class ``class_index`` pass; return them as canonical jets.

    For an event recipe ``n_jets`` counts events, each stored as its leading jets. Jets (events)
    beyond ``n_jets`` from the last batch are dropped in event order, so the count is exact.
    Statistics (events, Pythia's cross section, time inside Pythia) go into ``stats``.
    """
    spec = recipe.classes[class_index]
    per_unit = recipe.event.n_jets if recipe.event is not None else 1  # stored jets per counted unit
    settings = pythia_settings(recipe, spec, pythia_seed, mpi, variant)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    pythia = make_pythia(settings)
    init_s = time.perf_counter() - start
    charges = ChargeTable(pythia)
    rng = np.random.default_rng(detector_seed)
    pieces: list[dict[str, np.ndarray]] = []
    n_have = n_events = 0
    max_events = max(200_000, 5_000 * n_jets)
    while n_have < n_jets:
        # batch size from the efficiency so far: few wasted events at the end, few calls early on
        eff = (n_have + 1) / (n_events + 1) if n_events else 0.5
        batch = int(np.clip(math.ceil(1.2 * (n_jets - n_have) / max(eff, 1e-3)), MIN_BATCH, MAX_BATCH))
        ev = next_events(pythia, batch, timings)
        parts = visible_final_state(ev, charges, recipe.abs_eta_max + recipe.radius + ETA_MARGIN)
        if spec.hard_partons is not None:  # process-labelled classes: the event's parton decides
            parts = parts.take(~hard_parton_veto(ev, spec.hard_partons)[parts.event])
        # the detector sees every event (its random numbers then do not depend on the filters below)
        parts = apply_detector(detector, parts, rng)
        # events that cannot yield a jet of the class are not clustered
        event_ok = may_hold_jet(parts, ev.n_events, recipe.radius, recipe.pt_min, recipe.abs_eta_max)
        res = find_resonances(ev) if spec.match is not None else None
        if res is not None:
            event_ok &= contained_resonance_events(res, spec.match, recipe.radius, ev.n_events)
        if not event_ok.all():
            parts = parts.take(event_ok[parts.event])
        jets = cluster(parts, ev.n_events, recipe.radius, recipe.pt_min)
        jets = _select(recipe, class_index, ev, jets, res)
        if len(jets.event):
            piece = _gather(parts, jets)
            piece.update(_truth(recipe, class_index, ev, jets, res))
            if recipe.event is not None:
                piece.update(_event_columns(ev, jets, per_unit, n_events))
                jet_eta, jet_phi = kin.eta(jets.px, jets.py, jets.pz), kin.phi(jets.px, jets.py)
                piece["jet_nbhadrons"] = count_b_hadrons(jets.event, jet_eta, jet_phi, ev, recipe.radius)
            pieces.append(piece)
            n_have += len(jets.event) // per_unit
        n_events += ev.n_events
        if n_events >= max_events and n_have < n_jets:
            raise GenerationError(
                f"recipe {recipe.name!r}, class {spec.name!r}: only {n_have} of {n_jets} jets after "
                f"{n_events} events; the process settings do not reach the jet window"
            )
    flat = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    n_rows = n_jets * per_unit
    counts = flat["counts"][:n_rows]
    n_parts = int(counts.sum())

    def jag(name: str, dtype=np.float32) -> ak.Array:
        return ak.unflatten(flat[name][:n_parts].astype(dtype), counts)

    detector_fields = {}
    if detector != "none":  # what each constituent is (track / cluster) and a cluster's layer shares
        detector_fields = {
            "part_kind": jag("kind", np.int32),
            "part_emfrac": jag("emfrac"),
            "part_hadfrac": jag("hadfrac"),
        }
    event_columns = {k: v[:n_rows] for k, v in flat.items() if k.startswith("event_") or k == "jet_nbhadrons"}
    truth_counts = flat["truth_counts"][:n_rows]
    n_truth = int(truth_counts.sum())
    truth = {
        k: ak.unflatten(
            flat[k][:n_truth].astype(np.int32 if k in ("truth_pid", "truth_mother") else np.float32),
            truth_counts,
        )
        for k in ("truth_pid", "truth_mother", "truth_pt", "truth_eta", "truth_phi")
    }
    jets_out = make_jets(
        jag("px"),
        jag("py"),
        jag("pz"),
        jag("e"),
        label=np.full(n_rows, class_index, dtype=np.int32),
        pid=jag("pid", np.int32),
        charge=jag("charge"),
        extra_particle={
            "part_d0val": jag("d0"),
            "part_d0err": jag("d0err"),
            "part_dzval": jag("dz"),
            "part_dzerr": jag("dzerr"),
            **detector_fields,
        },
        extra_jet={
            k: v.astype(np.int32 if k in ("event_index", "event_jet_index", "jet_nbhadrons") else np.float32)
            for k, v in event_columns.items()
        },
        jet_p4=tuple(flat[k][:n_rows] for k in ("jet_px", "jet_py", "jet_pz", "jet_e")),
        extra_jagged=truth,
    )
    total_s = time.perf_counter() - start
    stats = {
        "class": spec.name,
        "jets": n_jets,
        "stored_jets": n_rows,
        "events": n_events,
        "pythia_seed": pythia_seed,
        "settings": settings,
        **cross_section(pythia),
        "seconds_total": total_s,
        "seconds_init": init_s,
        "seconds_pythia": timings.get("pythia", 0.0),
    }
    return ChunkResult(jets_out, stats)
