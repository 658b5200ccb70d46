"""Exclusive kT subjets of each jet and the attention flowing within and between them.

Each jet's particles (the ones the model saw) are reclustered with FastJet's kT algorithm into
exactly ``n`` exclusive subjets (``ClusterSequence.exclusive_jets(n)``), labelled 0..n-1 by
decreasing subjet pT. Jets with fewer than ``n`` particles get no subjets (label -1).

For top jets the b subjet and the two W subjets come from the generator truth when the store has
it (the ``truth_*`` fields ``jettag generate`` writes from generator version 4 on): the b subjet is
the subjet nearest to the b quark of the top (``truth_mother`` 6) within ``TRUTH_RADIUS``, the W
subjets those nearest to the W's two daughter quarks (``truth_mother`` 24); a jet whose three
partons do not fall into three different subjets this way is *unresolved* and left out of the b/W
flows (``truth_subjets`` returns None). Without truth fields a kinematic candidate is used instead
(``b_candidate``): the pair of subjets whose invariant mass is closest to the W mass is the W
candidate, the third subjet the b candidate; the report labels which was used.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings

import awkward as ak
import numpy as np

from jettag.physics import kinematics as kin

W_MASS = 80.4  # GeV, PDG value rounded
#: largest (eta, phi) distance between a truth parton and the subjet it is assigned to; about the size
#: of a kT subjet of a top jet of R = 0.8 (three prongs)
TRUTH_RADIUS = 0.4


@contextlib.contextmanager
def _quiet_stdout():
    """FastJet prints its banner to the C-level stdout on first use; send it to /dev/null."""
    fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        os.dup2(fd, 1)
        os.close(fd)
        os.close(devnull)


def exclusive_subjets(p4: list[np.ndarray], n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per jet ((k, 4) px, py, pz, E arrays): subjet label of each particle (-1 everywhere when the
    jet has fewer than ``n`` particles) and the subjets' (n, 4) momenta, both by decreasing subjet pT."""
    import fastjet

    labels = [np.full(len(x), -1, dtype=np.int64) for x in p4]
    moms = [np.zeros((0, 4)) for _ in p4]
    idx = [k for k, x in enumerate(p4) if len(x) >= n]
    if not idx:
        return labels, moms
    rec = ak.Array([[{"px": float(a), "py": float(b), "pz": float(c), "E": float(e)} for a, b, c, e in p4[k]]
                    for k in idx], with_name="Momentum4D")
    with _quiet_stdout(), warnings.catch_warnings():
        # the binding warns about dcut for every algorithm on exclusive_jets; this is kT, where it is exact
        warnings.filterwarnings("ignore", message="dcut and exclusive jets")
        seq = fastjet.ClusterSequence(rec, fastjet.JetDefinition(fastjet.kt_algorithm, 10.0))
        jets = seq.exclusive_jets(n)
        const = seq.exclusive_jets_constituent_index(n)
    for row, k in enumerate(idx):
        sj = np.stack([ak.to_numpy(jets[row][f]) for f in ("px", "py", "pz", "E")], -1).astype(np.float64)
        order = np.argsort(-kin.pt(sj[:, 0], sj[:, 1]), kind="stable")
        for new, old in enumerate(order):
            labels[k][np.asarray(const[row][old], dtype=np.int64)] = new
        moms[k] = sj[order]
    return labels, moms


def b_candidate(moms: np.ndarray) -> int:
    """Index of the b candidate among three subjets: the one left out of the pair whose invariant mass
    is closest to the W mass."""
    best, b = np.inf, -1
    for i, j, other in ((0, 1, 2), (0, 2, 1), (1, 2, 0)):
        s = moms[i] + moms[j]
        m = float(np.sqrt(max(0.0, kin.mass2(s[0], s[1], s[2], s[3]))))
        if abs(m - W_MASS) < best:
            best, b = abs(m - W_MASS), other
    return b


def subjet_flow(att: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """For one jet's (L, H, n, n) attention over its n real particles and subjet labels (n,): the
    mean over queries of the attention mass on the query's own subjet (L, H), and what uniform
    attention would give (sum over subjets of (n_s / n)^2)."""
    same = labels[:, None] == labels[None, :]
    within = (att * same).sum(-1).mean(-1)
    share = np.bincount(labels) / len(labels)
    return within, float((share ** 2).sum())


def between(att: np.ndarray, labels: np.ndarray, src: np.ndarray, dst: np.ndarray
            ) -> tuple[np.ndarray, float]:
    """Mean over queries in subjets ``src`` of the attention mass on subjets ``dst`` (L, H), and the
    uniform value (fraction of the jet's particles in ``dst``)."""
    q = np.isin(labels, src)
    k = np.isin(labels, dst)
    return att[:, :, q][:, :, :, k].sum(-1).mean(-1), float(k.mean())


def truth_subjets(moms: np.ndarray, pid: np.ndarray, mother: np.ndarray, eta: np.ndarray, phi: np.ndarray,
                  radius: float = TRUTH_RADIUS) -> tuple[int, np.ndarray] | None:
    """The b subjet and the two W subjets of a top jet from its truth partons, or None.

    ``moms``: the jet's three subjets (3, 4) px, py, pz, E; ``pid``, ``mother``, ``eta``, ``phi``: the
    decay partons of its top (the store's ``truth_*`` lists). The b is the |pid| 5 quark whose mother is
    the top (6), the W daughters are the quarks whose mother is the W (24). Each parton goes to its
    nearest subjet, which must lie within ``radius``; None unless there is exactly one b and two W
    daughters and they fall into three different subjets (a resolved top).
    """
    apid = np.abs(np.asarray(pid))
    mother = np.asarray(mother)
    is_b = (apid == 5) & (mother == 6)
    is_w = mother == 24
    if len(moms) != 3 or is_b.sum() != 1 or is_w.sum() != 2:
        return None
    sj_eta = kin.eta(moms[:, 0], moms[:, 1], moms[:, 2])
    sj_phi = kin.phi(moms[:, 0], moms[:, 1])
    parton = np.r_[np.flatnonzero(is_b), np.flatnonzero(is_w)]
    dr = kin.delta_r(np.asarray(eta, np.float64)[parton, None], np.asarray(phi, np.float64)[parton, None],
                     sj_eta[None, :], sj_phi[None, :])  # (3 partons, 3 subjets)
    nearest = dr.argmin(axis=1)
    if (dr[np.arange(3), nearest] >= radius).any() or len(set(nearest.tolist())) != 3:
        return None
    return int(nearest[0]), np.sort(nearest[1:])
