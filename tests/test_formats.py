"""Readers of the public layouts: each file is written with that layout's own writer (pandas,
numpy, uproot, pyarrow/awkward) from known jets and must read back to exactly those jets."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uproot
from jetfactory import random_jets

from jettag.data import formats, store
from jettag.data.store import JetDataError
from jettag.physics import kinematics as kin

N_TOP_SLOTS = 200
JETCLASS_LABELS = [
    "label_QCD", "label_Hbb", "label_Hcc", "label_Hgg", "label_H4q",
    "label_Hqql", "label_Zqq", "label_Wqq", "label_Tbqq", "label_Tbl",
]  # fmt: skip
FLAGS = ["part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron", "part_isMuon"]


# ------------------------------------------------------------------------------------------
# writers: the layouts as their producers write them (independent of jettag's readers)


def np_jagged(jets: ak.Array, field: str) -> tuple[np.ndarray, np.ndarray]:
    return ak.to_numpy(ak.flatten(jets[field])), ak.to_numpy(ak.num(jets[field], axis=1))


def padded(jets: ak.Array, field: str, width: int, dtype=np.float64) -> np.ndarray:
    """Zero-padded (N, width) array of a jagged field, by flat index arithmetic."""
    flat, counts = np_jagged(jets, field)
    out = np.zeros((len(counts), width), dtype=dtype)
    rows = np.repeat(np.arange(len(counts)), counts)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[rows, cols] = flat
    return out


def shuffled(jets: ak.Array, seed: int) -> ak.Array:
    """The same jets with constituents in a random order (readers must restore pT order)."""
    counts = ak.num(jets["part_px"], axis=1)
    keys = ak.unflatten(np.random.default_rng(seed).random(int(ak.sum(counts))), counts)
    perm = ak.argsort(keys, axis=1)
    return ak.zip({f: (jets[f][perm] if jets[f].ndim == 2 else jets[f]) for f in jets.fields}, depth_limit=1)


def write_toplandscape(
    path, jets: ak.Array, nan_at=None, negative_at=None, drop_column=None, fmt: str = "table",
    n_slots: int = N_TOP_SLOTS,
) -> None:
    cols = {}
    for prefix, field in (("E", "part_energy"), ("PX", "part_px"), ("PY", "part_py"), ("PZ", "part_pz")):
        arr = padded(jets, field, n_slots)
        if nan_at is not None and prefix == "PX":
            arr[nan_at] = np.nan
        if negative_at is not None and prefix == "E":
            arr[negative_at] = -1.0
        for i in range(n_slots):
            cols[f"{prefix}_{i}"] = arr[:, i]
    cols["truthE"] = np.zeros(len(jets))
    cols["ttv"] = np.zeros(len(jets))
    cols["is_signal_new"] = ak.to_numpy(jets["label"]).astype(np.int64)
    df = pd.DataFrame(cols)
    if drop_column:
        df = df.drop(columns=[drop_column])
    df.to_hdf(path, key="table", format=fmt, mode="w")


def write_energyflow(path, jets: ak.Array, pid_override=None) -> None:
    width = int(ak.max(ak.num(jets["part_px"], axis=1)))
    px, py, pz, e = (padded(jets, f, width) for f in ("part_px", "part_py", "part_pz", "part_energy"))
    pid = padded(jets, "part_pid", px.shape[1])
    real = e > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        pt = np.hypot(px, py)
        rap = np.where(real, 0.5 * np.log((e + pz) / (e - pz)), 0.0)
        phi = np.where(real, np.arctan2(py, px), 0.0)
    x = np.stack([pt, rap, phi, pid], axis=-1)
    if pid_override is not None:
        x[pid_override[0], pid_override[1], 3] = pid_override[2]
    np.savez(path, X=x, y=ak.to_numpy(jets["label"]).astype(np.float64))


def jetclass_flags(pid: np.ndarray) -> np.ndarray:
    a = np.abs(pid)
    return np.stack(
        [np.isin(a, [211, 321, 2212]), np.isin(a, [130, 2112]), a == 22, a == 11, a == 13], axis=1
    ).astype(np.float32)


def write_jetclass(path, jets: ak.Array, skip=(), empty_row=None, rntuple=False) -> dict[str, np.ndarray]:
    counts = ak.to_numpy(ak.num(jets["part_px"], axis=1))
    if empty_row is not None:
        keep = np.ones(int(counts.sum()), dtype=bool)
        start = int(counts[:empty_row].sum())
        keep[start : start + counts[empty_row]] = False
        counts = counts.copy()
        counts[empty_row] = 0
    else:
        keep = slice(None)
    data: dict[str, ak.Array | np.ndarray] = {}
    flat = {f: np_jagged(jets, f)[0][keep] for f in jets.fields if jets[f].ndim == 2}
    for f in ("part_px", "part_py", "part_pz", "part_energy", "part_charge",
              "part_d0val", "part_d0err", "part_dzval", "part_dzerr"):  # fmt: skip
        data[f] = ak.unflatten(flat[f].astype(np.float32), counts)
    flags = jetclass_flags(flat["part_pid"])
    for k, f in enumerate(FLAGS):
        data[f] = ak.unflatten(flags[:, k], counts)
    label = ak.to_numpy(jets["label"])
    for k, f in enumerate(JETCLASS_LABELS):
        data[f] = (label == k).astype(np.float32)
    # a stored jet that differs from the constituent sum: the reader must keep the stored one
    stored = {
        "jet_pt": ak.to_numpy(jets["jet_pt"]) * np.float32(1.01),
        "jet_eta": ak.to_numpy(jets["jet_eta"]),
        "jet_phi": ak.to_numpy(jets["jet_phi"]),
        "jet_energy": ak.to_numpy(jets["jet_energy"]) * np.float32(1.02),
    }
    data.update({k: v.astype(np.float32) for k, v in stored.items()})
    data["jet_sdmass"] = ak.to_numpy(jets["jet_mass"])
    data["jet_nparticles"] = counts.astype(np.float32)
    data = {k: v for k, v in data.items() if k not in skip}
    with uproot.recreate(path) as f:
        if rntuple:
            f["tree"] = data
        else:
            types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in data.items()}
            f.mktree("tree", types)
            f["tree"].extend(data)
    return stored


def write_weaver(path, jets: ak.Array, onehot: bool, n_classes: int) -> None:
    cols = {f: jets[f] for f in ("part_px", "part_py", "part_pz", "part_energy")}
    cols["part_deta"] = jets["part_px"] * 0  # present in weaver files, unused by jettag
    cols["part_dphi"] = jets["part_px"] * 0
    for f in ("jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_mass", "jet_nparticles"):
        cols[f] = jets[f]
    label = ak.to_numpy(jets["label"])
    if onehot:
        cols["part_pid"] = jets["part_pid"]
        cols["part_charge"] = jets["part_charge"]
        for k in range(n_classes):
            cols[f"label_c{k}"] = (label == k).astype(np.bool_)
        ak.to_parquet(ak.zip(cols, depth_limit=1), path)
    else:
        cols["label"] = label.astype(np.int64)
        table = pa.table({k: ak.to_arrow(v, extensionarray=False) for k, v in cols.items()})
        pq.write_table(table, path)


# ------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """One small file per layout and the jets it was written from (built once per module)."""
    d = tmp_path_factory.mktemp("formats")
    out = {}
    top = random_jets(30, seed=11, max_len=N_TOP_SLOTS)
    write_toplandscape(d / "top.h5", top)
    out["toplandscape_h5"] = (d / "top.h5", top)
    qg = random_jets(30, seed=12, max_len=80)
    write_energyflow(d / "QG_jets_0.npz", shuffled(qg, 1))
    out["energyflow_npz"] = (d / "QG_jets_0.npz", qg)
    jc = random_jets(30, seed=13, max_len=90, n_classes=10, with_impact=True)
    stored = write_jetclass(d / "jetclass.root", shuffled(jc, 2))
    out["jetclass_root"] = (d / "jetclass.root", jc)
    out["jetclass_stored"] = stored
    wv = random_jets(25, seed=14, max_len=70, n_classes=3)
    write_weaver(d / "weaver_onehot.parquet", shuffled(wv, 3), onehot=True, n_classes=3)
    out["weaver_parquet"] = (d / "weaver_onehot.parquet", wv)
    wv2 = random_jets(20, seed=15, max_len=40, n_classes=2)
    write_weaver(d / "weaver_int.parquet", wv2, onehot=False, n_classes=2)
    out["weaver_int"] = (d / "weaver_int.parquet", wv2)
    out["dir"] = d
    return out


def flat(jets: ak.Array, field: str) -> np.ndarray:
    return ak.to_numpy(ak.flatten(jets[field]))


def assert_same_particles(got: ak.Array, want: ak.Array, rtol: float = 2e-6, atol: float = 1e-5) -> None:
    np.testing.assert_array_equal(ak.to_numpy(ak.num(got["part_px"], axis=1)),
                                  ak.to_numpy(ak.num(want["part_px"], axis=1)))  # fmt: skip
    for f in ("part_px", "part_py", "part_pz", "part_energy"):
        np.testing.assert_allclose(flat(got, f), flat(want, f), rtol=rtol, atol=atol, err_msg=f)


def assert_pt_sorted(jets: ak.Array) -> None:
    """Independent check: within each jet, pT never increases from one particle to the next."""
    px, py = flat(jets, "part_px").astype(np.float64), flat(jets, "part_py").astype(np.float64)
    pt = np.hypot(px, py)
    counts = ak.to_numpy(ak.num(jets["part_px"], axis=1))
    same_jet = np.repeat(np.arange(len(counts)), counts)
    consecutive = same_jet[1:] == same_jet[:-1]
    assert (pt[1:][consecutive] <= pt[:-1][consecutive] * (1 + 1e-6)).all()


# ------------------------------------------------------------------------------------------
# detection and round trips


@pytest.mark.parametrize(
    "key, expected",
    [("toplandscape_h5", "toplandscape_h5"), ("energyflow_npz", "energyflow_npz"),
     ("jetclass_root", "jetclass_root"), ("weaver_parquet", "weaver_parquet"),
     ("weaver_int", "weaver_parquet")],
)  # fmt: skip
def test_detect_format_from_content(samples, tmp_path, key, expected):
    path = samples[key][0]
    assert formats.detect_format(path) == expected
    renamed = tmp_path / "no_extension"  # content, not the name, decides
    renamed.write_bytes(path.read_bytes())
    assert formats.detect_format(renamed) == expected


def test_toplandscape_round_trip(samples):
    path, want = samples["toplandscape_h5"]
    got = formats.read_jets(path)
    assert_same_particles(got, want)
    assert_pt_sorted(got)
    np.testing.assert_array_equal(ak.to_numpy(got["label"]), ak.to_numpy(want["label"]))
    assert (flat(got, "part_pid") == 0).all()  # the layout has no particle id
    assert formats.dataset_classes(path) == ["QCD", "Top"]
    # no stored jet: the jet is the constituent sum
    np.testing.assert_allclose(ak.to_numpy(got["jet_pt"]), ak.to_numpy(want["jet_pt"]), rtol=1e-5)


def test_toplandscape_fixed_format(samples, tmp_path):
    """pandas' default ``format="fixed"`` (block arrays instead of one table) reads the same jets."""
    path, want = samples["toplandscape_h5"]
    write_toplandscape(tmp_path / "fixed.h5", want, fmt="fixed")
    assert formats.detect_format(tmp_path / "fixed.h5") == "toplandscape_h5"
    assert formats.num_jets(tmp_path / "fixed.h5") == len(want)
    got = formats.read_jets(tmp_path / "fixed.h5", chunk_size=7)
    assert ak.to_list(got) == ak.to_list(formats.read_jets(path))


def test_energyflow_round_trip(samples):
    path, want = samples["energyflow_npz"]
    # the file holds true rapidities of massive particles: the "pdg" convention rebuilds them;
    # masses in the file come from the PDG id, jetfactory uses masses rounded to 5 digits
    got = formats.read_jets(path, qg_convention="pdg")
    assert_same_particles(got, want, rtol=1e-5)
    assert_pt_sorted(got)
    np.testing.assert_array_equal(flat(got, "part_pid"), flat(want, "part_pid"))
    np.testing.assert_array_equal(flat(got, "part_charge"), flat(want, "part_charge"))
    np.testing.assert_array_equal(ak.to_numpy(got["label"]), ak.to_numpy(want["label"]))
    assert formats.dataset_classes(path) == ["gluon", "quark"]
    default = formats.read_jets(path)  # "part": same ids, charges and pT, other 4-vectors
    np.testing.assert_array_equal(flat(default, "part_charge"), flat(got, "part_charge"))
    with pytest.raises(ValueError, match="qg_convention must be one of"):
        formats.read_jets(path, qg_convention="massless")


@pytest.fixture(scope="module")
def qg_file(tmp_path_factory):
    """An EnergyFlow-layout file built directly from (pT, y, phi, id) rows, sorted by pT so that
    stored particle k of a jet is file row entry k; soft massive hadrons make the two
    conventions differ clearly (eta - y and E - |p| grow as (m / pT)^2)."""
    rng = np.random.default_rng(41)
    n, width = 12, 30
    ids = np.array([211, -211, 321, -321, 2212, -2212, 130, 2112, 22, 11, -13])
    counts = rng.integers(5, width + 1, size=n)
    x = np.zeros((n, width, 4))
    for j, c in enumerate(counts):
        pt = np.sort(rng.uniform(0.3, 60.0, size=c))[::-1]
        x[j, :c] = np.stack(
            [pt, rng.uniform(-1.7, 1.7, size=c), rng.uniform(-np.pi, np.pi, size=c), rng.choice(ids, size=c)],
            axis=1,
        )
    path = tmp_path_factory.mktemp("qg") / "QG_jets_conv.npz"
    np.savez(path, X=x, y=rng.integers(0, 2, size=n).astype(np.float64))
    real = x[..., 0] > 0
    return path, {k: x[..., i][real] for i, k in enumerate(("pt", "y", "phi", "pid"))}


def _stored(jets: ak.Array) -> tuple[np.ndarray, ...]:
    return tuple(flat(jets, f).astype(np.float64) for f in ("part_px", "part_py", "part_pz", "part_energy"))


# Stored momenta are float32 (relative rounding 2^-24 per component): E^2 and p^2 built from them
# carry an error up to ~4 E^2 2^-24, eta = asinh(pz / pT) one of a few 1e-7.
F32 = 2.0**-24


def test_qg_convention_part_is_massless_with_eta_from_rapidity(qg_file):
    path, row = qg_file
    px, py, pz, e = _stored(formats.read_jets(path))  # the default is ParT's convention
    np.testing.assert_array_equal(np.sort(flat(formats.read_jets(path), "part_pid")), np.sort(row["pid"]))
    p2 = px**2 + py**2 + pz**2
    assert (np.abs(e**2 - p2) <= 4 * e**2 * F32).all(), "constituents are not massless"
    eta = np.arcsinh(pz / np.hypot(px, py))
    np.testing.assert_allclose(eta, row["y"], rtol=0, atol=1e-6)  # the file's column is eta here


def test_qg_convention_pdg_keeps_rapidity_and_pdg_masses(qg_file):
    path, row = qg_file
    jets = formats.read_jets(path, qg_convention="pdg")
    px, py, pz, e = _stored(jets)
    np.testing.assert_array_equal(flat(jets, "part_pid"), row["pid"])
    # y = 0.5 ln((E + pz) / (E - pz)) from float32 E, pz: |y| < 1.7 keeps E - pz >= E / 30, so the
    # rounding error of y stays below ~30 x 2^-24 = 2e-6
    np.testing.assert_allclose(kin.rapidity(pz, e), row["y"], rtol=0, atol=5e-6)
    pdg_m2 = np.array([formats.PDG_TABLE[abs(int(i))][0] for i in row["pid"]]) ** 2
    m2 = e**2 - (px**2 + py**2 + pz**2)
    tolerance = 4 * e**2 * F32 + 1e-12
    assert (np.abs(m2 - pdg_m2) <= tolerance).all(), "masses are not the PDG masses"
    assert (pdg_m2 > 10 * tolerance).sum() > 20  # enough soft massive hadrons to tell the two apart


def test_jetclass_round_trip(samples):
    path, want = samples["jetclass_root"]
    got = formats.read_jets(path)
    assert_same_particles(got, want)
    assert_pt_sorted(got)
    np.testing.assert_array_equal(ak.to_numpy(got["label"]), ak.to_numpy(want["label"]))
    assert formats.dataset_classes(path) == [n[len("label_"):] for n in JETCLASS_LABELS]
    charge = flat(want, "part_charge")
    np.testing.assert_array_equal(flat(got, "part_charge"), charge)
    # representative PDG ids, built here from the written flags by hand
    flags = jetclass_flags(flat(want, "part_pid")).astype(bool)
    sign = np.where(charge < 0, -1, 1)
    expected_pid = np.select(flags.T, [211 * sign, 130 * np.ones_like(sign), 22 * np.ones_like(sign),
                                       -11 * sign, -13 * sign], default=0)  # fmt: skip
    np.testing.assert_array_equal(flat(got, "part_pid"), expected_pid)
    # ... and the kinpid flags derived from them are exactly the flags in the file
    np.testing.assert_array_equal(jetclass_flags(flat(got, "part_pid")), flags.astype(np.float32))
    for f in ("part_d0val", "part_d0err", "part_dzval", "part_dzerr"):
        np.testing.assert_allclose(flat(got, f), flat(want, f).astype(np.float32), rtol=1e-7, err_msg=f)
    stored = samples["jetclass_stored"]  # stored jet kept, not replaced by the constituent sum
    np.testing.assert_allclose(ak.to_numpy(got["jet_pt"]), stored["jet_pt"], rtol=1e-6)
    np.testing.assert_allclose(ak.to_numpy(got["jet_energy"]), stored["jet_energy"], rtol=1e-6)
    np.testing.assert_allclose(ak.to_numpy(got["jet_eta"]), stored["jet_eta"], rtol=1e-5, atol=1e-6)


def test_jetclass_rntuple(tmp_path):
    want = random_jets(12, seed=21, max_len=30, n_classes=10, with_impact=True)
    write_jetclass(tmp_path / "jc.root", want, rntuple=True)
    got = formats.read_jets(tmp_path / "jc.root", chunk_size=5)
    assert_same_particles(got, want)
    np.testing.assert_array_equal(ak.to_numpy(got["label"]), ak.to_numpy(want["label"]))


def test_weaver_parquet_round_trip(samples):
    path, want = samples["weaver_parquet"]
    got = formats.read_jets(path)
    assert_same_particles(got, want)
    assert_pt_sorted(got)
    np.testing.assert_array_equal(flat(got, "part_pid"), flat(want, "part_pid"))
    np.testing.assert_array_equal(ak.to_numpy(got["label"]), ak.to_numpy(want["label"]))
    assert formats.dataset_classes(path) == ["c0", "c1", "c2"]

    path, want = samples["weaver_int"]
    got = formats.read_jets(path)
    assert_same_particles(got, want)
    np.testing.assert_array_equal(ak.to_numpy(got["label"]), ak.to_numpy(want["label"]))
    assert formats.dataset_classes(path) == ["0", "1"]


@pytest.mark.parametrize("key", ["toplandscape_h5", "energyflow_npz", "jetclass_root", "weaver_parquet"])
def test_chunked_equals_single_read(samples, key):
    path, want = samples[key]
    whole = formats.read_jets(path, chunk_size=10_000)
    chunks = list(formats.iter_jets(path, chunk_size=7))
    assert [len(c) for c in chunks] == [7] * (len(want) // 7) + ([len(want) % 7] if len(want) % 7 else [])
    joined = ak.concatenate(chunks)
    assert ak.to_list(joined) == ak.to_list(whole)
    head = formats.read_jets(path, chunk_size=4, max_jets=9)
    assert ak.to_list(head) == ak.to_list(whole[:9])


def test_jettag_store_and_mixed_dataset(samples, tmp_path):
    path, want = samples["toplandscape_h5"]
    store.write_store(tmp_path / "s.parquet", formats.read_jets(path), ["QCD", "Top"], source=str(path))
    assert formats.detect_format(tmp_path / "s.parquet") == "jettag"
    got = formats.read_jets(tmp_path / "s.parquet", chunk_size=8)
    assert_same_particles(got, want)
    both = formats.read_jets([tmp_path / "s.parquet", path])
    assert len(both) == 2 * len(want)
    with pytest.raises(JetDataError, match="classes"):
        formats.dataset_classes([tmp_path / "s.parquet", samples["energyflow_npz"][0]])


# ------------------------------------------------------------------------------------------
# bad input: every message names the file, the field and the row


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.h5"):
        formats.detect_format(tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError, match=r"nope\.h5"):
        list(formats.iter_jets(tmp_path / "nope.h5"))


def test_unknown_layouts(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"hello, this is not a jet file")
    with pytest.raises(formats.UnknownFormatError, match=r"junk\.h5.*b'hello, t'"):
        formats.detect_format(junk)
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2], "b": [3.0, 4.0]}), other)
    with pytest.raises(formats.UnknownFormatError, match=r"other\.parquet.*found columns \['a', 'b'\]"):
        formats.detect_format(other)
    np.savez(tmp_path / "z.npz", data=np.zeros(3))
    with pytest.raises(formats.UnknownFormatError, match=r"z\.npz.*'data\.npy'"):
        formats.detect_format(tmp_path / "z.npz")
    pd.DataFrame({"x": [1.0]}).to_hdf(tmp_path / "t.h5", key="table", format="table")
    with pytest.raises(formats.UnknownFormatError, match=r"t\.h5.*columns \['x'\]"):
        formats.detect_format(tmp_path / "t.h5")
    with uproot.recreate(tmp_path / "r.root") as f:
        f["events"] = {"x": np.zeros(3)}
    with pytest.raises(formats.UnknownFormatError, match=r"r\.root.*'events'"):
        formats.detect_format(tmp_path / "r.root")


def test_missing_branch_and_column(tmp_path):
    jets = random_jets(6, seed=31, max_len=10, n_classes=10, with_impact=True)
    write_jetclass(tmp_path / "jc.root", jets, skip=("part_isMuon",))
    with pytest.raises(JetDataError, match=r"jc\.root.*branch\(es\) \['part_isMuon'\]"):
        list(formats.iter_jets(tmp_path / "jc.root"))
    write_toplandscape(tmp_path / "top.h5", random_jets(4, seed=32, max_len=10), drop_column="PX_5")
    with pytest.raises(JetDataError, match=r"top\.h5.*\['PX_5'\]"):
        list(formats.iter_jets(tmp_path / "top.h5"))


def test_nan_momentum_names_absolute_row(tmp_path):
    jets = random_jets(20, seed=33, max_len=15)
    write_toplandscape(tmp_path / "top.h5", jets, nan_at=(12, 0))
    with pytest.raises(JetDataError, match=r"top\.h5: field 'part_px' .* row 12.*PX_\*"):
        list(formats.iter_jets(tmp_path / "top.h5", chunk_size=5))  # row 12 lies in the 3rd chunk
    kept = store.DropReport()
    got = formats.read_jets(tmp_path / "top.h5", chunk_size=5, drop_invalid=True, report=kept)
    assert (kept.kept, kept.non_finite, kept.empty) == (19, 1, 0)
    assert_same_particles(got, jets[np.arange(20) != 12])


def test_negative_energy(tmp_path):
    write_toplandscape(tmp_path / "neg.h5", random_jets(10, seed=34, max_len=15), negative_at=(7, 2))
    with pytest.raises(JetDataError, match=r"neg\.h5: field 'part_energy' is negative in jet at row 7"):
        list(formats.iter_jets(tmp_path / "neg.h5", drop_invalid=True))  # never dropped silently


def test_empty_jet(tmp_path):
    jets = random_jets(9, seed=35, max_len=12, n_classes=10, with_impact=True)
    write_jetclass(tmp_path / "e.root", jets, empty_row=4)
    with pytest.raises(JetDataError, match=r"e\.root: 1 jet\(s\) have no constituents, first at row 4"):
        list(formats.iter_jets(tmp_path / "e.root", chunk_size=3))
    report = store.DropReport()
    got = formats.read_jets(tmp_path / "e.root", chunk_size=3, drop_invalid=True, report=report)
    assert (report.kept, report.empty, report.non_finite, report.dropped) == (8, 1, 0, 1)
    assert_same_particles(got, jets[np.arange(9) != 4])


def test_energyflow_unknown_pid_and_bad_label(tmp_path):
    jets = random_jets(8, seed=36, max_len=10)
    write_energyflow(tmp_path / "qg.npz", jets, pid_override=(5, 0, 999))
    with pytest.raises(JetDataError, match=r"qg\.npz: field 'X\[\.\.\., 3\]' \(PDG id\) .*\[999\].* row 5"):
        list(formats.iter_jets(tmp_path / "qg.npz", chunk_size=3))
    jc = random_jets(5, seed=37, max_len=10, n_classes=10, with_impact=True)
    path = tmp_path / "jc.root"
    write_jetclass(path, jc)
    with uproot.open(path) as f:  # rewrite with a row that has two classes set
        data = f["tree"].arrays(library="ak")
    data = {k: data[k] for k in data.fields}
    two = ak.to_numpy(data["label_Hbb"]).copy()
    two[3] = 1
    data["label_Hbb"], data["label_QCD"] = two, np.where(np.arange(5) == 3, 1, ak.to_numpy(data["label_QCD"]))
    with uproot.recreate(path) as f:
        f.mktree("tree", {k: (v.type.content if isinstance(v, ak.Array) and v.ndim == 2 else np.float32)
                          for k, v in data.items() if not k.startswith("npart")})  # fmt: skip
        f["tree"].extend({k: v for k, v in data.items() if not k.startswith("npart")})
    with pytest.raises(JetDataError, match=r"jc\.root: one-hot label fields .* at row 3"):
        list(formats.iter_jets(path))


def test_jetclass_conflicting_flags(tmp_path):
    jets = random_jets(6, seed=38, max_len=10, n_classes=10, with_impact=True)
    path = tmp_path / "flags.root"
    write_jetclass(path, jets)
    with uproot.open(path) as f:
        data = f["tree"].arrays(library="ak")
    data = {k: data[k] for k in data.fields if not k.startswith("npart")}
    counts = ak.num(data["part_px"], axis=1)
    photon = ak.to_numpy(ak.flatten(data["part_isPhoton"])).copy()
    photon[int(ak.sum(counts[:2]))] = 1  # first particle of jet 2 is already something else (or a photon)
    charged = ak.to_numpy(ak.flatten(data["part_isChargedHadron"])).copy()
    charged[int(ak.sum(counts[:2]))] = 1
    data["part_isPhoton"] = ak.unflatten(photon, counts)
    data["part_isChargedHadron"] = ak.unflatten(charged, counts)
    with uproot.recreate(path) as f:
        f.mktree("tree", {k: (v.type.content if isinstance(v, ak.Array) and v.ndim == 2 else np.float32)
                          for k, v in data.items()})  # fmt: skip
        f["tree"].extend(data)
    with pytest.raises(JetDataError, match=r"flags\.root: particle 0 of the jet at row 2 has more than one"):
        list(formats.iter_jets(path))


def test_pid_helpers_against_table():
    pid = np.array([211, -211, 321, -2212, 11, -11, 13, -13, 22, 130, 2112, 0])
    np.testing.assert_array_equal(formats.charge_from_pid(pid), [1, -1, 1, -1, -1, 1, -1, 1, 0, 0, 0, 0])
    flags = jetclass_flags(pid)
    charge = formats.charge_from_pid(pid)
    rep = formats.pid_from_flags(flags, charge)
    np.testing.assert_array_equal(rep, [211, -211, 211, -211, 11, -11, 13, -13, 22, 130, 130, 0])
    np.testing.assert_array_equal(jetclass_flags(rep), flags)


def test_energyflow_nan_is_not_padding(tmp_path):
    jets = random_jets(8, seed=39, max_len=10)
    write_energyflow(tmp_path / "nan.npz", jets)
    with np.load(tmp_path / "nan.npz", allow_pickle=False) as f:
        x, y = f["X"].copy(), f["y"]
    x[6, 0, :3] = np.nan  # a NaN entry must be reported, not mistaken for zero padding
    np.savez(tmp_path / "nan.npz", X=x, y=y)
    with pytest.raises(JetDataError, match=r"nan\.npz: field 'part_px' .* row 6.*X\[\.\.\., 0:3\]"):
        list(formats.iter_jets(tmp_path / "nan.npz", chunk_size=4))
    report = store.DropReport()
    got = formats.read_jets(tmp_path / "nan.npz", drop_invalid=True, report=report, qg_convention="pdg")
    assert (report.kept, report.non_finite) == (7, 1)
    assert_same_particles(got, jets[np.arange(8) != 6], rtol=1e-5)


def test_qg_convention_cli_flag(qg_file, tmp_path, capsys):
    from jettag.cli import main

    path, _ = qg_file
    masses = {}
    for conv in ("part", "pdg"):
        assert main(["convert", str(path), "--out", str(tmp_path / conv), "--qg-convention", conv]) == 0
        out = tmp_path / conv / "QG_jets_conv.parquet"
        assert store.read_metadata(out)["qg_convention"] == conv
        stored = formats.read_jets(out)
        assert ak.to_list(stored) == ak.to_list(formats.read_jets(path, qg_convention=conv))
        masses[conv] = ak.to_numpy(stored["jet_mass"])
        capsys.readouterr()
        assert main(["inspect", str(path), "--json", "--qg-convention", conv]) == 0
        shown = json.loads(capsys.readouterr().out)[0]["stats"]["jet_mass"]["mean"]
        np.testing.assert_allclose(shown, masses[conv].mean(), rtol=1e-6)  # float32 masses, float64 mean
    assert not np.allclose(masses["part"], masses["pdg"], rtol=1e-4)
