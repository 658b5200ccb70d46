"""Truth matching of jets to the boosted resonance (top, W, Z, H) that made them, on flat arrays.

A resonance's visible decay products are the hard-process partons and leptons (``|status| = 23``)
whose mother chain leads back to it (through intermediate W bosons and through the recoil copies
the shower makes of every resonance). Following ``mother1`` once per generation over all particles
of a batch at once keeps this columnar: the decay chains are at most a few steps deep.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jettag.data.generate.pythia import FlatEvents
from jettag.data.generate.recipes import CHARGED_LEPTONS, NEUTRINOS, QUARKS, RESONANCES, Flavour, Match
from jettag.physics import kinematics as kin

_MAX_DEPTH = 32  # longer than any copy/decay chain Pythia writes for a resonance


@dataclass
class Resonances:
    """The resonances of a batch with their visible decay products.

    Per resonance (the first, hard-process copy): ``event``, ``abs_pid``, the direction of its last
    copy (after recoil) and the number of decay quarks / gluons / charged leptons. Per product:
    ``owner`` (row in the resonance table), ``event`` and its direction, and (for the store's
    ``truth_*`` fields) its signed PDG id, pT and the |PDG id| of its immediate mother (6 for the b of
    a top, 24 for the W's daughters).
    """

    event: np.ndarray
    abs_pid: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    n_quarks: np.ndarray
    n_gluons: np.ndarray
    n_leptons: np.ndarray
    product_owner: np.ndarray
    product_event: np.ndarray
    product_eta: np.ndarray
    product_phi: np.ndarray
    product_pid: np.ndarray | None = None
    product_pt: np.ndarray | None = None
    product_mother: np.ndarray | None = None


def _follow(start: np.ndarray, step: np.ndarray, keep_going) -> np.ndarray:
    """Walk ``step`` from ``start`` while ``keep_going(current, next)`` holds (vectorised over all)."""
    cur = start.copy()
    for _ in range(_MAX_DEPTH):
        nxt = step[cur]
        go = (nxt >= 0) & keep_going(cur, np.where(nxt >= 0, nxt, 0))
        if not go.any():
            return cur
        cur = np.where(go, nxt, cur)
    raise RuntimeError("resonance history deeper than expected; the event record looks malformed")


def find_resonances(ev: FlatEvents) -> Resonances:
    """All resonances in the batch that decayed to visible hard-process products."""
    apid = np.abs(ev.pid)
    is_res = np.isin(apid, RESONANCES)
    mother_ok = ev.mother1 >= 0
    from_res = np.zeros(len(apid), dtype=bool)
    from_res[mother_ok] = is_res[ev.mother1[mother_ok]]
    products = np.flatnonzero((np.abs(ev.status) == 23) & from_res & ~is_res & ~np.isin(apid, NEUTRINOS))
    first = _follow(ev.mother1[products], ev.mother1, lambda cur, nxt: is_res[nxt])
    roots, owner = np.unique(first, return_inverse=True)
    last = _follow(roots, ev.daughter1, lambda cur, nxt: ev.pid[nxt] == ev.pid[cur])
    papid = apid[products]
    n_roots = len(roots)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(owner[mask], minlength=n_roots).astype(np.int32)

    event = ev.event
    return Resonances(
        event=event[roots],
        abs_pid=apid[roots],
        eta=kin.eta(ev.px[last], ev.py[last], ev.pz[last]),
        phi=kin.phi(ev.px[last], ev.py[last]),
        n_quarks=count(np.isin(papid, QUARKS)),
        n_gluons=count(papid == 21),
        n_leptons=count(np.isin(papid, CHARGED_LEPTONS)),
        product_owner=owner,
        product_event=event[products],
        product_eta=kin.eta(ev.px[products], ev.py[products], ev.pz[products]),
        product_phi=kin.phi(ev.px[products], ev.py[products]),
        product_pid=ev.pid[products],
        product_pt=kin.pt(ev.px[products], ev.py[products]),
        product_mother=apid[ev.mother1[products]],
    )


def outgoing_partons(ev: FlatEvents) -> np.ndarray:
    """Flat indices of the outgoing hard-process quarks (top included) and gluons not from a resonance."""
    apid = np.abs(ev.pid)
    is_res = np.isin(apid, RESONANCES)
    from_res = np.zeros(len(apid), dtype=bool)
    ok = ev.mother1 >= 0
    from_res[ok] = is_res[ev.mother1[ok]]
    parton = (np.abs(ev.status) == 23) & ~from_res & (np.isin(apid, (*QUARKS, 6)) | (apid == 21))
    return np.flatnonzero(parton)


def hard_parton_veto(ev: FlatEvents, allowed: tuple[int, ...]) -> np.ndarray:
    """Per event, True when an outgoing hard-process parton (not from a resonance) is not allowed.

    Used for the process-labelled quark/gluon samples: Z + quark events whose quark is a c or b are
    vetoed from the light-quark sample, as in the EnergyFlow data set without heavy flavour.
    """
    partons = outgoing_partons(ev)
    bad = partons[~np.isin(np.abs(ev.pid[partons]), allowed)]
    return np.bincount(ev.event[bad], minlength=ev.n_events) > 0


def ragged_pairs(a_event: np.ndarray, b_event: np.ndarray, n_events: int) -> tuple[np.ndarray, np.ndarray]:
    """All (a, b) index pairs with a and b in the same event; both inputs sorted by event."""
    b_count = np.bincount(b_event, minlength=n_events)
    b_start = np.concatenate([[0], np.cumsum(b_count)[:-1]])
    per_a = b_count[a_event]
    a_idx = np.repeat(np.arange(len(a_event)), per_a)
    # position of each pair within its a-row: 0..per_a-1
    row_start = np.repeat(np.cumsum(per_a) - per_a, per_a)
    within = np.arange(len(a_idx)) - row_start
    b_idx = b_start[a_event[a_idx]] + within
    return a_idx, b_idx


def _kind_ok(res: Resonances, match: Match) -> np.ndarray:
    """Per resonance: the required particle, decayed to exactly the required products."""
    return (
        np.isin(res.abs_pid, match.resonance)
        & (res.n_quarks == match.quarks)
        & (res.n_gluons == match.gluons)
        & (res.n_leptons == match.leptons)
    )


def contained_resonance_events(res: Resonances, match: Match, radius: float, n_events: int) -> np.ndarray:
    """Per event, False when no jet of radius R can be matched to one of its resonances.

    A jet matches when the resonance and each decay product lie within R of its axis, so all of them
    must lie within 2R of each other (triangle inequality in (eta, phi)). Events failing that for
    every resonance of the right kind are dropped before clustering, the most expensive step after
    Pythia, without changing which jets are kept.
    """
    ok = _kind_ok(res, match)
    owner = res.product_owner
    order = np.argsort(owner, kind="stable")
    a, b = ragged_pairs(owner[order], owner[order], len(res.event))  # product pairs of one resonance
    a, b = order[a], order[b]
    far = kin.delta_r(res.product_eta[a], res.product_phi[a], res.product_eta[b], res.product_phi[b])
    far = far >= 2 * radius
    ok[owner[a[far]]] = False
    far = kin.delta_r(res.eta[owner], res.phi[owner], res.product_eta, res.product_phi) >= 2 * radius
    ok[owner[far]] = False
    return np.bincount(res.event[ok], minlength=n_events) > 0


def matched_resonance(
    jet_event: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    res: Resonances,
    match: Match,
    radius: float,
    n_events: int,
) -> np.ndarray:
    """Per jet, the row in ``res`` of the resonance it matches, -1 for none; of several the one
    nearest to the jet axis. A jet matches a resonance of the required kind when the resonance and
    all its decay products lie within R and the decay-product counts equal those of ``match`` (e.g.
    three quarks for a hadronic top), which also rejects a decay that went another way."""
    n_jets, n_res = len(jet_event), len(res.event)
    matched = np.full(n_jets, -1, dtype=np.int64)
    if n_jets == 0 or n_res == 0:
        return matched
    kind_ok = _kind_ok(res, match)
    j, r = ragged_pairs(jet_event, res.event, n_events)
    dr = kin.delta_r(jet_eta[j], jet_phi[j], res.eta[r], res.phi[r])
    near = dr < radius
    # products: any product of resonance r outside the jet disqualifies the pair (jet, r)
    order = np.argsort(res.product_event, kind="stable")
    jp, pp = ragged_pairs(jet_event, res.product_event[order], n_events)
    pp = order[pp]
    far = kin.delta_r(jet_eta[jp], jet_phi[jp], res.product_eta[pp], res.product_phi[pp]) >= radius
    bad_keys = np.unique(jp[far].astype(np.int64) * n_res + res.product_owner[pp][far])
    good = np.flatnonzero(near & kind_ok[r] & ~np.isin(j.astype(np.int64) * n_res + r, bad_keys))
    good = good[np.lexsort((dr[good], j[good]))]  # by jet, then distance: a jet's first row is its nearest
    first = good[np.r_[True, j[good][1:] != j[good][:-1]]] if len(good) else good
    matched[j[first]] = r[first]
    return matched


def jet_decay_products(res: Resonances, resonance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each jet's matched resonance (row in ``res``, -1 for none): the number of its decay products
    and the flat indices of those products (in ``res.product_*``), jet after jet, in record order."""
    order = np.argsort(res.product_owner, kind="stable")
    per_res = np.bincount(res.product_owner, minlength=len(res.event))
    start = np.concatenate([[0], np.cumsum(per_res)[:-1]])
    ok = resonance >= 0
    counts = np.where(ok, per_res[np.where(ok, resonance, 0)] if len(per_res) else 0, 0)
    first = np.repeat(start[resonance[ok]], counts[ok]) if len(per_res) else np.zeros(0, np.int64)
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts[ok]) - counts[ok], counts[ok])
    return counts.astype(np.int64), order[first + within]


def heavy_flavour(pid: np.ndarray) -> np.ndarray:
    """Per PDG id: 5 for a hadron with a b quark, 4 for one with a c quark and no b, else 0.

    Reads the quark digits n_q1 n_q2 n_q3 of the PDG numbering (mesons n_q1 = 0, baryons all three
    set). Quarkonia (b b-bar, c c-bar mesons) have hidden flavour and count as 0, as in the
    experiments' hadron labels; diquarks (n_q3 = 0) are partons, not hadrons.
    """
    a = np.abs(pid)
    q1, q2, q3 = (a // 1000) % 10, (a // 100) % 10, (a // 10) % 10
    hadron = (a > 100) & (q3 > 0) & (q2 > 0) & (a < 10_000_000)
    quarkonium = (q1 == 0) & (q2 == q3)
    has = [hadron & ~quarkonium & ((q1 == f) | (q2 == f) | (q3 == f)) for f in (5, 4)]
    return np.where(has[0], 5, np.where(has[1], 4, 0)).astype(np.int8)


@dataclass
class HeavyHadrons:
    """Weakly decaying b and c hadrons of a batch: event, flavour (5 or 4) and direction."""

    event: np.ndarray
    flavour: np.ndarray
    eta: np.ndarray
    phi: np.ndarray


def find_heavy_hadrons(ev: FlatEvents) -> HeavyHadrons:
    """b and c hadrons that decay weakly: the last of their flavour in each decay chain.

    A B* -> B gamma or D* -> D pi decay passes the heavy quark on; only the last hadron carrying it
    flies and decays weakly, and only it is counted (once per heavy quark). A c hadron from a b-hadron
    decay is a c hadron of its own, as in the experiments' labelling.
    """
    hf = heavy_flavour(ev.pid)
    cand = np.flatnonzero(hf > 0)
    mother = ev.mother1[cand]
    ok = mother >= 0
    passes_on = np.zeros(len(hf), dtype=bool)  # has a daughter of its own flavour
    passes_on[mother[ok][hf[mother[ok]] == hf[cand[ok]]]] = True
    last = cand[~passes_on[cand]]
    return HeavyHadrons(
        event=ev.event[last],
        flavour=hf[last],
        eta=kin.eta(ev.px[last], ev.py[last], ev.pz[last]),
        phi=kin.phi(ev.px[last], ev.py[last]),
    )


def count_b_hadrons(
    jet_event: np.ndarray, jet_eta: np.ndarray, jet_phi: np.ndarray, ev: FlatEvents, radius: float
) -> np.ndarray:
    """Per jet, the number of weakly decaying b hadrons within ``radius`` of its axis (int32).

    Stored as ``jet_nbhadrons`` by event recipes; the ``event`` input kind's double-b-tag selection
    emulates a per-jet tagging efficiency on jets that hold at least one.
    """
    hadrons = find_heavy_hadrons(ev)
    j, h = ragged_pairs(jet_event, hadrons.event, ev.n_events)
    inside = kin.delta_r(jet_eta[j], jet_phi[j], hadrons.eta[h], hadrons.phi[h]) < radius
    return np.bincount(j[inside & (hadrons.flavour[h] == 5)], minlength=len(jet_event)).astype(np.int32)


def flavour_ok(
    jet_event: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    ev: FlatEvents,
    flavour: Flavour,
    radius: float,
) -> np.ndarray:
    """Per jet, True when its parton and heavy-hadron content give the class of ``flavour``.

    The jet's parton is the outgoing hard-process parton nearest to its axis, required within R.
    """
    n_jets = len(jet_event)
    ok = np.ones(n_jets, dtype=bool)
    if n_jets == 0:
        return ok
    if flavour.partons:
        partons = outgoing_partons(ev)
        j, p = ragged_pairs(jet_event, ev.event[partons], ev.n_events)
        p = partons[p]
        dr = kin.delta_r(
            jet_eta[j], jet_phi[j], kin.eta(ev.px[p], ev.py[p], ev.pz[p]), kin.phi(ev.px[p], ev.py[p])
        )
        nearest_pid = np.zeros(n_jets, dtype=np.int64)  # 0: no parton within R
        if len(j):
            order = np.lexsort((dr, j))  # by jet, then distance: each jet's first row is its nearest
            first = order[np.r_[True, j[order][1:] != j[order][:-1]]]
            first = first[dr[first] < radius]
            nearest_pid[j[first]] = np.abs(ev.pid[p[first]])
        ok &= np.isin(nearest_pid, flavour.partons)
    hadrons = find_heavy_hadrons(ev)
    j, h = ragged_pairs(jet_event, hadrons.event, ev.n_events)
    inside = kin.delta_r(jet_eta[j], jet_phi[j], hadrons.eta[h], hadrons.phi[h]) < radius
    for hf, (lo, hi) in ((5, flavour.b_hadrons), (4, flavour.c_hadrons)):
        count = np.bincount(j[inside & (hadrons.flavour[h] == hf)], minlength=n_jets)
        ok &= (count >= lo) & (count <= hi)
    return ok
