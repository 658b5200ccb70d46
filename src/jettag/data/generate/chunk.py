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

from jettag.data.generate.clustering import Jets, cluster, in_window
from jettag.data.generate.detector import apply_detector
from jettag.data.generate.particles import Particles, visible_final_state
from jettag.data.generate.pythia import ChargeTable, GenerationError, cross_section, make_pythia, next_events
from jettag.data.generate.recipes import Recipe, pythia_settings
from jettag.data.generate.truth import find_resonances, hard_parton_veto, match_jets
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
        "counts": jets.counts,
        "jet_px": jets.px,
        "jet_py": jets.py,
        "jet_pz": jets.pz,
        "jet_e": jets.e,
    }


def _select(recipe: Recipe, class_index: int, parts: Particles, ev, jets: Jets) -> np.ndarray:
    spec = recipe.classes[class_index]
    keep = in_window(
        jets, recipe.pt_min, recipe.pt_max, recipe.abs_eta_max, recipe.use_rapidity, recipe.leading_only
    )
    if spec.match is not None and keep.any():
        res = find_resonances(ev)
        cand = np.flatnonzero(keep)
        eta = kin.eta(jets.px[cand], jets.py[cand], jets.pz[cand])
        phi = kin.phi(jets.px[cand], jets.py[cand])
        ok = match_jets(jets.event[cand], eta, phi, res, spec.match, recipe.radius, ev.n_events)
        keep[cand[~ok]] = False
    return keep


def generate_chunk(
    recipe: Recipe,
    class_index: int,
    n_jets: int,
    pythia_seed: int,
    detector: str = "none",
    detector_seed: int = 0,
    mpi: bool | None = None,
) -> ChunkResult:
    """Generate events until ``n_jets`` jets of class ``class_index`` pass; return them as canonical jets.

    Jets beyond ``n_jets`` from the last batch are dropped (in event order), so the count is exact.
    Statistics (events, Pythia's cross section, time inside Pythia) go into ``stats``.
    """
    spec = recipe.classes[class_index]
    settings = pythia_settings(recipe, spec, pythia_seed, mpi)
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
        n_events += ev.n_events
        parts = visible_final_state(ev, charges, recipe.abs_eta_max + recipe.radius + ETA_MARGIN)
        if spec.hard_partons is not None:
            parts = parts.take(~hard_parton_veto(ev, spec.hard_partons)[parts.event])
        parts = apply_detector(detector, parts, rng)
        jets = cluster(parts, ev.n_events, recipe.radius, recipe.pt_min)
        jets = jets.select(_select(recipe, class_index, parts, ev, jets))
        if len(jets.event):
            pieces.append(_gather(parts, jets))
            n_have += len(jets.event)
        if n_events >= max_events and n_have < n_jets:
            raise GenerationError(
                f"recipe {recipe.name!r}, class {spec.name!r}: only {n_have} of {n_jets} jets after "
                f"{n_events} events; the process settings do not reach the jet window"
            )
    flat = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    counts = flat["counts"][:n_jets]
    n_parts = int(counts.sum())

    def jag(name: str, dtype=np.float32) -> ak.Array:
        return ak.unflatten(flat[name][:n_parts].astype(dtype), counts)

    jets_out = make_jets(
        jag("px"),
        jag("py"),
        jag("pz"),
        jag("e"),
        label=np.full(n_jets, class_index, dtype=np.int32),
        pid=jag("pid", np.int32),
        charge=jag("charge"),
        extra_particle={
            "part_d0val": jag("d0"),
            "part_d0err": jag("d0err"),
            "part_dzval": jag("dz"),
            "part_dzerr": jag("dzerr"),
        },
        jet_p4=tuple(flat[k][:n_jets] for k in ("jet_px", "jet_py", "jet_pz", "jet_e")),
    )
    total_s = time.perf_counter() - start
    stats = {
        "class": spec.name,
        "jets": n_jets,
        "events": n_events,
        "pythia_seed": pythia_seed,
        "settings": settings,
        **cross_section(pythia),
        "seconds_total": total_s,
        "seconds_init": init_s,
        "seconds_pythia": timings.get("pythia", 0.0),
    }
    return ChunkResult(jets_out, stats)
