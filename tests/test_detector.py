"""The ``simple`` detector (tracks + calorimeter clusters) measured on real Pythia events.

One Pythia run of the ``flavour`` recipe's b class (b b-bar pairs, MPI off, 120 events) feeds every
test: the tracker's efficiency and pT resolution as configured, photons in the EM layer and
neutral hadrons in the hadronic one, the clusters' energy over a jet against the visible neutral
energy, and the b-hadron daughters' d0 after smearing.
"""

from __future__ import annotations

import numpy as np
import pytest

from jettag.data.generate import detector as det
from jettag.data.generate.clustering import cluster
from jettag.data.generate.particles import KIND_PARTICLE, Particles, visible_final_state
from jettag.data.generate.pythia import ChargeTable, FlatEvents, make_pythia, next_events
from jettag.data.generate.recipes import NEUTRINOS, get_recipe, pythia_settings
from jettag.data.generate.truth import heavy_flavour, ragged_pairs
from jettag.data.store import KIND_CLUSTER, KIND_TRACK

N_EVENTS = 120


@pytest.fixture(scope="module")
def sample() -> tuple[FlatEvents, Particles, np.ndarray]:
    """Events, their visible final state (no eta cut) and, per visible particle, its record index."""
    recipe = get_recipe("flavour")
    spec = next(c for c in recipe.classes if c.name == "b")
    pythia = make_pythia(pythia_settings(recipe, spec, seed=11, mpi=False))
    ev = next_events(pythia, N_EVENTS)
    parts = visible_final_state(ev, ChargeTable(pythia), abs_eta_max=50.0)  # 50: no eta cut
    # the same selection as visible_final_state without the eta cut: final, visible, pT > 0
    visible = ~np.isin(np.abs(ev.pid), NEUTRINOS)
    record = np.flatnonzero((ev.status > 0) & visible & (np.hypot(ev.px, ev.py) > 0))
    assert len(record) == len(parts) and np.array_equal(ev.pid[record], parts.pid)
    return ev, parts, record


def _pt_eta(p: Particles) -> tuple[np.ndarray, np.ndarray]:
    pt = np.hypot(p.px, p.py)
    return pt, np.arcsinh(p.pz / pt)


def test_track_efficiency_and_pt_resolution_as_configured(sample) -> None:
    _, parts, _ = sample
    trk, tracked = det.tracks(parts, np.random.default_rng(1))
    assert (trk.kind == KIND_TRACK).all() and (parts.kind == KIND_PARTICLE).all()
    pt, eta = _pt_eta(parts)
    in_acc = (parts.charge != 0) & (np.abs(eta) < det.TRACKER_ETA) & (pt > det.TRACK_PT_MIN)
    assert not (tracked & ~in_acc).any()
    regions = {
        "pT < 1": in_acc & (pt < 1.0),
        "barrel": in_acc & (pt >= 1.0) & (np.abs(eta) < 1.5),
        "endcap": in_acc & (pt >= 1.0) & (np.abs(eta) >= 1.5),
    }
    for name, region in regions.items():
        n = int(region.sum())
        assert n > 300, name
        want = float(det.track_efficiency(pt[region], eta[region]).mean())
        got = float(tracked[region].mean())
        # binomial: 4 standard deviations of a fraction measured on n particles
        assert abs(got - want) < 4 * np.sqrt(want * (1 - want) / n), (name, got, want)
    true_pt, true_eta = pt[tracked], eta[tracked]
    pull = (np.hypot(trk.px, trk.py) / true_pt - 1.0) / det.track_pt_resolution(true_pt, true_eta)
    assert len(pull) > 2000
    # a unit Gaussian measured on > 2000 tracks: mean within 0.1, width within 10%
    assert abs(pull.mean()) < 0.1 and 0.9 < pull.std() < 1.1, (pull.mean(), pull.std())


def test_photons_fill_the_em_layer_neutral_hadrons_the_hadronic_one(sample) -> None:
    _, parts, _ = sample
    rng = np.random.default_rng(2)
    f_em = det.em_share(parts, rng)
    photons = det.clusters(parts, parts.pid == 22, f_em, rng)
    assert len(photons) > 200 and (photons.kind == KIND_CLUSTER).all()
    # a photon-only cluster has nothing in the hadronic layer: the fractions are exactly 1 and 0
    assert np.array_equal(photons.emfrac, np.ones(len(photons))) and not photons.hadfrac.any()
    assert (photons.pid == 22).all()
    hadrons = (parts.charge == 0) & (parts.pid != 22)
    had = det.clusters(parts, hadrons, f_em, rng)
    assert len(had) > 50
    np.testing.assert_allclose(had.emfrac + had.hadfrac, 1.0, rtol=1e-12)  # float64 sums
    # the configured EM share of a hadron is 0.25 +- 0.15; the EM layer's 0.5 GeV threshold removes
    # part of it in soft towers, so the energy-weighted EM fraction lies between 0.1 and the share + 0.05
    em = float((had.emfrac * had.e).sum() / had.e.sum())
    assert 0.1 < em < det.HAD_EM_SHARE + 0.05, em
    assert np.median(had.hadfrac) > 0.6


def test_cluster_energy_over_a_jet_matches_visible_neutral_energy(sample) -> None:
    ev, parts, _ = sample
    rng = np.random.default_rng(3)
    _, tracked = det.tracks(parts, rng)
    f_em = det.em_share(parts, rng)
    _, eta = _pt_eta(parts)
    to_calo = ~tracked & (np.abs(eta) < det.CALO_ETA)
    calo = det.clusters(parts, ~tracked, f_em, rng)
    jets = cluster(parts, ev.n_events, 0.8, 100.0)  # particle-level jets define the cones
    jet_eta = np.arcsinh(jets.pz / np.hypot(jets.px, jets.py))
    jet_phi = np.arctan2(jets.py, jets.px)
    central = np.abs(jet_eta) < 2.0
    assert central.sum() > 100

    def cone_sum(p: Particles, weight: np.ndarray) -> np.ndarray:
        j, k = ragged_pairs(jets.event, p.event, ev.n_events)
        p_eta = np.arcsinh(p.pz / np.hypot(p.px, p.py))
        p_phi = np.arctan2(p.py, p.px)
        dphi = (p_phi[k] - jet_phi[j] + np.pi) % (2 * np.pi) - np.pi
        inside = np.hypot(p_eta[k] - jet_eta[j], dphi) < 0.8
        return np.bincount(j[inside], weights=weight[k[inside]], minlength=len(jets.event))

    e_true = cone_sum(parts, np.where(to_calo, parts.e, 0.0))
    e_em = cone_sum(parts, np.where(to_calo, f_em * parts.e, 0.0))
    e_clu = cone_sum(calo, calo.e)
    e_had = e_true - e_em
    # configured resolution of the two layers' sums (the constant term added linearly over towers:
    # an upper bound), plus the thresholds: towers below them are lost
    sigma = np.hypot(det.layer_resolution(e_em, det.ECAL_RES), det.layer_resolution(e_had, det.HCAL_RES))
    ok = central & (e_true > 20.0)
    pull = (e_clu[ok] - e_true[ok]) / sigma[ok]
    assert ok.sum() > 100
    # the median pull is 0 within the threshold losses and cone-edge migration (0.5 sigma), and the
    # central 68% of the pulls spans at most +-1.5 sigma (the sigma is an upper bound; edges add some)
    assert abs(np.median(pull)) < 0.5, np.median(pull)
    lo, hi = np.percentile(pull, [16, 84])
    assert (hi - lo) / 2 < 1.5, (lo, hi)
    ratio = e_clu[ok] / e_true[ok]
    assert abs(np.median(ratio) - 1.0) < 0.05, np.median(ratio)


def test_b_hadron_daughters_keep_their_d0_after_smearing(sample) -> None:
    ev, parts, record = sample
    # a visible particle descends from a b hadron when any ancestor (mother1 chain) carries b
    from_b = np.zeros(len(record), dtype=bool)
    cur = ev.mother1[record]
    for _ in range(60):
        ok = cur >= 0
        from_b |= ok & (heavy_flavour(ev.pid[np.where(ok, cur, 0)]) == 5)
        cur = np.where(ok, ev.mother1[np.where(ok, cur, 0)], -1)
    assert (cur < 0).all()
    trk, tracked = det.tracks(parts, np.random.default_rng(4))
    b_trk = from_b[tracked]
    primary = parts.d0[tracked] == 0
    assert b_trk.sum() > 100 and primary.sum() > 1000
    significance = np.abs(trk.d0) / trk.d0err
    # b-hadron flight (c tau ~ 0.45 mm, boosted) keeps the daughters' median |d0| well above its error
    assert np.median(significance[b_trk]) > 3.0, np.median(significance[b_trk])
    # prompt tracks are smeared by exactly their stated error: the median of |N(0, 1)| is 0.674;
    # +-0.06 is ~3 standard errors of a median over > 1000 tracks
    assert abs(np.median(significance[primary]) - 0.674) < 0.06, np.median(significance[primary])
