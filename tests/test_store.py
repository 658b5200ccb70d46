"""The canonical jet store: construction, validation and parquet round trips."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest
from jetfactory import random_jets

from jettag.data import formats, store
from jettag.data.store import DropReport, JetDataError


@pytest.fixture(scope="module")
def jets() -> ak.Array:
    return random_jets(40, seed=5, max_len=60, n_classes=3, with_impact=True)


@pytest.fixture(scope="module")
def written(tmp_path_factory, jets):
    path = tmp_path_factory.mktemp("store") / "jets.parquet"
    store.write_store(
        path, jets, ["a", "b", "c"], source="unit-test", metadata={"seed": 5}, row_group_size=16
    )
    return path


def test_make_jets_sorts_by_pt_and_keeps_attributes_aligned():
    px = ak.Array([[1.0, 3.0, -2.0], [0.5]])
    py = ak.Array([[0.0, 4.0, 0.0], [0.0]])
    pz = ak.Array([[1.0, 0.0, 2.0], [0.0]])
    e = ak.Array([[2.0, 6.0, 3.0], [1.0]])
    pid = ak.Array([[22, 211, -11], [130]])
    jets = store.make_jets(px, py, pz, e, label=np.array([1, 0]), pid=pid, charge=ak.Array([[0, 1, 1], [0]]))
    # pT = 1, 5, 2 -> order 1, 2, 0
    assert ak.to_list(jets["part_px"]) == [[3.0, -2.0, 1.0], [0.5]]
    assert ak.to_list(jets["part_pid"]) == [[211, -11, 22], [130]]
    assert ak.to_list(jets["part_charge"]) == [[1.0, 1.0, 0.0], [0.0]]
    assert ak.to_list(jets["jet_nparticles"]) == [3, 1]
    # jet = constituent sum (2, 4, 3, 11): pT sqrt(20), m sqrt(121 - 29)
    np.testing.assert_allclose(ak.to_numpy(jets["jet_pt"]), [np.sqrt(20), 0.5], rtol=1e-6)
    np.testing.assert_allclose(ak.to_numpy(jets["jet_mass"]), [np.sqrt(92), np.sqrt(0.75)], rtol=1e-6)
    np.testing.assert_allclose(ak.to_numpy(jets["jet_eta"])[0], np.arcsinh(3 / np.sqrt(20)), rtol=1e-6)
    assert jets["part_px"].type.content.content.primitive == "float32"
    assert jets["part_pid"].type.content.content.primitive == "int32"
    assert jets["label"].type.content.primitive == "int32"


def test_make_jets_uses_given_jet_p4(jets):
    n = len(jets)
    p4 = (np.full(n, 3.0), np.full(n, 4.0), np.zeros(n), np.full(n, 13.0))
    out = store.make_jets(jets["part_px"], jets["part_py"], jets["part_pz"], jets["part_energy"],
                          label=jets["label"], jet_p4=p4)  # fmt: skip
    np.testing.assert_allclose(ak.to_numpy(out["jet_pt"]), 5.0)
    np.testing.assert_allclose(ak.to_numpy(out["jet_mass"]), 12.0)
    assert (ak.to_numpy(ak.flatten(out["part_pid"])) == 0).all()  # unknown when not given


def test_jet_sums_match_independent_numpy(jets):
    counts = ak.to_numpy(ak.num(jets["part_px"], axis=1))
    starts = np.cumsum(counts) - counts
    sums = {f: np.add.reduceat(ak.to_numpy(ak.flatten(jets[f])).astype(np.float64), starts)
            for f in store.MOMENTUM_FIELDS}  # fmt: skip
    pt = np.hypot(sums["part_px"], sums["part_py"])
    m2 = sums["part_energy"] ** 2 - pt**2 - sums["part_pz"] ** 2
    np.testing.assert_allclose(ak.to_numpy(jets["jet_pt"]), pt, rtol=1e-6)
    np.testing.assert_allclose(ak.to_numpy(jets["jet_energy"]), sums["part_energy"], rtol=1e-6)
    # summed in float64: the mass of light (few-particle) jets keeps its precision too
    mass = np.sqrt(np.clip(m2, 0, None))
    np.testing.assert_allclose(ak.to_numpy(jets["jet_mass"]), mass, rtol=1e-5, atol=2e-3)
    phi = np.arctan2(sums["part_py"], sums["part_px"])
    np.testing.assert_allclose(ak.to_numpy(jets["jet_phi"]), phi, atol=1e-6)


def test_round_trip_and_metadata(written, jets):
    back = store.read_store(written)
    assert back.fields == jets.fields
    assert ak.to_list(back) == ak.to_list(jets)
    meta = store.read_metadata(written)
    assert meta == {"classes": ["a", "b", "c"], "source": "unit-test", "seed": 5}
    raw = pq.read_schema(written).metadata[b"jettag"]
    assert json.loads(raw)["classes"] == ["a", "b", "c"]
    assert pq.ParquetFile(written).metadata.num_row_groups == 3  # 40 jets / 16 per group
    assert formats.dataset_classes(written) == ["a", "b", "c"]


def test_iter_store_chunks_and_columns(written, jets):
    chunks = list(store.iter_store(written, chunk_size=15))
    assert [len(c) for c in chunks] == [15, 15, 10]
    assert ak.to_list(ak.concatenate(chunks)) == ak.to_list(jets)
    only = store.read_store(written, columns=["part_px", "label"])
    assert only.fields == ["part_px", "label"]
    with pytest.raises(JetDataError, match=r"jets\.parquet: missing field\(s\) \['nope'\]"):
        store.read_store(written, columns=["nope"])


def test_write_store_from_chunks_and_atomicity(tmp_path, jets):
    path = store.write_store(tmp_path / "c.parquet", iter([jets[:10], jets[10:]]), ["a", "b", "c"], "chunks")
    assert ak.to_list(store.read_store(path)) == ak.to_list(jets)

    def failing():
        yield jets[:10]
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        store.write_store(tmp_path / "f.parquet", failing(), ["a"], "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.parquet"]  # no partial or .tmp file
    with pytest.raises(JetDataError, match=r"e\.parquet: nothing to write"):
        store.write_store(tmp_path / "e.parquet", iter([]), ["a"], "x")


def test_validate_reports_file_field_row(jets):
    px = ak.to_list(jets["part_px"][:6])
    px[4][1] = float("nan")
    bad = ak.with_field(jets[:6], ak.values_astype(ak.Array(px), np.float32), "part_px")
    with pytest.raises(JetDataError, match=r"f\.h5: field 'part_px' has NaN/inf .* first at row 104"):
        store.validate_jets(bad, "f.h5", row_offset=100)
    kept, report = store.validate_jets(bad, "f.h5", drop_invalid=True)
    assert (report.kept, report.non_finite, report.empty, report.dropped) == (5, 1, 0, 1)
    assert ak.to_list(kept) == ak.to_list(jets[[0, 1, 2, 3, 5]])

    e = ak.to_list(jets["part_energy"][:6])
    e[2][0] = -1.0
    neg = ak.with_field(jets[:6], ak.values_astype(ak.Array(e), np.float32), "part_energy")
    with pytest.raises(JetDataError, match=r"g\.root: field 'part_energy' is negative in jet at row 2"):
        store.validate_jets(neg, "g.root", drop_invalid=True)

    with pytest.raises(JetDataError, match=r"h: missing field\(s\) \['label'\]"):
        store.validate_jets(jets[["part_px", "part_py", "part_pz", "part_energy"]], "h")


def test_validate_empty_jets():
    jets = store.make_jets(ak.Array([[1.0], []]), ak.Array([[0.0], []]), ak.Array([[0.0], []]),
                           ak.Array([[1.0], []]), label=np.array([0, 1]))  # fmt: skip
    with pytest.raises(JetDataError, match=r"1 jet.s. have no constituents, first at row 1"):
        store.validate_jets(jets, "x")
    kept, report = store.validate_jets(jets, "x", drop_invalid=True)
    assert len(kept) == 1 and report.empty == 1 and report.kept == 1
    total = DropReport()
    total += report
    total += report
    assert (total.empty, total.kept, total.dropped) == (2, 2, 2)


def test_resolve_paths(tmp_path, written):
    (tmp_path / "a.parquet").write_bytes(written.read_bytes())
    (tmp_path / "b.parquet").write_bytes(written.read_bytes())
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in store.resolve_paths(tmp_path)] == ["a.parquet", "b.parquet"]
    assert [p.name for p in store.resolve_paths(str(tmp_path / "*.parquet"))] == ["a.parquet", "b.parquet"]
    assert len(store.read_store(tmp_path)) == 80
    with pytest.raises(FileNotFoundError, match="missing"):
        store.resolve_paths(tmp_path / "missing.parquet")
    with pytest.raises(FileNotFoundError, match="holds no"):
        store.resolve_paths(tmp_path, suffixes=(".root",))


def test_dataset_classes_must_agree(tmp_path, jets):
    store.write_store(tmp_path / "a.parquet", jets, ["a", "b", "c"], "x")
    store.write_store(tmp_path / "b.parquet", jets, ["a", "b", "d"], "x")
    with pytest.raises(JetDataError, match=r"b\.parquet: classes \['a', 'b', 'd'\] differ"):
        formats.dataset_classes(tmp_path)
    plain = pq.read_table(tmp_path / "a.parquet").replace_schema_metadata(None)
    pq.write_table(plain, tmp_path / "n.parquet")
    with pytest.raises(JetDataError, match=r"n\.parquet: not a jettag store file"):
        store.read_metadata(tmp_path / "n.parquet")
