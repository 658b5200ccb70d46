"""No input file can run code: files whose metadata carry a pickle payload are read or refused by
``jettag inspect`` / ``jettag convert`` without the payload ever running.

The payload opens (creates) a marker file when unpickled. Each hostile file is first shown to be
live (the standard loader, which unpickles, does create the marker), so a test here cannot pass
because the payload was inert.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import awkward as ak
import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from jetfactory import random_jets
from test_formats import assert_same_particles, padded, write_weaver

from jettag.cli import main
from jettag.data import formats
from jettag.data.formats.toplandscape import _NoGlobalsUnpickler, _unpickle_plain
from jettag.data.store import JetDataError


class MarkerPayload:
    """Unpickling this calls ``open(marker, "w")``: a harmless stand-in for any code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def payload(marker: Path, protocol: int = 0) -> bytes:
    return pickle.dumps(MarkerPayload(marker), protocol=protocol)


def assert_live(load, marker: Path) -> None:
    """The standard, unpickling loader runs the payload (whatever it raises afterwards)."""
    try:
        load()
    except Exception:
        pass  # the unpickled object (a file handle) is not what the loader expected
    assert marker.exists(), "the payload is inert: this test would prove nothing"
    marker.unlink()


def write_top(path: Path, jets: ak.Array, fmt: str) -> None:
    """TopLandscape layout as the original files: pandas ``to_hdf(key="table")``."""
    cols = {}
    for prefix, field in (("E", "part_energy"), ("PX", "part_px"), ("PY", "part_py"), ("PZ", "part_pz")):
        arr = padded(jets, field, 12)
        cols.update({f"{prefix}_{i}": arr[:, i] for i in range(12)})
    cols["is_signal_new"] = ak.to_numpy(jets["label"]).astype(np.int64)
    pd.DataFrame(cols).to_hdf(path, key="table", format=fmt, mode="w")


# (pandas format, HDF5 node, attribute, whether jettag needs that attribute to read the file)
HOSTILE_ATTRS = [
    ("table", "table/table", "values_block_0_kind", True),  # the column names: decoded, globals refused
    ("table", "table/table", "values_block_1_kind", True),
    ("table", "table", "non_index_axes", False),
    ("table", "table", "index_cols", False),
    ("table", "table", "pandas_type", True),
    ("table", "table/table", "NROWS", False),
    ("fixed", "table", "pandas_type", True),
    ("fixed", "table/axis0", "name", False),
    ("fixed", "table/block0_values", "transposed", True),
    ("fixed", "table/block0_items", "kind", False),
]


@pytest.fixture(scope="module")
def top_jets() -> ak.Array:
    return random_jets(9, seed=71, max_len=12)


@pytest.mark.parametrize("fmt, node, attr, needed", HOSTILE_ATTRS)
def test_pickled_hdf5_attribute_never_runs(tmp_path, top_jets, fmt, node, attr, needed):
    path = tmp_path / "evil_top"  # no extension: detection is by content
    write_top(path, top_jets, fmt)
    live = tmp_path / "live_marker"
    with h5py.File(path, "r+") as f:  # stored as PyTables stores a pickled attribute
        f[node].attrs[attr] = np.bytes_(payload(live))
    assert_live(lambda: pd.read_hdf(path, key="table"), live)

    out = tmp_path / "out"
    rc_inspect = main(["inspect", str(path)])
    rc_convert = main(["convert", str(path), "--out", str(out)])
    assert not live.exists(), "a pickle in an HDF5 attribute ran during inspect/convert"
    if needed:  # the attribute is part of the layout: refused with a one-line error
        assert (rc_inspect, rc_convert) == (2, 2)  # bad input
        with pytest.raises(JetDataError, match="evil_top"):
            formats.read_jets(path)
    else:  # irrelevant to jettag: the file reads to exactly the jets written
        assert (rc_inspect, rc_convert) == (0, 0)
        assert_same_particles(formats.read_jets(out / "evil_top.parquet"), top_jets)
    assert not live.exists()


def test_no_globals_unpickler():
    names = ["E_0", "PX_0", "is_signal_new"]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert _unpickle_plain(pickle.dumps(names, protocol=protocol)) == names
        raw = pickle.dumps(MarkerPayload(Path("never")), protocol=protocol)
        with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
            _unpickle_plain(raw)
        with pytest.raises(pickle.UnpicklingError, match="refusing"):
            _unpickle_plain(pickle.dumps(np.float64(1.0), protocol=protocol))  # numpy scalars too
    assert not Path("never").exists()
    # the unpickler itself, as used, is a pickle.Unpickler whose find_class refuses
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global os\.system"):
        _NoGlobalsUnpickler(io.BytesIO(b"cos\nsystem\n(S'true'\ntR.")).load()


def test_hdf5_external_link_refused(tmp_path, top_jets):
    write_top(tmp_path / "real.h5", top_jets, "table")
    with h5py.File(tmp_path / "link.h5", "w") as f:
        f["table"] = h5py.ExternalLink(str(tmp_path / "real.h5"), "/table")
    with pytest.raises(JetDataError, match=r"link\.h5: /table is a ExternalLink"):
        formats.detect_format(tmp_path / "link.h5")


def test_object_npz_refused(tmp_path):
    live = tmp_path / "live_marker"
    x = np.empty((2, 1, 4), dtype=object)
    x[...] = 0.0
    x[0, 0, 0] = MarkerPayload(live)
    np.savez(tmp_path / "evil.npz", X=x, y=np.zeros(2))
    assert_live(lambda: np.load(tmp_path / "evil.npz", allow_pickle=True)["X"], live)
    assert main(["inspect", str(tmp_path / "evil.npz")]) == 2  # bad input
    assert main(["convert", str(tmp_path / "evil.npz"), "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(JetDataError, match=r"evil\.npz: array 'X' holds Python objects"):
        formats.read_jets(tmp_path / "evil.npz")
    assert not live.exists()


def test_parquet_pickled_extension_type_not_unpickled(tmp_path):
    """pyarrow < 14.0.1 unpickled ``arrow.py_extension_type`` metadata (CVE-2023-47248)."""
    jets = random_jets(6, seed=72, max_len=10, n_classes=3)
    write_weaver(tmp_path / "w.parquet", jets, onehot=False, n_classes=3)
    table = pq.read_table(tmp_path / "w.parquet")
    live = tmp_path / "live_marker"
    i = table.schema.get_field_index("part_px")
    field = table.schema.field(i).with_metadata(
        {b"ARROW:extension:name": b"arrow.py_extension_type", b"ARROW:extension:metadata": payload(live, 4)}
    )
    evil = table.set_column(i, field, table.column(i))
    pq.write_table(evil, tmp_path / "evil.parquet")
    assert main(["inspect", str(tmp_path / "evil.parquet")]) == 0
    assert_same_particles(formats.read_jets(tmp_path / "evil.parquet"), jets)
    assert not live.exists()


def test_pandas_metadata_in_parquet_is_not_used(tmp_path):
    """A weaver parquet written by pandas carries ``pandas`` JSON metadata; jettag never reads it
    through pandas, so even a hostile one changes nothing."""
    jets = random_jets(5, seed=73, max_len=8, n_classes=2)
    write_weaver(tmp_path / "w.parquet", jets, onehot=False, n_classes=2)
    table = pq.read_table(tmp_path / "w.parquet")
    meta = dict(table.schema.metadata or {})
    meta[b"pandas"] = payload(tmp_path / "live_marker", 0)
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "evil.parquet")
    got = formats.read_jets(tmp_path / "evil.parquet")
    assert_same_particles(got, jets)
    assert not (tmp_path / "live_marker").exists()
