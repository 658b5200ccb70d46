"""Readers for the public jet-tagging benchmark layouts, with detection from file content.

Every later stage of jettag accepts "a dataset" as any path that :func:`detect_format`
recognises, and reads it only through :func:`iter_jets` / :func:`read_jets`, which convert each
layout into canonical jets (:mod:`jettag.data.store`) chunk by chunk. So a training run can read
the original TopLandscape HDF5, EnergyFlow npz or JetClass ROOT files directly, and ``jettag
convert`` is only an optimisation (parquet reads faster), never a requirement.

Supported layouts (``../shared/reference/datasets.md`` has the full description):

``jettag``
    Our canonical parquet store (has the ``jettag`` schema-metadata key).
``weaver_parquet``
    Parquet written by weaver users: jagged ``part_px, part_py, part_pz, part_energy`` (optionally
    ``part_pid``, ``part_charge``, the five ``part_is*`` flags, ``part_d0val`` ... ``part_dzerr``),
    optionally the stored jet ``jet_pt, jet_eta, jet_phi, jet_energy``, and either an integer
    ``label`` column (classes are then named ``"0"``, ``"1"``, ...) or one-hot ``label_*`` columns
    (classes named after them, in file order).
``toplandscape_h5``
    pandas HDF5, key ``table``, columns ``E_i, PX_i, PY_i, PZ_i`` zero padded (a constituent is
    real where its energy is positive), ``is_signal_new`` -> classes ``["QCD", "Top"]``.
``energyflow_npz``
    ``X`` (N, M, 4) = (pT, rapidity, phi, PDG id) zero padded, ``y`` (1 quark, 0 gluon) ->
    classes ``["gluon", "quark"]``. Masses and charges come from the PDG id (table below).
``jetclass_root``
    ROOT TTree (or RNTuple) ``tree`` with the JetClass branches; one-hot ``label_*`` in the order
    of :data:`JETCLASS_CLASSES`. JetClass stores particle-id flags, not PDG ids; a representative
    PDG id is reconstructed from them (see :func:`pid_from_flags`).

Design choices worth knowing:

- Detection reads the file's magic bytes and then its schema/keys, never trusts the extension,
  so a renamed or extension-less file still works and a wrong file fails with a message saying
  what was found.
- Every reader is chunked and never loads a whole file: parquet row batches, ``HDFStore.select``
  with ``start/stop``, ``TTree.iterate(step_size=...)`` and, for npz, a streaming read of the
  ``.npy`` member inside the zip (``np.load`` would decompress all of ``X`` at once).
- Where a file stores the jet 4-vector (JetClass ``jet_pt/eta/phi/energy``, weaver parquet) it is
  kept, because the reference feature definitions (``part_logptrel`` ...) use the stored jet;
  otherwise the jet is the constituent sum.
- Every chunk goes through :func:`jettag.data.store.validate_jets` with the file name and the
  absolute row offset, so an error names the file, the field and the row in that file.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import awkward as ak
import numpy as np

from jettag.data import store
from jettag.data.store import DropReport, JetDataError
from jettag.physics import kinematics as kin

FORMATS = ("jettag", "weaver_parquet", "toplandscape_h5", "energyflow_npz", "jetclass_root")
DATASET_SUFFIXES = (".parquet", ".h5", ".hdf5", ".npz", ".root")

TOPLANDSCAPE_CLASSES = ["QCD", "Top"]
ENERGYFLOW_CLASSES = ["gluon", "quark"]
JETCLASS_CLASSES = ["QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl"]
JETCLASS_LABELS = [f"label_{c}" for c in JETCLASS_CLASSES]
PID_FLAGS = (
    "part_isChargedHadron",
    "part_isNeutralHadron",
    "part_isPhoton",
    "part_isElectron",
    "part_isMuon",
)
IMPACT_FIELDS = tuple(store.OPTIONAL_PARTICLE_FIELDS)
JET_P4_FIELDS = ("jet_pt", "jet_eta", "jet_phi", "jet_energy")

# Masses (GeV, PDG 2022) and charges of the stable particles that appear in the EnergyFlow
# quark/gluon files, keyed by |PDG id|. The charge of a negative id is the negated entry.
# Leptons have the opposite sign convention to hadrons: 11 is e-, -211 is pi-.
PDG_TABLE: dict[int, tuple[float, int, str]] = {
    22: (0.0, 0, "photon"),
    11: (0.00051099895, -1, "electron"),
    13: (0.1056583755, -1, "muon"),
    211: (0.13957039, 1, "charged pion"),
    321: (0.493677, 1, "charged kaon"),
    130: (0.497611, 0, "K0_L"),
    2212: (0.93827208816, 1, "proton"),
    2112: (0.93956542052, 0, "neutron"),
}
_PDG_IDS = np.array(sorted(PDG_TABLE), dtype=np.int64)
_PDG_MASS = np.array([PDG_TABLE[i][0] for i in _PDG_IDS], dtype=np.float64)
_PDG_CHARGE = np.array([PDG_TABLE[i][1] for i in _PDG_IDS], dtype=np.float64)

# Representative PDG id per JetClass particle-id flag (in PID_FLAGS order) for a particle of
# positive charge; a negative charge flips the sign. Chosen so that the flags derived back from
# the id (|id| in {211, 321, 2212} charged hadron, {130, 2112} neutral hadron, 22 photon,
# 11 electron, 13 muon) are exactly the stored flags.
_FLAG_PID_POSITIVE = np.array([211, 130, 22, -11, -13], dtype=np.int32)

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class UnknownFormatError(JetDataError):
    """The file exists but its content is none of the supported layouts."""


# --------------------------------------------------------------------------------------------
# small columnar helpers


def _row_of_flat(counts: np.ndarray, flat_index: int) -> int:
    """The jet (row within the chunk) that owns flat constituent ``flat_index``."""
    return int(np.searchsorted(np.cumsum(counts), flat_index, side="right"))


def _first_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _padded_to_jagged(
    values: dict[str, np.ndarray], real: np.ndarray
) -> tuple[dict[str, ak.Array], np.ndarray]:
    """Turn zero-padded (N, M) arrays into jagged arrays keeping the entries where ``real``.

    Boolean indexing of a C-ordered 2D array walks row by row, so the flat values come out jet
    after jet in their stored order and ``ak.unflatten`` with the per-row counts rebuilds the jets
    without a Python loop.
    """
    counts = real.sum(axis=1)
    return {k: ak.unflatten(v[real], counts) for k, v in values.items()}, counts


def _one_hot_to_label(onehot: np.ndarray, names: Sequence[str], source: str, row_offset: int) -> np.ndarray:
    """Index of the single 1 per row; a row without exactly one 1 is an error naming that row."""
    onehot = np.asarray(onehot, dtype=np.float64)
    ok = (
        np.isfinite(onehot).all(axis=1)
        & ((onehot == 0) | (onehot == 1)).all(axis=1)
        & (onehot.sum(axis=1) == 1)
    )
    if not ok.all():
        row = _first_row(~ok)
        seen = dict(zip(names, onehot[row].tolist()))
        raise JetDataError(
            f"{source}: one-hot label fields {list(names)} do not hold exactly one 1 "
            f"at row {row + row_offset} (values {seen})"
        )
    return np.argmax(onehot, axis=1).astype(np.int32)


def _binary_label(values: np.ndarray, field: str, source: str, row_offset: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    bad = ~((values == 0) | (values == 1))
    if bad.any():
        row = _first_row(bad)
        raise JetDataError(
            f"{source}: field {field!r} must be 0 or 1, found {values[row]} at row {row + row_offset}"
        )
    return values.astype(np.int32)


def pid_from_flags(flags: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Representative PDG ids from (n, 5) particle-id flags (``PID_FLAGS`` order) and charges.

    JetClass (Delphes particle flow) records only the particle class, not the species, so every
    charged hadron becomes a pion (211 x sign of the charge), every neutral hadron a K0_L (130),
    photons 22, electrons -11 x charge sign (11 is e-), muons -13 x charge sign. A zero charge
    on a charged class counts as positive. A particle without any flag gets 0 (unknown). Mapping
    the id back to flags gives the stored flags exactly, which is what the ``kinpid`` and ``full``
    feature sets need. Raises ``ValueError`` with the index of the first particle carrying more
    than one flag (the caller turns it into a message with file and row).
    """
    flags = np.asarray(flags) != 0
    n_set = flags.sum(axis=1)
    if (n_set > 1).any():
        raise ValueError(int(np.flatnonzero(n_set > 1)[0]))
    sign = np.where(np.asarray(charge) < 0, -1, 1).astype(np.int32)
    which = np.argmax(flags, axis=1)
    return np.where(n_set == 1, _FLAG_PID_POSITIVE[which] * sign, 0).astype(np.int32)


def _pid_lookup(pid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into the PDG table per |id| and whether the id is known."""
    a = np.abs(pid.astype(np.int64))
    idx = np.clip(np.searchsorted(_PDG_IDS, a), 0, len(_PDG_IDS) - 1)
    return idx, _PDG_IDS[idx] == a


def charge_from_pid(pid: np.ndarray) -> np.ndarray:
    """Electric charge from PDG ids of the table above (unknown ids and 0 get charge 0)."""
    pid = np.asarray(pid)
    idx, known = _pid_lookup(pid)
    return np.where(known, _PDG_CHARGE[idx] * np.sign(pid), 0.0).astype(np.float32)


def _jet_p4_from_stored(jet: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """(px, py, pz, E) of the stored jet (pT, eta, phi, E) in float64."""
    pt, eta, phi, energy = (np.asarray(jet[f], dtype=np.float64) for f in JET_P4_FIELDS)
    return pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), energy


def _jagged_float(arr: ak.Array, field: str, source: str, row_offset: int) -> ak.Array:
    """A jagged numeric column as float64 with missing values as NaN (validation then names them)."""
    if ak.any(ak.is_none(arr, axis=0)):
        row = _first_row(ak.to_numpy(ak.is_none(arr, axis=0)))
        raise JetDataError(
            f"{source}: field {field!r} is missing (null) for the jet at row {row + row_offset}"
        )
    arr = ak.fill_none(arr, np.nan, axis=-1)
    if arr.ndim != 2:
        raise JetDataError(
            f"{source}: field {field!r} must be one list of numbers per jet, found type {arr.type}"
        )
    return ak.values_astype(arr, np.float64)


def _flat_column(arr: Any, field: str, source: str, row_offset: int) -> np.ndarray:
    """A per-jet scalar column as a numpy array; nulls are an error naming the row."""
    arr = ak.Array(arr) if not isinstance(arr, np.ndarray) else arr
    if isinstance(arr, ak.Array):
        if arr.ndim != 1:
            raise JetDataError(
                f"{source}: field {field!r} must hold one number per jet, found type {arr.type}"
            )
        nulls = ak.to_numpy(ak.is_none(arr, axis=0))
        if nulls.any():
            raise JetDataError(
                f"{source}: field {field!r} is missing (null) at row {_first_row(nulls) + row_offset}"
            )
        arr = ak.to_numpy(ak.fill_none(arr, 0))
    return np.asarray(arr)


# --------------------------------------------------------------------------------------------
# per-format readers


@dataclass(frozen=True)
class _Reader:
    """How one layout is read: its classes, size and chunks of (row_offset, canonical jets)."""

    name: str
    origin: dict[str, str]  # canonical field -> where it comes from in the file, for error messages

    def classes(self, path: Path) -> list[str]:
        raise NotImplementedError

    def num_jets(self, path: Path) -> int:
        raise NotImplementedError

    def chunks(self, path: Path, chunk_size: int, stop: int | None) -> Iterator[tuple[int, ak.Array]]:
        raise NotImplementedError


class _JettagReader(_Reader):
    def classes(self, path: Path) -> list[str]:
        return list(store.read_metadata(path)["classes"])

    def num_jets(self, path: Path) -> int:
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows

    def chunks(self, path: Path, chunk_size: int, stop: int | None) -> Iterator[tuple[int, ak.Array]]:
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        required = [*store.PARTICLE_FIELDS, *store.JET_FIELDS]
        missing = [f for f in required if f not in names]
        if missing:
            raise JetDataError(f"{path}: jettag store file lacks field(s) {missing}; it has {names}")
        offset = 0
        for chunk in store.iter_store(path, chunk_size=chunk_size):
            if stop is not None and offset + len(chunk) > stop:
                chunk = chunk[: stop - offset]
            if len(chunk):
                yield offset, chunk
            offset += len(chunk)
            if stop is not None and offset >= stop:
                return


class _WeaverParquetReader(_Reader):
    @staticmethod
    def _schema_names(path: Path) -> list[str]:
        import pyarrow.parquet as pq

        return pq.read_schema(path).names

    @staticmethod
    def _label_columns(path: Path, names: Sequence[str]) -> list[str]:
        onehot = [n for n in names if n.startswith("label_")]
        if "label" in names or onehot:
            return ["label"] if "label" in names and not onehot else onehot
        raise JetDataError(
            f"{path}: field 'label' (or one-hot 'label_*' fields) is missing; the file has {list(names)}"
        )

    def classes(self, path: Path) -> list[str]:
        import pyarrow.parquet as pq

        names = self._schema_names(path)
        labels = self._label_columns(path, names)
        if labels != ["label"]:
            return [n[len("label_") :] for n in labels]
        # Integer labels carry no names: "0" .. str(max). The maximum comes from the row-group
        # statistics when the writer stored them, so no data is read.
        pf = pq.ParquetFile(path)
        col = names.index("label")
        top = -1
        for rg in range(pf.metadata.num_row_groups):
            stats = pf.metadata.row_group(rg).column(col).statistics
            if stats is None or not stats.has_min_max:
                values = pf.read(columns=["label"]).column("label").to_numpy(zero_copy_only=False)
                top = int(np.nanmax(values)) if len(values) else -1
                break
            top = max(top, int(stats.max))
        return [str(i) for i in range(top + 1)]

    def num_jets(self, path: Path) -> int:
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows

    def chunks(self, path: Path, chunk_size: int, stop: int | None) -> Iterator[tuple[int, ak.Array]]:
        import pyarrow.parquet as pq

        names = self._schema_names(path)
        missing = [f for f in store.MOMENTUM_FIELDS if f not in names]
        if missing:
            raise JetDataError(f"{path}: field(s) {missing} missing; the file has {names}")
        labels = self._label_columns(path, names)
        impact = [f for f in IMPACT_FIELDS if f in names]
        if impact and len(impact) != len(IMPACT_FIELDS):
            lacking = [f for f in IMPACT_FIELDS if f not in names]
            raise JetDataError(
                f"{path}: impact-parameter field(s) {lacking} missing while {impact} are present"
            )
        optional = [f for f in ("part_pid", "part_charge", *PID_FLAGS, *JET_P4_FIELDS) if f in names]
        columns = [*store.MOMENTUM_FIELDS, *optional, *impact, *labels]
        flags_present = [f for f in PID_FLAGS if f in names]
        if flags_present and len(flags_present) != len(PID_FLAGS) and "part_pid" not in names:
            lacking = [f for f in PID_FLAGS if f not in names]
            raise JetDataError(
                f"{path}: particle-id field(s) {lacking} missing while {flags_present} are present"
            )
        source = str(path)
        offset = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size, columns=columns):
            chunk = ak.from_arrow(batch)
            if stop is not None and offset + len(chunk) > stop:
                chunk = chunk[: stop - offset]
            if len(chunk) == 0:
                break
            mom = [_jagged_float(chunk[f], f, source, offset) for f in store.MOMENTUM_FIELDS]
            counts = ak.to_numpy(ak.num(mom[0], axis=1))
            for f, arr in zip(store.MOMENTUM_FIELDS[1:], mom[1:]):
                if not np.array_equal(ak.to_numpy(ak.num(arr, axis=1)), counts):
                    row = _first_row(ak.to_numpy(ak.num(arr, axis=1)) != counts)
                    raise JetDataError(
                        f"{path}: field {f!r} has a different number of particles than 'part_px' at row "
                        f"{row + offset}"
                    )
            if labels == ["label"]:
                lab = _flat_column(chunk["label"], "label", source, offset).astype(np.float64)
                bad = ~np.isfinite(lab) | (lab < 0) | (lab != np.round(lab))
                if bad.any():
                    row = _first_row(bad)
                    raise JetDataError(
                        f"{path}: field 'label' must be a non-negative integer, found {lab[row]} "
                        f"at row {row + offset}"
                    )
                label = lab.astype(np.int32)
            else:
                onehot = np.stack([_flat_column(chunk[c], c, source, offset) for c in labels], axis=1)
                label = _one_hot_to_label(onehot, labels, source, offset)
            pid = charge = None
            if "part_pid" in names:
                pid = ak.values_astype(chunk["part_pid"], np.int32)
            elif flags_present:
                pid = _pid_from_jagged_flags(chunk, counts, source, offset)
            if "part_charge" in names:
                charge = chunk["part_charge"]
            elif pid is not None:
                charge = ak.unflatten(charge_from_pid(ak.to_numpy(ak.flatten(pid))), counts)
            extra = {f: chunk[f] for f in impact} or None
            jet_p4 = None
            if all(f in names for f in JET_P4_FIELDS):
                jet_p4 = _jet_p4_from_stored(
                    {f: _flat_column(chunk[f], f, source, offset) for f in JET_P4_FIELDS}
                )
            yield (
                offset,
                store.make_jets(
                    *mom, label=label, pid=pid, charge=charge, extra_particle=extra, jet_p4=jet_p4
                ),
            )
            offset += len(chunk)
            if stop is not None and offset >= stop:
                return


def _pid_from_jagged_flags(chunk: ak.Array, counts: np.ndarray, source: str, row_offset: int) -> ak.Array:
    """PDG ids from the jagged JetClass flag fields of a chunk (see :func:`pid_from_flags`)."""
    flags = np.stack([ak.to_numpy(ak.flatten(chunk[f])) for f in PID_FLAGS], axis=1)
    charge = (
        ak.to_numpy(ak.flatten(chunk["part_charge"]))
        if "part_charge" in chunk.fields
        else np.zeros(len(flags))
    )
    try:
        pid = pid_from_flags(flags, charge)
    except ValueError as err:
        flat = int(err.args[0])
        row = _row_of_flat(counts, flat) + row_offset
        first = int(np.cumsum(counts)[row - row_offset - 1]) if row - row_offset > 0 else 0
        set_flags = [f for f, v in zip(PID_FLAGS, flags[flat]) if v]
        raise JetDataError(
            f"{source}: particle {flat - first} of the jet at row {row} has more than one particle-id flag "
            f"set ({set_flags}); fields {list(PID_FLAGS)} must be exclusive"
        ) from None
    return ak.unflatten(pid, counts)


class _TopLandscapeReader(_Reader):
    KEY = "table"

    @staticmethod
    def _open(path: Path):
        import pandas as pd

        try:
            return pd.HDFStore(path, mode="r")
        except Exception as err:  # tables raises several unrelated types for a corrupt file
            raise JetDataError(f"{path}: cannot open as pandas HDF5: {err}") from err

    def _layout(self, path: Path) -> tuple[int, int]:
        """(number of jets, number of constituent slots), checking every needed column exists."""
        with self._open(path) as h5:
            if f"/{self.KEY}" not in h5.keys():
                raise JetDataError(f"{path}: HDF5 key {self.KEY!r} missing; the file has keys {h5.keys()}")
            storer = h5.get_storer(self.KEY)
            nrows = int(storer.nrows if storer.is_table else storer.shape[0])
            columns = list(h5.select(self.KEY, start=0, stop=0).columns)
        slots = sorted(int(m.group(1)) for c in columns if (m := re.fullmatch(r"E_(\d+)", str(c))))
        needed = [f"{p}_{i}" for i in range(len(slots)) for p in ("E", "PX", "PY", "PZ")] + ["is_signal_new"]
        missing = [c for c in needed if c not in set(columns)]
        if not slots or missing:
            shown = missing[:8] if slots else ["E_0", "PX_0", "PY_0", "PZ_0"]
            raise JetDataError(
                f"{path}: TopLandscape column(s) {shown}{' ...' if len(missing) > 8 else ''} missing "
                f"(key {self.KEY!r} has {len(columns)} columns: {columns[:6]} ...)"
            )
        return nrows, len(slots)

    def classes(self, path: Path) -> list[str]:
        return list(TOPLANDSCAPE_CLASSES)

    def num_jets(self, path: Path) -> int:
        return self._layout(path)[0]

    def chunks(self, path: Path, chunk_size: int, stop: int | None) -> Iterator[tuple[int, ak.Array]]:
        nrows, m = self._layout(path)
        end = nrows if stop is None else min(stop, nrows)
        cols = {p: [f"{p}_{i}" for i in range(m)] for p in ("E", "PX", "PY", "PZ")}
        source = str(path)
        with self._open(path) as h5:
            for start in range(0, end, chunk_size):
                df = h5.select(self.KEY, start=start, stop=min(start + chunk_size, end))
                arrays = {p: df[c].to_numpy(dtype=np.float64) for p, c in cols.items()}
                # Padding is all-zero; a NaN or a negative energy is kept as a "real" entry so that
                # validation reports it instead of it silently vanishing as padding.
                real = (arrays["E"] != 0) | (arrays["PX"] != 0) | (arrays["PY"] != 0) | (arrays["PZ"] != 0)
                jag, _ = _padded_to_jagged(arrays, real)
                label = _binary_label(df["is_signal_new"].to_numpy(), "is_signal_new", source, start)
                yield start, store.make_jets(jag["PX"], jag["PY"], jag["PZ"], jag["E"], label=label)


class _NpyStream:
    """Row-wise streaming read of one ``.npy`` member of an npz (zip) file.

    ``np.load`` on an npz decompresses a whole member at once (an EnergyFlow ``X`` is ~450 MB);
    this reads the header and then ``rows`` rows at a time from the zip stream, for stored and
    deflated members alike. Object dtypes are refused, as ``allow_pickle=False`` would.
    """

    def __init__(self, path: Path, zf: zipfile.ZipFile, name: str):
        self.path = path
        self.fh: BinaryIO = zf.open(name + ".npy")
        version = np.lib.format.read_magic(self.fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(self.fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(self.fh)
        else:
            raise JetDataError(f"{path}: array {name!r} uses unsupported .npy format version {version}")
        if dtype.hasobject:
            raise JetDataError(f"{path}: array {name!r} holds Python objects; refusing to unpickle it")
        if fortran and len(shape) > 1:
            raise JetDataError(
                f"{path}: array {name!r} is Fortran-ordered; re-save it in C order to stream it"
            )
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = dtype
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def read(self, rows: int) -> np.ndarray:
        data = self.fh.read(rows * self.row_bytes)
        if len(data) != rows * self.row_bytes:
            raise JetDataError(f"{self.path}: truncated array (expected {rows} more rows)")
        return np.frombuffer(data, dtype=self.dtype).reshape((rows, *self.shape[1:]))

    def close(self) -> None:
        self.fh.close()


class _EnergyFlowReader(_Reader):
    @staticmethod
    def _shapes(path: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            for needed in ("X.npy", "y.npy"):
                if needed not in names:
                    raise JetDataError(f"{path}: array {needed[:-4]!r} missing; the npz holds {names}")
            x, y = _NpyStream(path, zf, "X"), _NpyStream(path, zf, "y")
            shapes = x.shape, y.shape
            x.close()
            y.close()
        if len(shapes[0]) != 3 or shapes[0][2] != 4:
            raise JetDataError(f"{path}: array 'X' must have shape (jets, particles, 4), found {shapes[0]}")
        if shapes[1] != shapes[0][:1]:
            raise JetDataError(f"{path}: array 'y' has shape {shapes[1]}, expected ({shapes[0][0]},)")
        return shapes

    def classes(self, path: Path) -> list[str]:
        return list(ENERGYFLOW_CLASSES)

    def num_jets(self, path: Path) -> int:
        return self._shapes(path)[0][0]

    def chunks(self, path: Path, chunk_size: int, stop: int | None) -> Iterator[tuple[int, ak.Array]]:
        (n, _, _), _ = self._shapes(path)
        end = n if stop is None else min(stop, n)
        source = str(path)
        with zipfile.ZipFile(path) as zf:
            xs, ys = _NpyStream(path, zf, "X"), _NpyStream(path, zf, "y")
            try:
                for start in range(0, end, chunk_size):
                    rows = min(chunk_size, end - start)
                    yield start, self._convert(xs.read(rows).astype(np.float64), ys.read(rows), source, start)
            finally:
                xs.close()
                ys.close()

    @staticmethod
    def _convert(x: np.ndarray, y: np.ndarray, source: str, start: int) -> ak.Array:
        label = _binary_label(y, "y", source, start)
        real = (x != 0).any(axis=2)  # NaN != 0, so a NaN entry stays and validation names it
        pt, rap, phi, pid_f = (x[..., k] for k in range(4))
        bad = real & (pt < 0)
        if bad.any():
            row = _first_row(bad.any(axis=1))
            raise JetDataError(
                f"{source}: field 'X[..., 0]' (pT) is negative in the jet at row {row + start}"
            )
        bad = real & np.isfinite(pid_f) & (pid_f != np.round(pid_f))
        if bad.any():
            row = _first_row(bad.any(axis=1))
            raise JetDataError(f"{source}: field 'X[..., 3]' (PDG id) is not an integer at row {row + start}")
        pid = np.where(np.isfinite(pid_f), pid_f, 0).astype(np.int64)
        idx, known = _pid_lookup(pid)
        unknown = real & ~known & np.isfinite(pid_f)
        if unknown.any():
            row = _first_row(unknown.any(axis=1))
            ids = sorted({int(v) for v in pid[row][unknown[row]]})
            raise JetDataError(
                f"{source}: field 'X[..., 3]' (PDG id) has id(s) {ids} without a known mass "
                f"at row {row + start}; known |id|: {sorted(PDG_TABLE)}"
            )
        mass = np.where(np.isfinite(pid_f), _PDG_MASS[idx], np.nan)
        px, py, pz, energy = kin.from_pt_y_phi_m(pt, rap, phi, mass)
        charge = np.where(known, _PDG_CHARGE[idx] * np.sign(pid), 0.0)
        jag, _ = _padded_to_jagged(
            {"px": px, "py": py, "pz": pz, "e": energy, "pid": pid.astype(np.int32), "charge": charge}, real
        )
        return store.make_jets(
            jag["px"], jag["py"], jag["pz"], jag["e"], label=label, pid=jag["pid"], charge=jag["charge"]
        )


class _JetClassReader(_Reader):
    TREE = "tree"
    REQUIRED = (*store.MOMENTUM_FIELDS, "part_charge", *PID_FLAGS, *JETCLASS_LABELS)

    def _tree(self, path: Path):
        import uproot

        try:
            f = uproot.open(path)
        except Exception as err:  # uproot raises a variety of types for corrupt files
            raise JetDataError(f"{path}: cannot open as ROOT file: {err}") from err
        names = {k.split(";")[0] for k in f.keys(recursive=False)}
        if self.TREE not in names:
            f.close()
            raise JetDataError(f"{path}: tree {self.TREE!r} missing; the file has {sorted(names)}")
        return f, f[self.TREE]

    def _branches(self, path: Path, tree) -> tuple[list[str], bool]:
        keys = set(tree.keys())
        missing = [b for b in self.REQUIRED if b not in keys]
        if missing:
            raise JetDataError(f"{path}: tree {self.TREE!r} lacks branch(es) {missing}")
        impact = [b for b in IMPACT_FIELDS if b in keys]
        if impact and len(impact) != len(IMPACT_FIELDS):
            lacking = [b for b in IMPACT_FIELDS if b not in keys]
            raise JetDataError(
                f"{path}: tree {self.TREE!r} lacks branch(es) {lacking} while {impact} are present"
            )
        stored_jet = all(b in keys for b in JET_P4_FIELDS)
        branches = [*self.REQUIRED, *impact, *(JET_P4_FIELDS if stored_jet else ())]
        return branches, stored_jet

    def classes(self, path: Path) -> list[str]:
        f, tree = self._tree(path)
        with f:
            self._branches(path, tree)
        return list(JETCLASS_CLASSES)

    def num_jets(self, path: Path) -> int:
        f, tree = self._tree(path)
        with f:
            return int(tree.num_entries)

    def chunks(self, path: Path, chunk_size: int, stop: int | None) -> Iterator[tuple[int, ak.Array]]:
        f, tree = self._tree(path)
        source = str(path)
        with f:
            branches, stored_jet = self._branches(path, tree)
            end = int(tree.num_entries) if stop is None else min(stop, int(tree.num_entries))
            if end == 0:
                return
            offset = 0
            for chunk in tree.iterate(branches, step_size=chunk_size, entry_stop=end, library="ak"):
                mom = [_jagged_float(chunk[b], b, source, offset) for b in store.MOMENTUM_FIELDS]
                counts = ak.to_numpy(ak.num(mom[0], axis=1))
                onehot = np.stack(
                    [_flat_column(chunk[b], b, source, offset) for b in JETCLASS_LABELS], axis=1
                )
                label = _one_hot_to_label(onehot, JETCLASS_LABELS, source, offset)
                pid = _pid_from_jagged_flags(chunk, counts, source, offset)
                extra = {b: chunk[b] for b in IMPACT_FIELDS if b in chunk.fields} or None
                jet_p4 = None
                if stored_jet:
                    jet_p4 = _jet_p4_from_stored(
                        {b: _flat_column(chunk[b], b, source, offset) for b in JET_P4_FIELDS}
                    )
                yield (
                    offset,
                    store.make_jets(
                        *mom,
                        label=label,
                        pid=pid,
                        charge=chunk["part_charge"],
                        extra_particle=extra,
                        jet_p4=jet_p4,
                    ),
                )
                offset += len(chunk)


_MOMENTA_ORIGIN = {f: f for f in store.MOMENTUM_FIELDS}
_READERS: dict[str, _Reader] = {
    "jettag": _JettagReader("jettag", {}),
    "weaver_parquet": _WeaverParquetReader("weaver_parquet", _MOMENTA_ORIGIN),
    "toplandscape_h5": _TopLandscapeReader(
        "toplandscape_h5",
        {"part_px": "PX_*", "part_py": "PY_*", "part_pz": "PZ_*", "part_energy": "E_*"},
    ),
    "energyflow_npz": _EnergyFlowReader(
        "energyflow_npz",
        {f: "X[..., 0:3] = (pT, y, phi) and the PDG-id mass" for f in store.MOMENTUM_FIELDS},
    ),
    "jetclass_root": _JetClassReader("jetclass_root", _MOMENTA_ORIGIN),
}


# --------------------------------------------------------------------------------------------
# public API


def _describe_parquet(path: Path) -> str:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as err:
        raise JetDataError(f"{path}: starts like parquet but its schema cannot be read: {err}") from err
    if (schema.metadata or {}).get(store.METADATA_KEY) is not None:
        return "jettag"
    names = schema.names
    has_labels = "label" in names or any(n.startswith("label_") for n in names)
    if all(f in names for f in store.MOMENTUM_FIELDS) and has_labels:
        return "weaver_parquet"
    raise UnknownFormatError(
        f"{path}: parquet file of unknown layout: expected the 'jettag' metadata key, or columns "
        f"{list(store.MOMENTUM_FIELDS)} plus 'label' or 'label_*' (weaver); found columns {names[:20]}"
        f"{' ...' if len(names) > 20 else ''}"
    )


def _describe_hdf5(path: Path) -> str:
    import pandas as pd

    try:
        with pd.HDFStore(path, mode="r") as h5:
            keys = h5.keys()
            columns = list(h5.select("table", start=0, stop=0).columns) if "/table" in keys else []
    except Exception as err:
        raise UnknownFormatError(f"{path}: HDF5 file that pandas cannot read as a table ({err})") from err
    if {"E_0", "PX_0", "PY_0", "PZ_0", "is_signal_new"} <= set(map(str, columns)):
        return "toplandscape_h5"
    raise UnknownFormatError(
        f"{path}: HDF5 file of unknown layout: expected key 'table' with columns E_i, PX_i, PY_i, PZ_i, "
        f"is_signal_new (TopLandscape); found keys {keys}, columns {columns[:10]}"
    )


def _describe_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile as err:
        raise UnknownFormatError(f"{path}: looks like a zip/npz archive but cannot be opened: {err}") from err
    if {"X.npy", "y.npy"} <= set(names):
        return "energyflow_npz"
    raise UnknownFormatError(
        f"{path}: npz archive of unknown layout: expected arrays 'X' and 'y' (EnergyFlow); found {names}"
    )


def _describe_root(path: Path) -> str:
    import uproot

    try:
        with uproot.open(path) as f:
            names = {k.split(";")[0] for k in f.keys(recursive=False)}
            if "tree" in names:
                branches = list(f["tree"].keys())
                if "part_px" in branches:
                    return "jetclass_root"
                raise UnknownFormatError(
                    f"{path}: ROOT tree 'tree' has no 'part_px' branch (JetClass layout); "
                    f"branches {branches[:20]}"
                )
    except UnknownFormatError:
        raise
    except Exception as err:
        raise UnknownFormatError(f"{path}: ROOT file that uproot cannot read ({err})") from err
    raise UnknownFormatError(
        f"{path}: ROOT file without a tree 'tree' (JetClass layout); found {sorted(names)}"
    )


def detect_format(path: str | os.PathLike) -> str:
    """The layout of one file, from its content: one of :data:`FORMATS`.

    The magic bytes pick the container (parquet, HDF5, zip/npz, ROOT), then the schema, keys or
    member names pick the layout. Raises ``FileNotFoundError`` for a missing file and
    :class:`UnknownFormatError` (a ``JetDataError``) naming the file and what was found otherwise.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise UnknownFormatError(f"{path}: not a regular file")
    with open(path, "rb") as fh:
        head = fh.read(8)
        hdf5 = head == _HDF5_SIGNATURE
        for userblock in (512, 1024, 2048, 4096):  # HDF5 may sit after a user block
            if hdf5:
                break
            fh.seek(userblock)
            hdf5 = fh.read(8) == _HDF5_SIGNATURE
    if head[:4] == b"PAR1":
        return _describe_parquet(path)
    if hdf5:
        return _describe_hdf5(path)
    if head[:4] == b"PK\x03\x04":
        return _describe_zip(path)
    if head[:4] == b"root":
        return _describe_root(path)
    raise UnknownFormatError(
        f"{path}: unknown layout: content starts with {head!r}, which is none of parquet (b'PAR1'), "
        f"HDF5, npz (zip) or ROOT (b'root'); supported layouts: {', '.join(FORMATS)}"
    )


def resolve_dataset(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Files of a dataset: files, directories (their files with a known suffix), globs or a list."""
    return store.resolve_paths(paths, suffixes=DATASET_SUFFIXES)


def num_jets(path: str | os.PathLike) -> int:
    """Number of jets (rows) stored in one file, read from its header/metadata only."""
    path = Path(path)
    return _READERS[detect_format(path)].num_jets(path)


def file_classes(path: str | os.PathLike) -> list[str]:
    """The ordered class names of one file."""
    path = Path(path)
    return _READERS[detect_format(path)].classes(path)


def dataset_classes(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The ordered class names of a dataset; every file must agree.

    Files with bare integer labels (weaver parquet ``label``) are named ``"0"``, ``"1"``, ...; a
    file that happens to hold only the lower labels is compatible with one that holds more, so
    those take the longest such list.
    """
    files = resolve_dataset(paths)
    result: list[str] | None = None
    first = files[0]
    for f in files:
        classes = file_classes(f)
        if result is None:
            result = classes
            continue
        numeric = all(c.isdigit() for c in classes + result)
        if numeric:
            result = max(result, classes, key=len)
        elif classes != result:
            raise JetDataError(f"{f}: classes {classes} differ from {first}: {result}")
    assert result is not None
    return result


def _check_labels(jets: ak.Array, n_classes: int, source: str, row_offset: int) -> None:
    label = ak.to_numpy(jets["label"])
    bad = (label < 0) | (label >= n_classes)
    if bad.any():
        row = _first_row(bad)
        raise JetDataError(
            f"{source}: field 'label' is {int(label[row])} at row {row + row_offset}, outside the "
            f"{n_classes} classes of the file"
        )


def iter_jets(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    chunk_size: int = 100_000,
    drop_invalid: bool = False,
    *,
    max_jets: int | None = None,
    report: DropReport | None = None,
) -> Iterator[ak.Array]:
    """Canonical jets of a dataset of any supported layout, in chunks of at most ``chunk_size``.

    Args:
        paths: a file, directory, glob or list of them; each file's layout is detected.
        chunk_size: the most jets read (and held in memory) at once.
        drop_invalid: drop jets with NaN/inf momenta or no constituents instead of raising.
        max_jets: read at most this many jets in total (before dropping), then stop.
        report: if given, accumulates what was kept and dropped (``DropReport``), per file.

    Raises:
        JetDataError naming the file, the field and the row (0-based, in that file) of the first
        problem; FileNotFoundError for a missing path.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    files = resolve_dataset(paths)
    remaining = max_jets
    for path in files:
        if remaining is not None and remaining <= 0:
            return
        fmt = detect_format(path)
        reader = _READERS[fmt]
        n_classes = len(reader.classes(path))
        read_here = 0
        for offset, jets in reader.chunks(path, chunk_size, remaining):
            try:
                valid, rep = store.validate_jets(
                    jets, str(path), drop_invalid=drop_invalid, row_offset=offset
                )
            except JetDataError as err:
                raise JetDataError(_with_origin(str(err), reader.origin)) from None
            _check_labels(jets, n_classes, str(path), offset)
            read_here = offset + len(jets)
            if report is not None:
                report += rep
                if str(path) not in report.sources:
                    report.sources.append(str(path))
            yield valid
        if remaining is not None:
            remaining -= read_here


def _with_origin(message: str, origin: dict[str, str]) -> str:
    """Append where the canonical field named in a validation message comes from in the file."""
    hits = [f"{f!r} is read from {src}" for f, src in origin.items() if f"'{f}'" in message and src != f]
    return f"{message} ({'; '.join(hits)})" if hits else message


def read_jets(paths: str | os.PathLike | Sequence[str | os.PathLike], **kwargs: Any) -> ak.Array:
    """A whole dataset in memory as one array of canonical jets (``iter_jets`` keywords apply)."""
    chunks = [c for c in iter_jets(paths, **kwargs)]
    if not chunks:
        raise JetDataError(f"{paths}: no jets read")
    return chunks[0] if len(chunks) == 1 else ak.concatenate(chunks)


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Format, classes and size of one file, from headers only (used by ``jettag inspect``)."""
    path = Path(path)
    fmt = detect_format(path)
    reader = _READERS[fmt]
    out: dict[str, Any] = {
        "path": str(path),
        "format": fmt,
        "classes": reader.classes(path),
        "jets": reader.num_jets(path),
    }
    if fmt == "jettag":
        out["metadata"] = store.read_metadata(path)
    return out
