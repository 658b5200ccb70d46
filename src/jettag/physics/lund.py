"""Lund trees: the full Cambridge/Aachen declustering tree of every jet, built in bulk.

``lund_trees(jets)`` reclusters each jet's constituents with C/A (R = 1000, so that all of them end
in one jet, as the LundNet reference code does) and undoes the clusterings. Every declustering
``j -> j1 + j2`` is one node of the jet's tree; single particles are not nodes. With j1 the harder
branch (pT1 > pT2; on an exact tie, FastJet's first parent, the one with the smaller history index):

- Delta = sqrt((y1 - y2)^2 + (phi1 - phi2)^2), with the rapidity y and the azimuth difference
  wrapped into [-pi, pi];
- kt = pT2 Delta;   z = pT2 / (pT1 + pT2);   m = invariant mass of j1 + j2 (sqrt |m^2|);
- psi = atan((y2 - y1) / (phi2 - phi1)), in [-pi/2, pi/2] (pi/2 times the sign of y2 - y1 when the
  azimuths are equal, 0 when both differences vanish).

Node features are ``(ln kt, ln Delta, ln z, ln m, psi)`` in that order, float32; the logarithms'
arguments are clamped to at least 1e-30 (``LOG_FLOOR``), so exactly collinear or massless pairs give
finite values where the reference code would stop with a math domain error. The reference code
takes the raw azimuths of FastJet (in [0, 2 pi)) for psi; the wrapped difference used here agrees
with it except for the rare pairs on either side of phi = 0, where the raw difference is off by
2 pi.

Nodes are numbered per jet from the last clustering (the root, node 0) back to the first one, so a
parent always has a smaller index than its children; the edges are the (parent, child) pairs of the
tree, one per non-root node, listed in the order of the child. Secondary branches are included: both
branches of every declustering are followed.

Optional cuts, as in the reference code (``JetTree``): a declustering with ``ln Delta <
ln_delta_min`` ends its branch (it and everything below it are dropped); one with ``ln kt <
ln_kt_min`` is skipped, its softer branch dropped and its harder branch taking its place (attached to
its parent).

How it is fast (no Python per node or per jet): FastJet clusters every jet of a batch in C++ through
its awkward interface, which also returns, per jet, all pseudojets of the clustering (the particles,
then one merged jet per step) and ``unique_history_order``, a post-order listing of the tree. Reading
that listing as reverse Polish notation gives each step's two parents: the right one is the entry just
before it, the left one the previous entry left at the same stack height, found for all jets at once
by one stable sort. Kinematics are then numpy over all nodes, and the cuts are resolved by pointer
jumping (log2 of the tree depth passes over all nodes).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import awkward as ak
import numpy as np

from jettag.data.store import MOMENTUM_FIELDS, JetDataError

FEATURES = ("ln_kt", "ln_delta", "ln_z", "ln_m", "psi")
LOG_FLOOR = 1e-30  # far below any real value (Pythia makes photons of pT ~ 1e-13 GeV: ln z ~ -35)
RECLUSTER_RADIUS = 1000.0
MOMENTA = MOMENTUM_FIELDS  # the store's particle momenta, read by name
# jets per FastJet call: bounds the memory of the intermediate arrays
CHUNK_JETS = 20_000


@dataclass
class LundGraphs:
    """Lund trees of many jets as flat arrays.

    ``features`` (n_nodes, 5) float32 in ``FEATURES`` order; jet k owns rows
    ``node_offsets[k]:node_offsets[k + 1]``. ``edges`` (n_edges, 2) int32 (parent, child) node
    indices *within the jet*; jet k owns rows ``edge_offsets[k]:edge_offsets[k + 1]``.
    """

    features: np.ndarray
    node_offsets: np.ndarray
    edges: np.ndarray
    edge_offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.node_offsets) - 1

    @property
    def num_nodes(self) -> np.ndarray:
        return np.diff(self.node_offsets)

    @property
    def num_edges(self) -> np.ndarray:
        return np.diff(self.edge_offsets)

    def to_awkward(self) -> ak.Array:
        """Per jet: ``features`` [node][5] and ``edges`` [edge][2]."""
        features = ak.unflatten(ak.from_numpy(self.features), self.num_nodes)
        edges = ak.unflatten(ak.from_numpy(self.edges), self.num_edges)
        return ak.zip({"features": features, "edges": edges}, depth_limit=1)

    @classmethod
    def concatenate(cls, parts: list[LundGraphs]) -> LundGraphs:
        if len(parts) == 1:
            return parts[0]
        node_counts = np.concatenate([p.num_nodes for p in parts])
        edge_counts = np.concatenate([p.num_edges for p in parts])
        return cls(
            np.concatenate([p.features for p in parts]),
            np.concatenate([[0], np.cumsum(node_counts)]).astype(np.int64),
            np.concatenate([p.edges for p in parts]),
            np.concatenate([[0], np.cumsum(edge_counts)]).astype(np.int64),
        )


def lund_trees(
    jets: ak.Array,
    ln_kt_min: float | None = None,
    ln_delta_min: float | None = None,
    source: str = "<memory>",
) -> ak.Array:
    """Per jet, its full C/A Lund tree: ``features`` [jet][node][5] float32 (ln kt, ln Delta, ln z,
    ln m, psi) and ``edges`` [jet][edge][2] (parent, child) node indices within the jet.

    ``jets`` needs ``part_px, part_py, part_pz, part_energy``. A jet of one particle has no nodes.
    See the module docstring for the definitions, the node numbering and the cuts.
    """
    return lund_graphs(jets, ln_kt_min, ln_delta_min, source).to_awkward()


def lund_graphs(
    jets: ak.Array,
    ln_kt_min: float | None = None,
    ln_delta_min: float | None = None,
    source: str = "<memory>",
) -> LundGraphs:
    """``lund_trees`` as flat arrays (``LundGraphs``), the form the ``lund`` input kind stores."""
    px, py, pz, energy, counts = _momenta(jets, source)
    if not len(counts):
        return LundGraphs(np.zeros((0, 5), np.float32), np.zeros(1, np.int64), np.zeros((0, 2), np.int32),
                          np.zeros(1, np.int64))
    parts = []
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for start in range(0, len(counts), CHUNK_JETS):
        stop = min(start + CHUNK_JETS, len(counts))
        lo, hi = offsets[start], offsets[stop]
        parts.append(_chunk_graphs(px[lo:hi], py[lo:hi], pz[lo:hi], energy[lo:hi], counts[start:stop],
                                   ln_kt_min, ln_delta_min))
    return LundGraphs.concatenate(parts)


def _momenta(jets: ak.Array, source: str) -> tuple[np.ndarray, ...]:
    """Flat float64 constituent momenta and the counts per jet, after the store's input checks."""
    missing = [f for f in MOMENTA if f not in jets.fields]
    if missing:
        raise JetDataError(f"{source}: missing field(s) {missing}; present: {jets.fields}")
    counts = ak.to_numpy(ak.num(jets[MOMENTA[0]], axis=1)).astype(np.int64)
    flat = []
    for f in MOMENTA:
        values = ak.to_numpy(ak.flatten(jets[f])).astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            jet_of = np.repeat(np.arange(len(counts)), counts)
            rows = np.unique(jet_of[bad])
            raise JetDataError(f"{source}: field {f!r} has NaN/inf values in {len(rows)} jet(s), first at "
                               f"row {rows[0]}; pass drop_invalid=True (CLI: --drop-invalid) to drop such "
                               "jets")
        flat.append(values)
    beam = (flat[0] == 0) & (flat[1] == 0)
    if beam.any():  # FastJet puts it at rapidity 1e5: C/A with R = 1000 leaves it out of the jet
        rows = np.unique(np.repeat(np.arange(len(counts)), counts)[beam])
        raise JetDataError(f"{source}: fields 'part_px', 'part_py': {len(rows)} jet(s) have a constituent "
                           f"with pT = 0 (along the beam), first at row {rows[0]}; Lund trees need pT > 0")
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise JetDataError(f"{source}: {len(empty)} jet(s) have no constituents, first at row {empty[0]}; "
                           "pass drop_invalid=True (CLI: --drop-invalid) to drop them")
    return (*flat, counts)


def _fastjet():
    """The fastjet module, loaded once with its banner swallowed (as for generation)."""
    try:
        import fastjet  # noqa: F401  (a clear message when the optional dependency is missing)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("Lund trees need FastJet: pip install 'jettag[generate]'") from err
    from jettag.data.generate.clustering import warm_up

    warm_up()
    return sys.modules["fastjet"]


def _cluster_history(px, py, pz, energy, counts) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """C/A of every jet in one FastJet call.

    Returns the (px, py, pz, E) columns of all pseudojets of every clustering, flat (per jet of n
    particles: the n particles, then the n - 1 merged jets in clustering order, so an entry's index
    within its jet is its FastJet history index), and FastJet's ``unique_history_order`` per jet
    (flat, 2n entries: a post-order listing of the tree ending with the final step onto the beam).
    """
    fastjet = _fastjet()
    record = ak.zip({"px": px, "py": py, "pz": pz, "E": energy}, with_name="Momentum4D")
    # N2Plain: with R = 1000 the tiled strategies have one tile and only add bookkeeping
    jet_def = fastjet.JetDefinition(fastjet.cambridge_algorithm, RECLUSTER_RADIUS, fastjet.N2Plain,
                                    fastjet.E_scheme)
    seq = fastjet.ClusterSequence(ak.unflatten(record, counts), jet_def)
    pseudo = seq.jets()
    if not np.array_equal(ak.to_numpy(ak.num(pseudo, axis=1)), 2 * counts - 1):
        raise RuntimeError("FastJet did not merge every jet's constituents into one C/A jet")
    columns = tuple(ak.to_numpy(ak.flatten(pseudo[c])) for c in ("px", "py", "pz", "E"))
    return columns, ak.to_numpy(ak.flatten(seq.unique_history_order())).astype(np.int64)


def _rapidity(pz, e, kt2):
    """Rapidity as FastJet computes it: from the transverse mass, so E ~ |pz| loses no precision."""
    m2 = (e + pz) * (e - pz) - kt2
    e_plus_pz = e + np.abs(pz)
    rap = 0.5 * np.log((kt2 + np.maximum(m2, 0.0)) / (e_plus_pz * e_plus_pz))
    return np.where(pz > 0, -rap, rap)


def _chunk_graphs(px, py, pz, energy, counts, ln_kt_min, ln_delta_min) -> LundGraphs:
    n_jets = len(counts)
    node_counts = counts - 1
    node_start = np.concatenate([[0], np.cumsum(node_counts)])
    n_nodes = int(node_start[-1])
    (qx, qy, qz, qe), history = _cluster_history(px, py, pz, energy, counts)

    # Drop each jet's last listing entry, the step onto the beam: 2n - 1 entries per jet remain, as
    # many as pseudojets, so both share the per-jet start ``start``.
    last = np.cumsum(2 * counts) - 1
    if not np.array_equal(history[last], 2 * counts - 1):
        raise RuntimeError("FastJet's unique_history_order does not end with the beam step")
    keep = np.ones(len(history), bool)
    keep[last] = False
    hist = history[keep]
    sizes = 2 * counts - 1
    start = np.concatenate([[0], np.cumsum(sizes)])[:-1]
    jet_of = np.repeat(np.arange(n_jets), sizes)
    n_of = counts[jet_of]
    leaf = hist < n_of
    # Reverse Polish reading: a particle pushes, a merge pops its two parents and pushes itself. The
    # stack height after each entry restarts per jet (every jet adds exactly one net entry).
    height = np.cumsum(np.where(leaf, 1, -1)) - jet_of
    # A merge's right parent is the entry just before it; its left parent is the previous entry of the
    # same jet at the same height (everything in between is the right parent's subtree, above it).
    # A stable sort by (jet, height) puts that entry right before the merge.
    by_level = np.argsort(jet_of * (int(counts.max()) + 1) + height, kind="stable")
    merge_at = np.flatnonzero(~leaf[by_level])
    merge = by_level[merge_at]
    left, right = by_level[merge_at - 1], merge - 1

    jet = jet_of[merge]
    n = n_of[merge]
    # node of a merge: its jet's start + (n - 2 - step), step = history index - n (the root is node 0)
    node = node_start[jet] + (2 * n - 2) - hist[merge]
    ia, ib = start[jet] + hist[left], start[jet] + hist[right]
    kt2_a = qx[ia] * qx[ia] + qy[ia] * qy[ia]
    kt2_b = qx[ib] * qx[ib] + qy[ib] * qy[ib]
    pt_a, pt_b = np.sqrt(kt2_a), np.sqrt(kt2_b)
    # harder branch j1: larger pT; on a tie FastJet's parent1, the smaller history index
    a_harder = (pt_a > pt_b) | ((pt_a == pt_b) & (hist[left] < hist[right]))
    i1, i2 = np.where(a_harder, ia, ib), np.where(a_harder, ib, ia)
    pt1, pt2 = np.where(a_harder, pt_a, pt_b), np.where(a_harder, pt_b, pt_a)
    x1, y1, z1, e1 = qx[i1], qy[i1], qz[i1], qe[i1]
    x2, y2, z2, e2 = qx[i2], qy[i2], qz[i2], qe[i2]
    dy = _rapidity(z2, e2, pt2 * pt2) - _rapidity(z1, e1, pt1 * pt1)
    dphi = np.arctan2(x1 * y2 - y1 * x2, x1 * x2 + y1 * y2)  # phi2 - phi1 wrapped to [-pi, pi]
    delta = np.sqrt(dy * dy + dphi * dphi)
    sx, sy, sz, se = x1 + x2, y1 + y2, z1 + z2, e1 + e2
    m2 = (se + sz) * (se - sz) - sx * sx - sy * sy
    sign = np.where(dphi < 0, -1.0, 1.0)  # atan(dy / dphi) without dividing by a zero dphi
    ln_kt = np.log(np.maximum(pt2 * delta, LOG_FLOOR))
    ln_delta = np.log(np.maximum(delta, LOG_FLOOR))
    features = np.empty((n_nodes, 5), np.float32)
    features[node, 0] = ln_kt
    features[node, 1] = ln_delta
    features[node, 2] = np.log(np.maximum(pt2 / (pt1 + pt2), LOG_FLOOR))
    features[node, 3] = 0.5 * np.log(np.maximum(np.abs(m2), LOG_FLOOR * LOG_FLOOR))
    features[node, 4] = np.arctan2(dy * sign, dphi * sign)

    # tree: parent node of every node (-1 for a jet's root), and whether it is its parent's j1
    parent = np.full(n_nodes, -1, np.int64)
    harder = np.zeros(n_nodes, bool)
    for child, child_is_a in ((left, True), (right, False)):
        inner = ~leaf[child]
        child_node = node_start[jet[inner]] + (2 * n[inner] - 2) - hist[child[inner]]
        parent[child_node] = node[inner]
        harder[child_node] = a_harder[inner] == child_is_a

    node_jet = np.repeat(np.arange(n_jets), node_counts)
    kept = np.ones(n_nodes, bool)
    if ln_kt_min is not None or ln_delta_min is not None:
        ln_kt_n, ln_delta_n = np.empty(n_nodes), np.empty(n_nodes)
        ln_kt_n[node], ln_delta_n[node] = ln_kt, ln_delta
        kept, parent = _apply_cuts(parent, harder, ln_kt_n, ln_delta_n, ln_kt_min, ln_delta_min)
    # kept nodes keep their order; ``local`` is a kept node's index within its jet
    kept_counts = np.bincount(node_jet[kept], minlength=n_jets)
    kept_start = np.concatenate([[0], np.cumsum(kept_counts)])
    local = np.cumsum(kept) - 1 - kept_start[node_jet]
    child = np.flatnonzero(kept & (parent >= 0))
    edges = np.stack([local[parent[child]], local[child]], axis=1).astype(np.int32)
    edge_counts = np.bincount(node_jet[child], minlength=n_jets)
    return LundGraphs(features[kept], kept_start.astype(np.int64), edges,
                      np.concatenate([[0], np.cumsum(edge_counts)]).astype(np.int64))


def _apply_cuts(parent, harder, ln_kt, ln_delta, ln_kt_min, ln_delta_min) -> tuple[np.ndarray, np.ndarray]:
    """Kept nodes and each kept node's parent in the cut tree (-1 for a root), as ``JetTree`` walks.

    A node is reached when every ancestor lets the walk through to it: an ancestor passing both cuts
    continues into both branches, one failing only the kt cut into its harder branch, one failing
    the Delta cut into neither. Reached nodes passing both cuts are kept; a kept node's parent is its
    nearest kept ancestor.
    """
    n = len(parent)
    delta_ok = np.ones(n, bool) if ln_delta_min is None else ln_delta >= ln_delta_min
    kt_ok = np.ones(n, bool) if ln_kt_min is None else ln_kt >= ln_kt_min
    root = parent < 0
    up = np.where(root, np.arange(n), parent)
    # gate[v]: the walk passes from parent(v) into v; reached[v]: AND of the gates up to the root
    reached = root | (delta_ok[up] & (kt_ok[up] | harder))
    while True:  # pointer jumping: after k passes, ``up`` is the 2^k-th ancestor (or the root)
        nxt = up[up]
        reached = reached & reached[up]
        if np.array_equal(nxt, up):
            break
        up = nxt
    kept = reached & delta_ok & kt_ok
    # nearest kept proper ancestor, by pointer jumping over ancestors that are not kept
    anc = parent.copy()
    while True:
        skip = np.flatnonzero(anc >= 0)
        skip = skip[~kept[anc[skip]]]
        if not len(skip):
            return kept, anc
        anc[skip] = anc[anc[skip]]
