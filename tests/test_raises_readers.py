"""Reader layer: each reader's refusals name the file, the field and (read in chunks) the absolute row.

Every row-level case is read with ``chunk_size=CHUNK`` and puts the bad row in a later chunk, so a
message that gave the row within its chunk instead of within the file would fail the test.
Files are hand-written, a few jets each (energyflow npz, weaver/jettag parquet, HDF5, ROOT).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uproot
from jetfactory import random_jets

from jettag.data import formats, store
from jettag.data.formats.common import IMPACT_FIELDS, JETCLASS_LABELS, PID_FLAGS
from jettag.data.store import JetDataError


def _id(text: str) -> str:
    """A test id from a message pattern: word characters only, so that the node id can be passed back
    to pytest on a command line (mutmut runs tests by node id; regex escapes in ids broke that)."""
    return re.sub(r"\W+", "_", text).strip("_")

CHUNK = 3  # rows per chunk: bad rows below sit at 4..8, in the second or third chunk
N_JETS = 9


def _read(path: Path) -> None:
    list(formats.iter_jets(path, chunk_size=CHUNK))


def _raises(path: Path, pattern: str) -> None:
    with pytest.raises(JetDataError) as err:
        _read(path)
    assert re.search(pattern.replace("{file}", re.escape(path.name)), str(err.value)), str(err.value)


# ------------------------------------------------------------------ energyflow npz
def _energyflow_x(n: int = N_JETS, width: int = 5, seed: int = 0) -> np.ndarray:
    """(pT, y, phi, PDG id) rows of massless pions, zero padded after a random length."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, width, 4))
    for i, k in enumerate(rng.integers(1, width + 1, size=n)):
        x[i, :k] = np.stack([rng.uniform(1, 50, k), rng.normal(0, 1, k), rng.uniform(-3, 3, k),
                             np.full(k, 211.0)], axis=1)
    return x


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    return buf.getvalue()


def _npz(path: Path, members: dict[str, bytes | np.ndarray]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in members.items():
            zf.writestr(name + ".npy", _npy_bytes(value) if isinstance(value, np.ndarray) else value)
    return path


def _x_with(row: int, column: int, value: float) -> np.ndarray:
    x = _energyflow_x()
    x[row, 0, column] = value
    return x


Y = np.arange(N_JETS, dtype=np.float64) % 2
ENERGYFLOW_CASES = [
    ({"X": _x_with(7, 0, -2.0), "y": Y},
     r"{file}: field 'X\[\.\.\., 0\]' \(pT\) is negative in the jet at row 7$"),
    ({"X": _x_with(4, 3, 211.5), "y": Y},
     r"{file}: field 'X\[\.\.\., 3\]' \(PDG id\) is not an integer at row 4$"),
    ({"X": _energyflow_x()[..., :3], "y": Y}, r"{file}: array 'X' must have shape \(jets, particles, 4\), "
                                              r"found \(9, 5, 3\)"),
    ({"X": _energyflow_x(), "y": Y[:4]}, r"{file}: array 'y' has shape \(4,\), expected \(9,\)"),
    ({"X": _energyflow_x(), "y": np.array(["a"] * N_JETS)},
     r"{file}: array 'y' has dtype <U1, expected real"),
    ({"X": _energyflow_x(), "y": np.array([None] * N_JETS)}, r"{file}: array 'y' holds Python objects"),
    ({"X": np.asfortranarray(_energyflow_x()), "y": Y}, r"{file}: array 'X' is Fortran-ordered"),
    ({"X": b"\x93NUMPY\x03\x00" + b"\x00" * 16, "y": Y},
     r"{file}: array 'X' uses unsupported \.npy format version \(3, 0\)"),
    ({"X": _npy_bytes(_energyflow_x())[:-40], "y": Y}, r"{file}: truncated array \(expected 3 more rows\)"),
]


@pytest.mark.parametrize(("members", "pattern"), ENERGYFLOW_CASES,
                         ids=[_id(c[1][8:40]) for c in ENERGYFLOW_CASES])
def test_energyflow_refusals_name_file_field_and_row(tmp_path: Path, members: dict, pattern: str) -> None:
    _raises(_npz(tmp_path / "qg.npz", members), pattern)


def test_energyflow_reader_names_a_missing_array_when_called_directly(tmp_path: Path) -> None:
    """``detect_format`` refuses an npz without 'y' first; the reader itself still names it."""
    path = _npz(tmp_path / "qg.npz", {"X": _energyflow_x()})
    with pytest.raises(JetDataError, match=r"qg\.npz: array 'y' missing; the npz holds \['X\.npy'\]"):
        formats._reader("energyflow_npz").num_jets(path)


# ------------------------------------------------------------------ weaver parquet
def _weaver_columns(seed: int = 1) -> dict[str, ak.Array | np.ndarray]:
    jets = random_jets(N_JETS, seed=seed, min_len=2, max_len=6)
    cols: dict[str, ak.Array | np.ndarray] = {f: jets[f] for f in store.MOMENTUM_FIELDS}
    cols["label"] = ak.to_numpy(jets["label"]).astype(np.int64)
    return cols


def _write_weaver(path: Path, cols: dict[str, ak.Array | np.ndarray]) -> Path:
    table = pa.table({k: ak.to_arrow(ak.Array(v), extensionarray=False) for k, v in cols.items()})
    pq.write_table(table, path, row_group_size=CHUNK)
    return path


def _drop_last_particle(row: int, field: str) -> Callable[[dict], None]:
    def edit(cols: dict) -> None:
        lists = ak.to_list(cols[field])
        lists[row] = lists[row][:-1]
        cols[field] = ak.Array(lists)
    return edit


def _label_at(row: int, value: float) -> Callable[[dict], None]:
    def edit(cols: dict) -> None:
        label = np.asarray(cols["label"], dtype=np.float64 if isinstance(value, float) else np.int64)
        label[row] = value
        cols["label"] = label
    return edit


def _add(*fields: str) -> Callable[[dict], None]:
    def edit(cols: dict) -> None:
        for f in fields:
            cols[f] = cols["part_px"] * 0
    return edit


def _null_at(row: int, field: str) -> Callable[[dict], None]:
    def edit(cols: dict) -> None:
        values = ak.to_list(cols[field])
        values[row] = None
        cols[field] = ak.Array(values)
    return edit


WEAVER_CASES = [
    (_null_at(7, "label"), r"{file}: field 'label' is missing \(null\) at row 7$"),
    (_null_at(5, "part_pz"), r"{file}: field 'part_pz' is missing \(null\) for the jet at row 5$"),
    (_drop_last_particle(5, "part_py"),
     r"{file}: field 'part_py' has a different number of particles than 'part_px' at row 5$"),
    (_label_at(7, -1), r"{file}: field 'label' must be a non-negative integer, found -1\.0 at row 7$"),
    (_label_at(4, 0.5), r"{file}: field 'label' must be a non-negative integer, found 0\.5 at row 4$"),
    (_add(IMPACT_FIELDS[0]), rf"{{file}}: impact-parameter field\(s\) .*'{IMPACT_FIELDS[1]}'.* missing while "
                             rf"\['{IMPACT_FIELDS[0]}'\] are present"),
    (_add(PID_FLAGS[0]), rf"{{file}}: particle-id field\(s\) .*'{PID_FLAGS[1]}'.* missing while "
                         rf"\['{PID_FLAGS[0]}'\] are present"),
]


@pytest.mark.parametrize(("edit", "pattern"), WEAVER_CASES, ids=[_id(c[1][8:40]) for c in WEAVER_CASES])
def test_weaver_refusals_name_file_field_and_row(tmp_path: Path, edit: Callable[[dict], None],
                                                 pattern: str) -> None:
    cols = _weaver_columns()
    edit(cols)
    _raises(_write_weaver(tmp_path / "weaver.parquet", cols), pattern)


def test_weaver_reader_names_missing_columns_when_called_directly(tmp_path: Path) -> None:
    """``detect_format`` refuses such files first; the reader still names what is missing."""
    reader = formats._reader("weaver_parquet")
    cols = _weaver_columns()
    del cols["label"]
    path = _write_weaver(tmp_path / "nolabel.parquet", cols)
    pattern = r"nolabel\.parquet: field 'label' \(or one-hot 'label_\*' fields\) is missing; the file has \["
    with pytest.raises(JetDataError, match=pattern):
        reader.classes(path)
    cols = _weaver_columns()
    del cols["part_energy"]
    path = _write_weaver(tmp_path / "noenergy.parquet", cols)
    with pytest.raises(JetDataError, match=r"noenergy\.parquet: field\(s\) \['part_energy'\] missing"):
        list(reader.chunks(path, CHUNK, None))


# ------------------------------------------------------------------ jettag store files
def _write_store_table(path: Path, table: pa.Table, classes: object) -> Path:
    meta = {store.METADATA_KEY: json.dumps({"classes": classes, "source": "test"}).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path, row_group_size=CHUNK)
    return path


def _store_table(**label: int) -> pa.Table:
    jets = random_jets(N_JETS, seed=2, max_len=6)
    if label:
        (row, value), = ((int(k[1:]), v) for k, v in label.items())
        lab = ak.to_numpy(jets["label"]).astype(np.int32)
        lab[row] = value
        jets = ak.with_field(jets, lab, "label")
    return ak.to_arrow_table(jets, extensionarray=False, list_to32=True)


def test_store_label_outside_the_classes_names_row(tmp_path: Path) -> None:
    path = _write_store_table(tmp_path / "s.parquet", _store_table(r8=5), ["QCD", "top"])
    _raises(path, r"{file}: field 'label' is 5 at row 8, outside the 2 classes of the file$")


def test_store_lacking_fields_named(tmp_path: Path) -> None:
    path = _write_store_table(tmp_path / "s.parquet", _store_table().drop(["part_pid"]), ["QCD", "top"])
    _raises(path, r"{file}: jettag store file lacks field\(s\) \['part_pid'\]; it has \['part_px'")


@pytest.mark.parametrize("classes", [[], ["a", "a"], [1, 2], ["QCD", None]])
def test_store_class_names_checked(tmp_path: Path, classes: object) -> None:
    path = _write_store_table(tmp_path / "s.parquet", _store_table(), classes)
    with pytest.raises(JetDataError, match=r"s\.parquet: class names must be a non-empty list of distinct "
                                           r"strings, found "):
        formats.file_classes(path)


def test_dataset_classes_must_agree(tmp_path: Path) -> None:
    a = _write_store_table(tmp_path / "a.parquet", _store_table(), ["QCD", "top"])
    b = _write_store_table(tmp_path / "b.parquet", _store_table(), ["QCD", "W"])
    with pytest.raises(JetDataError, match=r"b\.parquet: classes \['QCD', 'W'\] differ from .*a\.parquet: "
                                           r"\['QCD', 'top'\]"):
        formats.dataset_classes([a, b])


# ------------------------------------------------------------------ TopLandscape HDF5
SLOTS = 4


def _top_frame(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    px, py, pz = (rng.normal(0, 20, (N_JETS, SLOTS)) for _ in range(3))
    e = np.sqrt(px**2 + py**2 + pz**2) + 0.1
    for prefix, arr in (("E", e), ("PX", px), ("PY", py), ("PZ", pz)):
        for i in range(SLOTS):
            cols[f"{prefix}_{i}"] = arr[:, i]
    cols["is_signal_new"] = np.arange(N_JETS) % 2
    return pd.DataFrame(cols)


def _top_file(tmp_path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame], fmt: str = "table") -> Path:
    path = tmp_path / "top.h5"
    edit(_top_frame()).to_hdf(path, key="table", format=fmt, mode="w")
    return path


def _top_label(row: int, value: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[row, "is_signal_new"] = value
        return df
    return edit


TOP_CASES = [
    (_top_label(7, 2), "table", r"{file}: field 'is_signal_new' must be 0 or 1, found 2\.0 at row 7$"),
    (_top_label(5, -1), "fixed", r"{file}: field 'is_signal_new' must be 0 or 1, found -1\.0 at row 5$"),
    (lambda df: df.drop(columns=["PZ_2", "PX_3"]), "table",
     r"{file}: TopLandscape column\(s\) \['PZ_2', 'PX_3'\] missing \(key 'table' has 15 columns"),
    (lambda df: df.astype({"PX_1": str}), "table",
     r"{file}: TopLandscape column\(s\) \['PX_1'\] are not numeric"),
]


@pytest.mark.parametrize(("edit", "fmt", "pattern"), TOP_CASES, ids=[_id(c[2][8:40]) for c in TOP_CASES])
def test_toplandscape_refusals_name_file_column_and_row(tmp_path: Path, edit, fmt: str, pattern: str) -> None:
    _raises(_top_file(tmp_path, edit, fmt), pattern)


def test_hdf5_key_that_is_not_a_dataframe(tmp_path: Path) -> None:
    path = tmp_path / "top.h5"
    with h5py.File(path, "w") as f:
        f.create_group("table").attrs["pandas_type"] = "series"
    pattern = r"top\.h5: HDF5 key 'table' is not a pandas DataFrame \(pandas_type 'series', expected 'frame"
    with pytest.raises(JetDataError, match=pattern):
        formats.detect_format(path)


def test_hdf5_without_the_table_key(tmp_path: Path) -> None:
    path = tmp_path / "top.h5"
    with h5py.File(path, "w") as f:
        f.create_group("jets")
    with pytest.raises(JetDataError, match=r"top\.h5: HDF5 key 'table' missing; the file has keys \['jets'"):
        formats.detect_format(path)


# ------------------------------------------------------------------ JetClass ROOT
def test_root_tree_with_too_few_impact_branches(tmp_path: Path) -> None:
    jets = random_jets(N_JETS, seed=4, max_len=5)
    counts = ak.num(jets["part_px"], axis=1)
    data: dict[str, object] = {f: ak.values_astype(jets[f], np.float32)
                               for f in ("part_px", "part_py", "part_pz", "part_energy", "part_charge")}
    for f in PID_FLAGS:
        data[f] = ak.unflatten(np.zeros(int(ak.sum(counts)), np.float32), counts)
    for k, f in enumerate(JETCLASS_LABELS):
        data[f] = (np.arange(N_JETS) % len(JETCLASS_LABELS) == k).astype(np.float32)
    data[IMPACT_FIELDS[0]] = ak.values_astype(jets["part_px"], np.float32) * 0
    path = tmp_path / "jc.root"
    with uproot.recreate(path) as f:
        types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in data.items()}
        f.mktree("tree", types)
        f["tree"].extend(data)
    _raises(path, rf"{{file}}: tree 'tree' lacks branch\(es\) .*'{IMPACT_FIELDS[1]}'.* while "
                  rf"\['{IMPACT_FIELDS[0]}'\] are present")


@pytest.mark.parametrize("bad", ["QCD,top", {"QCD": 0}, [], ["QCD", "QCD"], ["QCD", 1]])
def test_store_class_names_must_be_a_list_of_distinct_strings(tmp_path: Path, bad: object) -> None:
    """Class metadata is JSON from the file: a string or a mapping is refused, not split into letters."""
    import json

    import pyarrow.parquet as pq

    from jettag.data import formats, store

    path = store.write_store(tmp_path / "s.parquet", random_jets(4, seed=3, max_len=4), ["QCD", "top"], "t")
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[store.METADATA_KEY])
    meta["classes"] = bad
    pq.write_table(table.replace_schema_metadata({store.METADATA_KEY: json.dumps(meta).encode()}), path)
    with pytest.raises(JetDataError, match=r"s\.parquet: class names must be a non-empty list of distinct"):
        formats.dataset_classes(path)
