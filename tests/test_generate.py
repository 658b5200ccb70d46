"""Pythia 8 + FastJet generation: physics of the recipes, determinism, resuming, cache, manifest.

Samples are small (a few hundred jets) and generated once per session through ``cached_dataset``
in a temporary cache. Physics checks compare against independent expectations (particle masses,
known shower properties, the b-hadron lifetime), never against the generator's own output.
"""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from jettag.data.generate import cached_dataset, generate, pythia_seed
from jettag.data.generate.particles import impact_parameters
from jettag.data.generate.pythia import make_pythia, next_events
from jettag.data.generate.recipes import get_recipe, pythia_settings
from jettag.data.store import read_metadata, read_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jettag-cache")


@pytest.fixture(scope="session")
def top_dir(cache) -> Path:
    return cached_dataset("top", 300, seed=1, cache_dir=cache)


@pytest.fixture(scope="session")
def top(top_dir) -> ak.Array:
    return read_store(top_dir)


@pytest.fixture(scope="session")
def jetclass(cache) -> ak.Array:
    # MPI off keeps the test sample fast; the masses and lifetimes tested do not depend on it
    return read_store(cached_dataset("jetclass", 400, seed=2, cache_dir=cache, mpi=False))


@pytest.fixture(scope="session")
def qg(cache) -> ak.Array:
    return read_store(cached_dataset("qg", 200, seed=3, cache_dir=cache, mpi=False))


@pytest.fixture(scope="session")
def flavour(cache) -> ak.Array:
    return read_store(cached_dataset("flavour", 160, seed=7, cache_dir=cache, mpi=False))


@pytest.fixture(scope="session")
def hh4b_dir(cache) -> Path:
    # chunks of 5 events: the signal's two chunks sit at the first two mass points (600, 800 GeV)
    return cached_dataset("hh4b", 30, seed=7, cache_dir=cache, mpi=False, chunk_size=5)


def _masses(jets: ak.Array, label: int) -> np.ndarray:
    return ak.to_numpy(jets.jet_mass[jets.label == label])


def _class(jets: ak.Array, classes: list[str], name: str) -> ak.Array:
    return jets[jets.label == classes.index(name)]


def _mode(values: np.ndarray, lo: float, hi: float, width: float) -> float:
    counts, edges = np.histogram(values, bins=np.arange(lo, hi + width, width))
    i = int(np.argmax(counts))
    return 0.5 * (edges[i] + edges[i + 1])


JETCLASS = ["QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl"]


def test_top_sample_layout_and_window(top, top_dir):
    meta = read_metadata(next(top_dir.glob("*.parquet")))
    assert meta["classes"] == ["QCD", "Top"]
    labels = ak.to_numpy(top.label)
    assert np.bincount(labels).tolist() == [150, 150]
    pt, eta = ak.to_numpy(top.jet_pt), ak.to_numpy(top.jet_eta)
    assert pt.min() >= 550 - 1e-3 and pt.max() < 650 + 1e-3
    assert np.abs(eta).max() < 2.0
    # no neutrinos, PDG ids and charges filled in
    pid = np.abs(ak.to_numpy(ak.flatten(top.part_pid)))
    assert not np.isin(pid, [12, 14, 16]).any() and (pid > 0).all()
    charge = ak.to_numpy(ak.flatten(top.part_charge))
    assert set(np.unique(charge).tolist()) <= {-1.0, 0.0, 1.0}
    assert np.all(charge[pid == 22] == 0) and np.all(np.abs(charge[pid == 211]) == 1)


def test_constituents_sum_to_stored_jet(top, jetclass):
    for jets in (top, jetclass):
        px, py, pz, e = (
            ak.to_numpy(ak.sum(jets[f], axis=1)).astype(np.float64)
            for f in ("part_px", "part_py", "part_pz", "part_energy")
        )
        pt = np.hypot(px, py)
        mass = np.sqrt(np.clip(e**2 - px**2 - py**2 - pz**2, 0, None))
        np.testing.assert_allclose(pt, ak.to_numpy(jets.jet_pt), rtol=1e-4)
        np.testing.assert_allclose(e, ak.to_numpy(jets.jet_energy), rtol=1e-4)
        np.testing.assert_allclose(mass, ak.to_numpy(jets.jet_mass), rtol=2e-3, atol=0.05)
        assert (ak.to_numpy(ak.num(jets.part_px)) == ak.to_numpy(jets.jet_nparticles)).all()


def test_top_mass_peak_and_qcd_falls(top):
    top_m = _masses(top, 1)
    assert 160 <= _mode(top_m, 100, 250, 10) <= 185
    assert 160 <= np.median(top_m) <= 185
    qcd = _masses(top, 0)
    counts = np.histogram(qcd, bins=[50, 100, 150, 200, 300])[0] / np.diff([50, 100, 150, 200, 300])
    assert (np.diff(counts) < 0).all(), counts


def test_jetclass_resonance_masses(jetclass):
    for name, lo, hi in (("Hbb", 110, 130), ("Wqq", 70, 90), ("Zqq", 80, 100), ("Tbqq", 160, 185)):
        m = ak.to_numpy(_class(jetclass, JETCLASS, name).jet_mass)
        assert lo <= np.median(m) <= hi, (name, np.median(m))
    assert np.bincount(ak.to_numpy(jetclass.label), minlength=10).tolist() == [40] * 10
    pt = ak.to_numpy(jetclass.jet_pt)
    assert pt.min() >= 500 - 1e-3 and pt.max() < 1000 + 1e-3


def test_wtag_mass_peak(cache):
    jets = read_store(cached_dataset("wtag", 120, seed=4, cache_dir=cache))
    w = _masses(jets, 1)
    assert 70 <= np.median(w) <= 90
    assert ak.to_numpy(jets.jet_pt).min() >= 500 - 1e-3


def test_gluon_jets_have_more_constituents(qg):
    n = ak.to_numpy(qg.jet_nparticles)
    labels = ak.to_numpy(qg.label)  # classes ["gluon", "quark"]
    assert n[labels == 0].mean() >= 1.2 * n[labels == 1].mean()
    pt = ak.to_numpy(qg.jet_pt)
    assert pt.min() >= 500 - 1e-3 and pt.max() < 550 + 1e-3
    px, py = ak.to_numpy(ak.sum(qg.part_px, axis=1)), ak.to_numpy(ak.sum(qg.part_py, axis=1))
    assert np.allclose(np.hypot(px, py), pt, rtol=1e-4)


def _is_b_hadron(pid: np.ndarray) -> np.ndarray:
    a = np.abs(pid)
    return ((a // 100) % 10 == 5) | ((a // 1000) % 10 == 5)


def test_b_hadron_daughters_are_displaced_prompt_are_not():
    """From the event record: charged descendants of b hadrons vs particles from the primary vertex."""
    recipe = get_recipe("jetclass")
    spec = recipe.classes[JETCLASS.index("Hbb")]
    pythia = make_pythia(pythia_settings(recipe, spec, seed=4242, mpi=False))
    ev = next_events(pythia, 40)
    from jettag.data.generate.pythia import ChargeTable

    charge = ChargeTable(pythia)(ev.pid)
    final = (ev.status > 0) & (charge != 0)
    # ancestry by walking mother1 up to the beams, all particles at once
    from_b = np.zeros(len(ev.pid), dtype=bool)
    cur = ev.mother1.copy()
    for _ in range(200):
        ok = cur >= 0
        from_b[ok] |= _is_b_hadron(ev.pid[cur[ok]])
        cur = np.where(ok, ev.mother1[np.where(ok, cur, 0)], -1)
    d0, _ = impact_parameters(ev.vx, ev.vy, ev.vz, ev.px, ev.py, ev.pz)
    b_daughters = final & from_b
    assert b_daughters.sum() > 100
    assert np.median(np.abs(d0[b_daughters])) > 0.050  # mm: c tau of b hadrons is ~0.45 mm
    prompt = final & (ev.vx == 0) & (ev.vy == 0) & (ev.vz == 0)
    assert prompt.sum() > 1000 and np.all(d0[prompt] == 0)


def test_stored_impact_parameters(jetclass):
    charged = ak.flatten(jetclass.part_charge) != 0
    d0 = ak.to_numpy(ak.flatten(jetclass.part_d0val))
    d0err = ak.to_numpy(ak.flatten(jetclass.part_d0err))
    charged = ak.to_numpy(charged)
    assert np.all(d0[~charged] == 0) and np.all(d0err[~charged] == 0) and np.all(d0err[charged] > 0)
    # particle level: most charged particles are prompt (0, up to the femtometre flight of strong
    # decays); b jets have a displaced tail
    assert np.mean(np.abs(d0[charged]) < 1e-6) > 0.5
    lab = ak.to_numpy(ak.flatten(ak.broadcast_arrays(jetclass.label, jetclass.part_px)[0]))

    def displaced(name: str) -> float:
        sel = charged & (lab == JETCLASS.index(name))
        return float(np.mean(np.abs(d0[sel]) > 0.1))

    assert displaced("Hbb") > 3 * displaced("QCD")


def test_simple_detector(cache):
    jets = read_store(cached_dataset("jetclass", 60, seed=5, detector="simple", cache_dir=cache, mpi=False))
    pid = ak.to_numpy(ak.flatten(jets.part_pid))
    charge = ak.to_numpy(ak.flatten(jets.part_charge))
    d0, d0err = ak.to_numpy(ak.flatten(jets.part_d0val)), ak.to_numpy(ak.flatten(jets.part_d0err))
    neutral = charge == 0
    # calorimeter objects only: photons and generic neutral hadrons at cell centres
    assert set(np.unique(pid[neutral]).tolist()) <= {22, 130}
    # smeared tracks: no exact zeros, errors at least the 20 um floor, pulls of unit size for prompt-like
    assert np.mean(d0[~neutral] == 0) < 0.01 and d0err[~neutral].min() >= 0.020 - 1e-6
    pulls = d0[~neutral] / d0err[~neutral]
    assert 0.8 < np.median(np.abs(pulls)) / 0.674 < 2.0
    pt = ak.to_numpy(jets.jet_pt)
    assert pt.min() >= 500 - 1e-3


def test_seeds_distinct_and_in_range():
    seeds = [
        pythia_seed(s, shard, c, k) for s in (0,) for shard in range(64) for c in range(10) for k in range(16)
    ]
    assert len(set(seeds)) == len(seeds)
    assert min(seeds) >= 1 and max(seeds) <= 900_000_000
    with pytest.raises(ValueError):
        pythia_seed(0, 0, 99, 0)


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("*.parquet"))


def test_determinism_shards_and_resume(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    kwargs = {"seed": 11, "chunk_size": 10, "progress": False, "num_shards": 2}
    generate("top", 40, a, workers=1, shard=0, **kwargs)
    generate("top", 40, b, workers=2, shard=0, **kwargs)
    assert _files(a) == _files(b) and len(_files(a)) == 2  # 10 jets/class in shard 0, one chunk each
    for name in _files(a):
        assert filecmp.cmp(a / name, b / name, shallow=False), name
    # the other shard: different Pythia seeds, different jets
    generate("top", 40, c, shard=1, **kwargs)
    man0 = json.loads((a / "manifest-s0000.json").read_text())
    man1 = json.loads((c / "manifest-s0001.json").read_text())
    assert not {x["pythia_seed"] for x in man0["chunks"]} & {x["pythia_seed"] for x in man1["chunks"]}
    pa, pc = (ak.to_numpy(read_store(d).jet_pt) for d in (a, c))
    assert not np.intersect1d(pa, pc).size

    # resume: lose the last chunk (and leave a half-written temporary file, as a kill would)
    full = tmp_path / "full"
    generate("top", 60, full, seed=11, chunk_size=10, progress=False)
    ref = tmp_path / "ref"
    shutil.copytree(full, ref)
    last = _files(full)[-1]
    (full / last).unlink()
    (full / (last + ".tmp")).write_bytes(b"partial")
    manifest = generate("top", 60, full, seed=11, chunk_size=10, progress=False)
    assert manifest["complete"] and _files(full) == _files(ref)
    assert not list(full.glob("*.tmp"))
    for name in _files(ref):
        assert filecmp.cmp(full / name, ref / name, shallow=False), name
    jets = read_store(full)
    assert len(jets) == 60
    key = np.stack([ak.to_numpy(jets.jet_pt), ak.to_numpy(jets.jet_eta)], axis=1)
    assert len(np.unique(key, axis=0)) == 60
    # a different request in the same directory is refused rather than mixed in
    with pytest.raises(ValueError, match="different run"):
        generate("top", 60, full, seed=12, chunk_size=10, progress=False)


def test_manifest_and_cache_reuse(top_dir, cache):
    manifest = json.loads((top_dir / "manifest.json").read_text())
    assert manifest["complete"] and manifest["classes"] == ["QCD", "Top"]
    for name in ("QCD", "Top"):
        entry = manifest["per_class"][name]
        assert entry["jets"] == 150 and entry["generated_events"] >= 150
        assert entry["cross_section_mb"] > 0
        assert "PartonLevel:MPI = off" in entry["pythia_settings"]
    assert (
        manifest["per_class"]["QCD"]["cross_section_mb"]
        > 100 * manifest["per_class"]["Top"]["cross_section_mb"]
    )
    assert manifest["versions"]["pythia8mc"].startswith("8.3")
    mtimes = {p: p.stat().st_mtime_ns for p in top_dir.glob("*.parquet")}
    again = cached_dataset("top", 300, seed=1, cache_dir=cache)
    assert again == top_dir
    assert {p: p.stat().st_mtime_ns for p in top_dir.glob("*.parquet")} == mtimes


def test_bad_requests(tmp_path):
    with pytest.raises(ValueError, match="unknown recipe"):
        generate("nope", 10, tmp_path)
    with pytest.raises(ValueError, match="at least one jet per class"):
        generate("jetclass", 5, tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="unknown detector"):
        generate("top", 10, tmp_path / "y", detector="delphes", progress=False)


def test_cli_generate(tmp_path, capsys):
    from jettag.cli import main

    out = tmp_path / "cli"
    assert main(["generate", "top", "--jets", "4", "--out", str(out), "--seed", "3", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["complete"] and summary["classes"]["Top"]["jets"] == 2
    jets = read_store(out)
    assert np.bincount(ak.to_numpy(jets.label)).tolist() == [2, 2]


FLAVOURS = ["ud", "s", "c", "b", "g", "ss", "cc", "bb"]


def test_heavy_flavour_of_pdg_ids():
    from jettag.data.generate.truth import heavy_flavour

    ids = {511: 5, -521: 5, 5122: 5, -5332: 5, 541: 5, 10511: 5, 421: 4, -411: 4, 4122: 4, 443: 0, 553: 0,
           100553: 0, 5101: 0, 5: 0, 21: 0, 211: 0, 321: 0, 2212: 0, 11: 0}
    assert heavy_flavour(np.array(list(ids))).tolist() == list(ids.values())


def test_weakly_decaying_b_hadrons_counted_once():
    """H -> b b-bar events: two b quarks give two weakly decaying b hadrons (B* -> B gamma not double)."""
    from jettag.data.generate.truth import find_heavy_hadrons

    recipe = get_recipe("flavour")
    pythia = make_pythia(pythia_settings(recipe, recipe.classes[FLAVOURS.index("bb")], seed=77, mpi=False))
    ev = next_events(pythia, 40)
    hadrons = find_heavy_hadrons(ev)
    n_b = np.bincount(hadrons.event[hadrons.flavour == 5], minlength=ev.n_events)
    assert np.median(n_b) == 2 and n_b.min() >= 2  # gluon splitting may add pairs, never remove
    # the record has excited B* (-> B gamma), which would double the count if they were counted
    assert np.isin(np.abs(ev.pid), (513, 523)).sum() > 10


def test_flavour_classes(flavour):
    """Each class shows its physics in the stored particles, not only in its label."""
    assert flavour.fields.count("part_d0val") == 1
    assert np.bincount(ak.to_numpy(flavour.label)).tolist() == [20] * 8
    assert ak.min(flavour.jet_pt) >= 250 - 1e-3 and ak.max(np.abs(flavour.jet_eta)) < 2.0

    def per_class(values) -> dict[str, float]:
        v = ak.to_numpy(values)
        return {n: float(v[ak.to_numpy(flavour.label) == i].mean()) for i, n in enumerate(FLAVOURS)}

    charged = flavour.part_charge != 0
    displaced = per_class(ak.sum(charged & (np.abs(flavour.part_d0val) > 0.1), axis=1))  # |d0| > 100 um
    for light in ("ud", "s", "g", "ss"):
        assert displaced[light] < 0.3, displaced
    assert displaced["b"] > 1.5 and displaced["bb"] > displaced["b"] and displaced["b"] > displaced["c"]
    assert displaced["cc"] > displaced["ud"] + 0.5 and displaced["c"] > displaced["ud"]
    pid = np.abs(flavour.part_pid)
    kaon = (pid == 321) | (pid == 310) | (pid == 130)
    kaon_share = per_class(ak.sum(flavour.part_energy * kaon, axis=1) / ak.sum(flavour.part_energy, axis=1))
    assert kaon_share["s"] > 1.5 * kaon_share["ud"] and kaon_share["ss"] > 1.5 * kaon_share["ud"], kaon_share
    n = per_class(flavour.jet_nparticles)
    assert n["g"] > 1.2 * n["ud"], n
    for pair in ("ss", "cc", "bb"):  # two quarks of H -> q q-bar in one jet
        assert 110 < np.median(_masses(flavour, FLAVOURS.index(pair))) < 135
    assert np.median(_masses(flavour, FLAVOURS.index("ud"))) < 80


def test_hh4b_events(hh4b_dir):
    from jettag.data.store import JetDataError, group_events
    from jettag.physics import kinematics as kin

    rows = read_store(hh4b_dir)
    events = group_events(rows, str(hh4b_dir))
    assert len(events) == 30 and ak.all(ak.num(events, axis=1) == 2)
    lead, sub = events[:, 0], events[:, 1]
    assert ak.all(lead.jet_pt >= 450 - 1e-3) and ak.all(sub.jet_pt >= 250 - 1e-3)
    assert ak.all(lead.jet_pt >= sub.jet_pt)
    assert ak.all((rows.jet_mass > 50) & (rows.jet_mass < 250)) and ak.all(np.abs(rows.jet_eta) < 2)
    # the stored system equals the sum of the two stored jets (independently from pt, eta, phi, m)
    def p4(j):
        fields = ("jet_pt", "jet_eta", "jet_phi", "jet_mass")
        pt, eta, phi, m = (ak.to_numpy(j[f]).astype(np.float64) for f in fields)
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        return px, py, pz, np.sqrt(px**2 + py**2 + pz**2 + m**2)

    total = [a + b for a, b in zip(p4(lead), p4(sub))]
    np.testing.assert_allclose(ak.to_numpy(lead.event_mass), kin.mass(*total), rtol=2e-3)
    np.testing.assert_allclose(ak.to_numpy(lead.event_pt), kin.pt(*total[:2]), rtol=2e-3, atol=0.5)
    classes = read_metadata(next(hh4b_dir.glob("*.parquet")))["classes"]
    assert classes == ["QCD", "ttbar", "H_hh4b"]
    signal = rows[rows.label == 2]
    truth = np.unique(np.round(ak.to_numpy(signal.event_truth_mass), -2))
    assert truth.tolist() == [600, 800]  # chunk 0 and chunk 1 of the mass scan, 1% width
    assert ak.all(rows[rows.label != 2].event_truth_mass == 0)
    # h -> b b-bar fat jets: the signal jet mass sits at the Higgs mass, QCD jets lower
    assert 100 < np.median(ak.to_numpy(signal.jet_mass)) < 150
    assert np.median(ak.to_numpy(rows[rows.label == 0].jet_mass)) < np.median(ak.to_numpy(signal.jet_mass))
    manifest = json.loads((hh4b_dir / "manifest.json").read_text())
    signal_entry = manifest["per_class"]["H_hh4b"]
    assert signal_entry["jets"] == 10 and signal_entry["stored_jets"] == 20  # events, and jets stored
    assert [c["chunk_settings"] for c in manifest["chunks"] if c["class"] == "H_hh4b"] == [
        ["35:m0 = 600", "35:mWidth = 6"], ["35:m0 = 800", "35:mWidth = 8"]]
    with pytest.raises(JetDataError, match="whole events"):
        group_events(rows[1:], "shifted")
    with pytest.raises(JetDataError, match="not an event sample"):
        group_events(read_store(cached_dataset("top", 300, seed=1, cache_dir=hh4b_dir.parent.parent)))


@pytest.mark.parametrize(("name", "class_index"), [("top", 0), ("qg", 0), ("hh4b", 2), ("flavour", 4)])
def test_prefilter_keeps_every_event_with_a_jet(name, class_index):
    """Events skipped before clustering never hold a jet above the threshold in the eta range."""
    from jettag.data.generate.chunk import ETA_MARGIN
    from jettag.data.generate.clustering import cluster, may_hold_jet
    from jettag.data.generate.particles import visible_final_state
    from jettag.data.generate.pythia import ChargeTable
    from jettag.physics import kinematics as kin

    recipe = get_recipe(name)
    pythia = make_pythia(pythia_settings(recipe, recipe.classes[class_index], seed=99, mpi=False))
    ev = next_events(pythia, 150)
    parts = visible_final_state(ev, ChargeTable(pythia), recipe.abs_eta_max + recipe.radius + ETA_MARGIN)
    jets = cluster(parts, ev.n_events, recipe.radius, recipe.pt_min)
    central = np.abs(kin.eta(jets.px, jets.py, jets.pz)) < recipe.abs_eta_max
    has_jet = np.bincount(jets.event[central], minlength=ev.n_events) > 0
    ok = may_hold_jet(parts, ev.n_events, recipe.radius, recipe.pt_min, recipe.abs_eta_max)
    assert has_jet.sum() >= 10 and (~ok).sum() >= 10  # both kinds present: the test can fail
    assert not (has_jet & ~ok).any()


def test_event_recipe_refuses_per_jet_truth():
    from dataclasses import replace

    from jettag.data.generate.recipes import Match

    hh4b = get_recipe("hh4b")
    classes = (*hh4b.classes[:2], replace(hh4b.classes[2], match=Match((25,), quarks=2)))
    with pytest.raises(ValueError, match="per-jet truth requirement"):
        replace(hh4b, classes=classes)
