"""Features against an independent per-jet numpy computation written from features.md.

The reference below recomputes every feature of ``full`` jet by jet, particle by particle
definition, with its own constants (copied from the reference table, not imported), so a wrong
constant, order, sign convention or truncation in ``jettag.data.features`` makes a test fail.
"""

from __future__ import annotations

import math
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from jetfactory import random_jets

from jettag.data.features import FEATURE_SETS, build_inputs, particle_features
from jettag.data.store import JetDataError, make_jets

# name -> (a, b, lo, hi) exactly as written in shared/reference/features.md
REF_TRANSFORM = {
    "part_pt_log": (1.7, 0.7, -5, 5),
    "part_e_log": (2.0, 0.7, -5, 5),
    "part_logptrel": (-4.7, 0.7, -5, 5),
    "part_logerel": (-4.7, 0.7, -5, 5),
    "part_deltaR": (0.2, 4.0, -5, 5),
    "part_d0err": (0.0, 1.0, 0, 1),
    "part_dzerr": (0.0, 1.0, 0, 1),
}
REF_FULL = ["part_pt_log", "part_e_log", "part_logptrel", "part_logerel", "part_deltaR", "part_charge",
            "part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron", "part_isMuon",
            "part_d0", "part_d0err", "part_dz", "part_dzerr", "part_deta", "part_dphi"]


def reference_jet(jet: dict, max_len: int, flip: bool) -> np.ndarray:
    """All 17 `full` features of one jet, (n_kept, 17), from the plain definitions."""
    px, py, pz, e = (np.asarray(jet[f], dtype=np.float64)[:max_len]
                     for f in ("part_px", "part_py", "part_pz", "part_energy"))
    pt = np.sqrt(px**2 + py**2)
    eta = np.arcsinh(pz / pt)
    phi = np.arctan2(py, px)
    deta = eta - jet["jet_eta"]
    if flip:
        deta = deta * (1.0 if jet["jet_eta"] >= 0 else -1.0)
    dphi = phi - jet["jet_phi"]
    dphi = dphi - 2 * math.pi * np.floor((dphi + math.pi) / (2 * math.pi))
    rows = []
    for k in range(len(px)):
        pid = int(jet["part_pid"][k])
        q = float(jet["part_charge"][k])
        ele, mu, pho = abs(pid) == 11, abs(pid) == 13, pid == 22
        raw = {
            "part_pt_log": math.log(pt[k]),
            "part_e_log": math.log(e[k]),
            "part_logptrel": math.log(pt[k] / jet["jet_pt"]),
            "part_logerel": math.log(e[k] / jet["jet_energy"]),
            "part_deltaR": math.hypot(deta[k], dphi[k]),
            "part_charge": q,
            "part_isChargedHadron": float(q != 0 and not (ele or mu)),
            "part_isNeutralHadron": float(q == 0 and not pho),
            "part_isPhoton": float(pho),
            "part_isElectron": float(ele),
            "part_isMuon": float(mu),
            "part_d0": math.tanh(jet["part_d0val"][k]),
            "part_d0err": jet["part_d0err"][k],
            "part_dz": math.tanh(jet["part_dzval"][k]),
            "part_dzerr": jet["part_dzerr"][k],
            "part_deta": deta[k],
            "part_dphi": dphi[k],
        }
        row = []
        for name in REF_FULL:
            x = raw[name]
            if name in REF_TRANSFORM:
                a, b, lo, hi = REF_TRANSFORM[name]
                x = min(max((x - a) * b, lo), hi)
            row.append(x)
        rows.append(row)
    return np.array(rows)


def edge_jets() -> ak.Array:
    """Hand-made jets whose particles hit every clip: ultra-soft (pt_log, logptrel, logerel at -5),
    ultra-hard (pt_log, e_log at +5), far from the axis (deltaR at +5), d0err/dzerr above 1 and
    below 0, large |d0|, |dz| (tanh saturation), a jet at negative eta and one at phi ~ pi."""
    def p4(pt, eta, phi, m=0.0):
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        return px, py, pz, np.sqrt(px**2 + py**2 + pz**2 + m**2)

    jets = [
        # (pt, eta, phi, pid, charge, d0, d0err, dz, dzerr)
        [(12000.0, -1.2, 3.1, 211, 1, 30.0, 2.5, -40.0, 1.7),
         (1e-4, -1.25, 3.12, 22, 0, 0.0, -0.1, 0.0, -0.3),
         (50.0, -2.9, -3.1, 13, -1, -0.02, 0.5, 0.03, 0.2), (30.0, -1.1, -3.05, 2112, 0, 0.0, 0.0, 0.0, 0.0)],
        [(400.0, 0.7, 0.1, 11, -1, 0.1, 0.01, 0.2, 0.02), (5.0, 0.75, -0.2, 130, 0, 0.0, 0.0, 0.0, 0.0),
         (2e-3, 2.4, 1.9, -321, -1, -5.0, 3.0, 5.0, 0.0)],
        # jet eta exactly 0 (pz cancels): the flip must use +1 there, not sign(0) = 0
        [(100.0, 0.3, 0.0, 211, 1, 0.0, 0.1, 0.0, 0.1), (100.0, -0.3, 0.2, -211, -1, 0.0, 0.1, 0.0, 0.1)],
    ]
    cols = {k: [] for k in ("px", "py", "pz", "e", "pid", "q", "d0", "d0e", "dz", "dze")}
    for jet in jets:
        vals = [(*p4(pt, eta, phi, 0.13957 if abs(pid) == 211 else 0.0), pid, q, d0, d0e, dz, dze)
                for pt, eta, phi, pid, q, d0, d0e, dz, dze in jet]
        for k, col in zip(cols, zip(*vals)):
            cols[k].append(list(col))
    return make_jets(cols["px"], cols["py"], cols["pz"], cols["e"], label=np.array([1, 0, 1]),
                     pid=cols["pid"], charge=cols["q"],
                     extra_particle={"part_d0val": cols["d0"], "part_d0err": cols["d0e"],
                                     "part_dzval": cols["dz"], "part_dzerr": cols["dze"]})


@pytest.fixture(scope="module")
def jets() -> ak.Array:
    return random_jets(60, seed=3, min_len=1, max_len=160, with_impact=True)


def reference_flat(jets: ak.Array, max_len: int, flip: bool) -> np.ndarray:
    return np.concatenate([reference_jet(j, max_len, flip) for j in ak.to_list(jets)])


def test_feature_set_names_and_order():
    assert FEATURE_SETS["full"] == REF_FULL
    assert FEATURE_SETS["kin"] == [*REF_FULL[:5], "part_deta", "part_dphi"]
    assert FEATURE_SETS["kinpid"] == [*REF_FULL[:11], "part_deta", "part_dphi"]


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("max_len", [128, 37])
def test_full_matches_reference(jets, flip, max_len):
    feats, vecs, offsets = particle_features(jets, "full", max_len=max_len, deta_sign_flip=flip)
    counts = np.minimum(ak.to_numpy(ak.num(jets["part_px"])), max_len)
    assert offsets.dtype == np.int64 and feats.dtype == np.float32 and vecs.dtype == np.float32
    np.testing.assert_array_equal(offsets, np.concatenate([[0], np.cumsum(counts)]))
    ref = reference_flat(jets, max_len, flip)
    np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=2e-5)
    ref_vec = np.concatenate([np.stack([np.asarray(j[f][:max_len]) for f in
                                        ("part_px", "part_py", "part_pz", "part_energy")], 1)
                              for j in ak.to_list(jets)])
    np.testing.assert_allclose(vecs, ref_vec, rtol=1e-6)


def test_kin_and_kinpid_are_the_named_columns_of_full(jets):
    full = particle_features(jets, "full")[0]
    for name in ("kin", "kinpid"):
        cols = [REF_FULL.index(n) for n in FEATURE_SETS[name]]
        np.testing.assert_array_equal(particle_features(jets, name)[0], full[:, cols])


def test_clipping_and_sign_conventions():
    jets = edge_jets()
    for flip in (False, True):
        feats = particle_features(jets, "full", deta_sign_flip=flip)[0]
        np.testing.assert_allclose(feats, reference_flat(jets, 128, flip), rtol=1e-5, atol=2e-5)
    feats = particle_features(jets, "full")[0]
    col = {n: feats[:, i] for i, n in enumerate(REF_FULL)}
    # the clips are really reached (otherwise this test would not test them)
    assert col["part_pt_log"].max() == 5 and col["part_pt_log"].min() == -5
    assert col["part_e_log"].max() == 5
    assert col["part_logptrel"].min() == -5 and col["part_logerel"].min() == -5
    assert col["part_deltaR"].max() == 5
    assert col["part_d0err"].max() == 1 and col["part_d0err"].min() == 0
    assert col["part_dzerr"].max() == 1 and col["part_dzerr"].min() == 0
    assert np.isclose(col["part_d0"].max(), 1.0) and np.isclose(col["part_dz"].min(), -1.0)
    assert (col["part_dphi"] >= -np.pi).all() and (col["part_dphi"] <= np.pi).all()
    # first jet sits at negative eta: the flip changes the sign of deta there and only there
    flipped = particle_features(jets, "full", deta_sign_flip=True)[0][:, REF_FULL.index("part_deta")]
    jet_eta = ak.to_numpy(jets["jet_eta"])
    assert jet_eta[0] < 0 < jet_eta[1] and jet_eta[2] == 0
    n0 = len(jets[0]["part_px"])
    np.testing.assert_array_equal(flipped[:n0], -col["part_deta"][:n0])
    np.testing.assert_array_equal(flipped[n0:], col["part_deta"][n0:])
    assert (col["part_deta"][-2:] != 0).all()
    # one flag per particle
    flags = feats[:, 6:11]
    np.testing.assert_array_equal(flags.sum(1), 1)


def test_build_inputs_padding_truncation(jets):
    max_len = 40
    out = build_inputs(jets, "full", max_len=max_len)
    n = len(jets)
    assert out["features"].shape == (n, 17, max_len) and out["points"].shape == (n, 2, max_len)
    assert out["vectors"].shape == (n, 4, max_len) and out["mask"].shape == (n, 1, max_len)
    assert out["mask"].dtype == np.bool_
    np.testing.assert_array_equal(out["label"], ak.to_numpy(jets["label"]))
    for k, jet in enumerate(ak.to_list(jets)):
        m = min(len(jet["part_px"]), max_len)
        ref = reference_jet(jet, max_len, False)
        np.testing.assert_allclose(out["features"][k, :, :m].T, ref, rtol=1e-5, atol=2e-5)
        np.testing.assert_array_equal(out["points"][k], out["features"][k, -2:])
        np.testing.assert_array_equal(out["mask"][k, 0], np.arange(max_len) < m)
        for key in ("features", "vectors", "points"):
            assert not out[key][k, :, m:].any(), f"padding of jet {k} in {key} is not zero"
        np.testing.assert_allclose(out["vectors"][k, 0, :m], np.asarray(jet["part_px"][:m]), rtol=1e-6)


def test_missing_impact_fields_are_named():
    jets = random_jets(5, seed=1)
    with pytest.raises(JetDataError, match="part_d0val"):
        particle_features(jets, "full", source="some.parquet")
    with pytest.raises(ValueError, match="unknown feature set"):
        particle_features(jets, "kinpidplusplus")


def test_unknown_pid_is_an_error_naming_the_jet():
    jets = random_jets(6, seed=2, min_len=3, max_len=5)
    pid = ak.to_list(jets["part_pid"])
    pid[4][1] = 0
    jets = ak.with_field(jets, ak.values_astype(ak.Array(pid), np.int32), "part_pid")
    with pytest.raises(JetDataError, match=r"x\.parquet.*part_pid.*row 4"):
        particle_features(jets, "kinpid", source="x.parquet")
    particle_features(jets, "kin")  # kin does not need ids


def test_non_finite_feature_names_field_and_jet():
    jets = random_jets(6, seed=2, min_len=3, max_len=5)
    e = ak.to_list(jets["part_energy"])
    e[3][0] = float("nan")
    jets = ak.with_field(jets, ak.values_astype(ak.Array(e), np.float32), "part_energy")
    with pytest.raises(JetDataError, match=r"y\.parquet.*part_e_log.*row 3"):
        particle_features(jets, "kin", source="y.parquet")


def test_kin_matches_weaver_core_preprocessing(tmp_path):
    """weaver-core's own preprocessing (ParT's top_kin.yaml) of the same jets gives the same `kin`."""
    pytest.importorskip("weaver")
    from weaver.utils.dataset import SimpleIterDataset

    jets = random_jets(40, seed=12, min_len=1, max_len=140)
    # the file's deta/dphi written here with plain numpy, as ParT's conversion scripts do
    lists = ak.to_list(jets)
    deta, dphi = [], []
    for jet in lists:
        px, py, pz = (np.asarray(jet[f], dtype=np.float64) for f in ("part_px", "part_py", "part_pz"))
        deta.append((np.arcsinh(pz / np.hypot(px, py)) - jet["jet_eta"]).tolist())
        d = np.arctan2(py, px) - jet["jet_phi"]
        dphi.append((d - 2 * np.pi * np.floor((d + np.pi) / (2 * np.pi))).tolist())
    table = {f: jets[f] for f in ("part_px", "part_py", "part_pz", "part_energy", "jet_pt", "jet_eta",
                                  "jet_phi", "jet_energy", "label")}
    table["part_deta"] = ak.values_astype(ak.Array(deta), np.float32)
    table["part_dphi"] = ak.values_astype(ak.Array(dphi), np.float32)
    ak.to_parquet(ak.zip(table, depth_limit=1), tmp_path / "w.parquet")
    config = tmp_path / "top_kin.yaml"
    config.write_text((Path(__file__).resolve().parents[1] / "benchmarks/configs/top_kin.yaml").read_text())

    dataset = SimpleIterDataset({"_": [str(tmp_path / "w.parquet")]}, str(config), for_training=True,
                                fetch_step=1, load_range_and_fraction=((0, 1), 1, 1), async_load=False)
    ours = build_inputs(jets, "kin", max_len=128)
    lead = {tuple(v): k for k, v in enumerate(ours["vectors"][:, :, 0].tolist())}
    seen = set()
    for x, y, _ in dataset:
        k = lead[tuple(x["pf_vectors"][:, 0].tolist())]
        seen.add(k)
        n = int(x["pf_mask"].sum())
        assert n == int(ours["mask"][k].sum())
        np.testing.assert_allclose(x["pf_features"][:, :n], ours["features"][k, :, :n], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(x["pf_points"][:, :n], ours["points"][k, :, :n], rtol=1e-5, atol=1e-5)
        assert y["_label_"] == 1 - ours["label"][k]  # weaver's one-hot [isTop, isQCD] -> argmax
    assert seen == set(range(40))


def test_error_messages_exact_and_jet_rows_counted_from_offsets():
    """The whole message: particle counts, the first bad jet's row (found through the offsets, so
    jets before it with other particle counts must be counted right), the feature set's name."""
    from jettag.data.features import _jet_of_flat_index

    offsets = np.array([0, 3, 3, 5, 9])  # jet 1 empty
    assert [_jet_of_flat_index(offsets, i) for i in (0, 2, 3, 4, 5, 8)] == [0, 0, 2, 2, 3, 3]
    jets = random_jets(6, seed=2, min_len=3, max_len=5)
    pid = ak.to_list(jets["part_pid"])
    pid[4][1] = pid[4][2] = pid[5][0] = 0
    bad_pid = ak.with_field(jets, ak.values_astype(ak.Array(pid), np.int32), "part_pid")
    want = (r"^x\.parquet: field 'part_pid' is 0 \(unknown particle id\) for 3 particle\(s\), first in jet "
            r"at row 4; feature set 'kinpid' needs particle ids \(use 'kin' for this dataset\)$")
    with pytest.raises(JetDataError, match=want):
        particle_features(bad_pid, "kinpid", source="x.parquet")
    e = ak.to_list(jets["part_energy"])
    e[3][0] = e[3][1] = float("nan")
    e[5][2] = float("nan")
    bad_e = ak.with_field(jets, ak.values_astype(ak.Array(e), np.float32), "part_energy")
    want = (r"^y\.parquet: feature 'part_e_log' is not finite for 3 particle\(s\), first in jet at row 3; "
            r"check that jet's momenta/energies$")
    with pytest.raises(JetDataError, match=want):
        particle_features(bad_e, "kin", source="y.parquet")
    with pytest.raises(JetDataError, match=r"^<memory>: feature 'part_e_log' is not finite"):
        particle_features(bad_e, "kin")  # jets built in memory are named as such
    with pytest.raises(ValueError, match=r"^max_len must be >= 1, got 0$"):
        particle_features(jets, "kin", max_len=0)
    with pytest.raises(JetDataError, match=r"^z: field 'label' is missing \(present: \["):
        build_inputs(jets[["part_px", "part_py", "part_pz", "part_energy"]], "kin", source="z")


def test_table_extra_rows_fields_and_pad_flat():
    from jettag.data.features import pad_flat, particle_table, required_fields

    assert required_fields("kin") == ["part_px", "part_py", "part_pz", "part_energy",
                                      "jet_pt", "jet_eta", "jet_phi", "jet_energy"]
    assert required_fields("kinpid")[-2:] == ["part_pid", "part_charge"]
    assert required_fields("full")[-4:] == ["part_d0val", "part_d0err", "part_dzval", "part_dzerr"]
    jets = random_jets(5, seed=4, min_len=2, max_len=6)
    table, offsets = particle_table(jets, "kin", extra_rows=3)
    feats, vecs, offsets2 = particle_features(jets, "kin")
    n = int(offsets[-1])
    assert table.shape == (n + 3, 7 + 4) and table.dtype == np.float32
    assert not table[n:].any()  # the rows the loader points padding at are zeros
    np.testing.assert_array_equal(table[:n, :7], feats)
    np.testing.assert_array_equal(table[:n, 7:], vecs)
    np.testing.assert_array_equal(offsets, offsets2)
    assert offsets.dtype == np.int64 and offsets[0] == 0
    values = np.arange(10, dtype=np.float32).reshape(5, 2)
    out = pad_flat(values, np.array([0, 2, 2, 5]), 4)
    assert out.shape == (3, 2, 4)
    np.testing.assert_array_equal(out[0], [[0, 2, 0, 0], [1, 3, 0, 0]])
    assert not out[1].any()
    np.testing.assert_array_equal(out[2], [[4, 6, 8, 0], [5, 7, 9, 0]])
    # offsets of a slice of a longer table (first jet starting at row 2)
    np.testing.assert_array_equal(pad_flat(values[2:], np.array([2, 5]), 3)[0], [[4, 6, 8], [5, 7, 9]])
    with pytest.raises(ValueError, match=r"^a jet has 3 particles, more than the padded length 2$"):
        pad_flat(values, np.array([0, 2, 2, 5]), 2)
