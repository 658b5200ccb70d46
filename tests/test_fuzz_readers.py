"""Fuzzed readers: corrupted files of every layout are refused with a ``JetDataError`` naming the
file, or read to jets that pass validation -- never a hang, a crash, another exception type, or a
jet with NaN/inf momenta, a negative energy or a label outside the classes.

Each layout gets one small original file, written by the layout's own writer, and a seeded set of
mutations: truncations, random byte flips, size fields (the number of jets as it appears in the
bytes) replaced by huge values, and rewrites with wrong dtypes. Everything runs in-process on
files of a few kB; ``faulthandler`` ends the run with a traceback if one case hangs.
"""

from __future__ import annotations

import faulthandler
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import uproot
from jetfactory import random_jets
from test_formats import write_energyflow, write_jetclass, write_toplandscape, write_weaver

from jettag.data import formats, store
from jettag.data.store import JetDataError

N_JETS = 7
# Mutations per layout, sized for the suite's time budget: a mutation that still reads costs a full
# read (~20 ms for HDF5, ~100 ms for ROOT through uproot), while npz and parquet refuse most
# mutations within a millisecond (zip CRC, parquet page structure). JETTAG_FUZZ_SCALE=10 runs a
# deeper search by hand.
_SCALE = float(os.environ.get("JETTAG_FUZZ_SCALE", 1))
N_MUTATIONS = {  # at least 200 per layout (issue 9: "a few hundred"); ROOT costs ~20 s of them
    "toplandscape_h5": 200,
    "toplandscape_fixed_h5": 200,
    "energyflow_npz": 300,
    "jetclass_root": 200,
    "weaver_parquet": 200,
    "jettag_store": 300,
}
CASE_TIMEOUT_S = 60  # one read of a few-kB file takes milliseconds; a minute means a hang


def _write_store(path: Path, jets: ak.Array) -> None:
    store.write_store(path, jets, ["QCD", "Top"], source="fuzz")


def _write_top(path: Path, jets: ak.Array) -> None:
    write_toplandscape(path, jets, n_slots=10)


LAYOUTS: dict[str, tuple[Callable[[Path, ak.Array], None], dict]] = {
    "toplandscape_h5": (_write_top, {}),
    "toplandscape_fixed_h5": (lambda p, j: write_toplandscape(p, j, n_slots=10, fmt="fixed"), {}),
    "energyflow_npz": (write_energyflow, {}),
    "jetclass_root": (lambda p, j: write_jetclass(p, j), {"n_classes": 10, "with_impact": True}),
    "weaver_parquet": (lambda p, j: write_weaver(p, j, onehot=True, n_classes=3), {"n_classes": 3}),
    "jettag_store": (_write_store, {}),
}


def check_outcome(path: Path, n_classes: int, what: str) -> ak.Array | None:
    """Read ``path`` as jettag does: None if refused, else the jets, after checking the contract."""
    faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)
    try:
        described = formats.describe(path)
        jets = formats.read_jets(path, chunk_size=4)
        classes = described["classes"]
        assert described["jets"] == len(jets), f"{what}: header says {described['jets']}, read {len(jets)}"
    except JetDataError as err:
        message = str(err)
        assert str(path) in message, f"{what}: error does not name the file: {message}"
        assert "\n" not in message, f"{what}: error is not one line: {message!r}"
        return None
    except Exception as err:  # anything else leaking out of a reader is a bug
        raise AssertionError(f"{what}: {type(err).__name__} leaked: {err}") from err
    finally:
        faulthandler.cancel_dump_traceback_later()
    # a read that succeeds must give jets that validation accepts and labels within the classes
    assert len(classes) >= 1
    for f in jets.fields:
        values = ak.to_numpy(ak.flatten(jets[f], axis=None)) if jets[f].ndim > 1 else ak.to_numpy(jets[f])
        assert np.isfinite(values.astype(np.float64)).all(), f"{what}: non-finite {f} read silently"
    assert (ak.to_numpy(ak.flatten(jets["part_energy"])) >= 0).all(), f"{what}: negative energy read"
    assert (ak.to_numpy(ak.num(jets["part_px"], axis=1)) > 0).all(), f"{what}: empty jet read"
    label = ak.to_numpy(jets["label"])
    assert ((label >= 0) & (label < max(n_classes, len(classes)))).all(), f"{what}: label out of range"
    return jets


def _size_patterns(n: int) -> list[tuple[bytes, bytes]]:
    """(how the number of jets may appear in the bytes, a huge value of the same width)."""
    out = []
    for fmt, huge in (("<Q", 2**40 + 3), (">Q", 2**40 + 3), ("<I", 2**31 - 1), (">I", 2**31 - 1)):
        out.append((struct.pack(fmt, n), struct.pack(fmt, huge)))
    out.append((f"({n},".encode(), b"(99999999999,"))  # the .npy header of X and y
    return out


def mutations(data: bytes, seed: int, n: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    out: list[tuple[str, bytes]] = [("unchanged", data)]
    for cut in np.unique(rng.integers(0, len(data), size=n // 4)):
        out.append((f"truncated at {cut}", data[:cut]))
    for k in range(n // 2):
        buf = bytearray(data)
        for pos in rng.integers(0, len(buf), size=int(rng.integers(1, 9))):
            buf[pos] ^= int(rng.integers(1, 256))
        out.append((f"byte flips #{k}", bytes(buf)))
    for old, new in _size_patterns(N_JETS):
        found = []
        start = 0
        while (pos := data.find(old, start)) >= 0:
            found.append(pos)
            start = pos + 1
        for pos in rng.permutation(found)[: max(2, n // 20)]:  # a sample of the places it appears
            out.append((f"size {old!r} at {pos} -> {new!r}", data[:pos] + new + data[pos + len(old) :]))
    return out


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, tuple[Path, ak.Array, int]]:
    d = tmp_path_factory.mktemp("fuzz")
    out = {}
    for k, (name, (write, opts)) in enumerate(LAYOUTS.items()):
        jets = random_jets(N_JETS, seed=90 + k, max_len=10, **opts)
        path = d / f"original.{name.rsplit('_', 1)[1].replace('store', 'parquet')}"
        path = path.with_name(f"{name}{path.suffix}")
        write(path, jets)
        out[name] = (path, jets, opts.get("n_classes", 2))
    return out


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_fuzzed_file(originals, tmp_path, layout):
    path, jets, n_classes = originals[layout]
    data = path.read_bytes()
    original = ak.to_list(formats.read_jets(path))
    assert len(original) == len(jets)
    outcomes: dict[str, int] = {}
    n = int(_SCALE * N_MUTATIONS[layout])
    for k, (what, mutated) in enumerate(mutations(data, seed=zlib.crc32(layout.encode()), n=n)):
        case = tmp_path / f"case{k}"
        case.write_bytes(mutated)
        got = check_outcome(case, n_classes, f"{layout} {what}")
        if got is None:
            result = "refused"
        else:
            result = "read, same jets" if ak.to_list(got) == original else "read, changed"
        outcomes[result] = outcomes.get(result, 0) + 1
        case.unlink()
    print(layout, outcomes)
    assert outcomes.get("refused", 0) > 0 and outcomes.get("read, same jets", 0) > 0, outcomes


# ------------------------------------------------------------------------------------------
# wrong dtypes: each layout rewritten by its own writer with a field of the wrong kind


def _npz(path: Path, **arrays) -> None:
    with open(path, "wb") as fh:  # np.savez would append ".npz" to a suffix-less name
        np.savez(fh, **arrays)


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _wrong_dtype_cases(originals) -> list[tuple[str, str, Callable[[Path], None]]]:
    top = originals["toplandscape_h5"][0]
    qg = originals["energyflow_npz"][0]
    wv = originals["weaver_parquet"][0]
    st = originals["jettag_store"][0]
    jc = originals["jetclass_root"][0]

    def top_case(fmt: str, column: str, values):
        def write(path: Path) -> None:
            df = pd.read_hdf(top, key="table")  # our own, trusted original
            df[column] = values(df[column])
            df.to_hdf(path, key="table", format=fmt, mode="w")

        return write

    def npz_case(**change):
        def write(path: Path) -> None:
            arrays = _npz_arrays(qg)
            arrays.update({k: f(arrays[k]) for k, f in change.items()})
            _npz(path, **arrays)

        return write

    def parquet_case(source: Path, column: str, values):
        def write(path: Path) -> None:
            table = pq.read_table(source)
            i = table.schema.get_field_index(column)
            table = table.set_column(i, column, values(table.column(column)))
            pq.write_table(table.replace_schema_metadata(table.schema.metadata), path)

        return write

    def root_case(branch: str, values):
        def write(path: Path) -> None:
            with uproot.open(jc) as f:
                data = f["tree"].arrays(library="ak")
            data = {k: data[k] for k in data.fields if not k.startswith("npart")}
            data[branch] = values(data[branch])
            with uproot.recreate(path) as f:
                f["tree"] = data

        return write

    first_label = "label_" + formats.JETCLASS_CLASSES[int(originals["jetclass_root"][1]["label"][0])]
    full = lambda c, v, t: pa.array(np.full(len(c), v, t))  # noqa: E731
    as_text = lambda c: pc.cast(  # noqa: E731
        c, pa.large_list(pa.string()) if pa.types.is_large_list(c.type) else pa.list_(pa.string())
    )
    return [
        ("toplandscape_h5", "text column", top_case("table", "E_3", lambda v: v.astype(str))),
        ("toplandscape_h5", "pickled object column", top_case("fixed", "PX_0", lambda v: v.astype(object))),
        ("toplandscape_h5", "fractional label", top_case("table", "is_signal_new", lambda v: v * 0.5)),
        ("toplandscape_h5", "huge energies", top_case("fixed", "E_0", lambda v: v * 1e300)),
        ("energyflow_npz", "complex X", npz_case(X=lambda x: x.astype(np.complex128))),
        ("energyflow_npz", "text X", npz_case(X=lambda x: x.astype("U8"))),
        ("energyflow_npz", "3 features", npz_case(X=lambda x: x[..., :3])),
        ("energyflow_npz", "int8 X", npz_case(X=lambda x: x.astype(np.int8))),
        ("energyflow_npz", "fractional y", npz_case(y=lambda y: y * 0.5 + 0.25)),
        ("energyflow_npz", "2D y", npz_case(y=lambda y: y[:, None])),
        ("weaver_parquet", "text momenta", parquet_case(wv, "part_px", as_text)),
        ("weaver_parquet", "flat px", parquet_case(wv, "part_px", lambda c: pc.list_flatten(c)[:len(c)])),
        ("weaver_parquet", "text label", parquet_case(wv, "label_c0", lambda c: c.cast(pa.string()))),
        ("jettag_store", "text momenta", parquet_case(st, "part_energy", as_text)),
        ("jettag_store", "NaN jet pT", parquet_case(st, "jet_pt", lambda c: full(c, np.nan, np.float32))),
        ("jettag_store", "negative label", parquet_case(st, "label", lambda c: full(c, -1, np.int32))),
        ("jetclass_root", "int momenta", root_case("part_px", lambda a: ak.values_astype(a * 100, np.int32))),
        ("jetclass_root", "fractional one-hot", root_case(first_label, lambda a: a * 0.5)),
        ("jetclass_root", "NaN stored jet", root_case("jet_pt", lambda a: a * np.nan)),
    ]


def test_wrong_dtypes(originals, tmp_path):
    cases = _wrong_dtype_cases(originals)
    for k, (layout, what, write) in enumerate(cases):
        path = tmp_path / f"dtype{k}"
        write(path)
        got = check_outcome(path, originals[layout][2], f"{layout} {what}")
        # integer momenta are numbers all the same; every other rewrite must be refused
        assert got is None or what in ("int8 X", "int momenta"), f"{layout} {what}: read silently"



@pytest.mark.parametrize("fmt", ["table", "fixed"])
def test_hdf5_declared_rows_must_be_stored(tmp_path, fmt):
    """An HDF5 size field raised to 2^40 rows: refused before reading, even with drop_invalid
    (a chunked table would read back fill values, i.e. empty jets, and dropping them would never
    end); the fixed format's contiguous arrays are refused by their block checks."""
    write_toplandscape(tmp_path / "top.h5", random_jets(N_JETS, seed=97, max_len=6), n_slots=6, fmt=fmt)
    data = (tmp_path / "top.h5").read_bytes()
    declared = []
    start = 0
    while (pos := data.find(struct.pack("<Q", N_JETS), start)) >= 0:
        start = pos + 1
        case = tmp_path / f"rows{pos}.h5"
        case.write_bytes(data[:pos] + struct.pack("<Q", 2**40) + data[pos + 8 :])
        faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)
        try:
            formats.read_jets(case, drop_invalid=True)
        except JetDataError as err:
            declared += ["declares" in str(err)]
        finally:
            faulthandler.cancel_dump_traceback_later()
    assert declared, "no size field of the row count was found"
    assert fmt == "fixed" or any(declared), "the inflated row count was not refused as such"
