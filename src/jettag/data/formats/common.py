"""Shared pieces of the format readers: class lists, the PDG-id table, padded-to-jagged conversion,
label decoding and the reader interface every layout implements."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from jettag.data import store
from jettag.data.store import JetDataError

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


def error_text(err: BaseException, limit: int = 300) -> str:
    """``"Type: message"`` of a third-party exception on one line, at most ``limit`` characters
    (uproot and pyarrow messages span several lines and can quote whole paths)."""
    text = f"{type(err).__name__}: {' '.join(str(err).split())}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Turn any exception a third-party reader raises on a corrupt file into a ``JetDataError``.

    The boundary of every reader: h5py, uproot, pyarrow, zipfile, zlib and numpy raise OSError,
    ValueError, KeyError, struct.error, BadZipFile, DeserializationError, MemoryError (a declared
    size too large to allocate) and more on damaged input. ``JetDataError`` (already naming the
    file) and ``FileNotFoundError`` pass through unchanged.
    """
    try:
        yield
    except (JetDataError, FileNotFoundError):
        raise
    except Exception as err:
        raise JetDataError(f"{path}: cannot {what}: {error_text(err)}") from err


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


def _require_numbers(arr: ak.Array, field: str, source: str) -> None:
    """Refuse a column whose values are not real numbers (text would be parsed, silently)."""
    layout = ak.to_layout(arr)
    while hasattr(layout, "content") and layout.parameter("__array__") not in ("string", "bytestring"):
        layout = layout.content
    if not isinstance(layout, ak.contents.NumpyArray) or layout.dtype.kind not in "fiub":
        raise JetDataError(f"{source}: field {field!r} must hold real numbers, found type {arr.type}")


def _jagged_float(arr: ak.Array, field: str, source: str, row_offset: int) -> ak.Array:
    """A jagged numeric column as float64 with missing values as NaN (validation then names them)."""
    _require_numbers(arr, field, source)
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
        _require_numbers(arr, field, source)
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
