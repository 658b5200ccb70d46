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
    classes ``["gluon", "quark"]``. Charges come from the PDG id (table below). The 4-vectors
    follow ``qg_convention``: ``"part"`` (default, what ParT's converter and so the published
    numbers used: rapidity taken as eta, massless) or ``"pdg"`` (rapidity with the PDG mass);
    see ``energyflow.py`` and ``docs/formats.md``.
``jetclass_root``
    ROOT TTree (or RNTuple) ``tree`` with the JetClass branches; one-hot ``label_*`` in the order
    of :data:`JETCLASS_CLASSES`. JetClass stores particle-id flags, not PDG ids; a representative
    PDG id is reconstructed from them (see :func:`pid_from_flags`).

One module per layout (``parquet``, ``toplandscape``, ``energyflow``, ``jetclass``), each a reader
class on the interface of ``common._Reader``; this module detects the layout and dispatches.

Design choices worth knowing:

- Detection reads the file's magic bytes and then its schema/keys, never trusts the extension,
  so a renamed or extension-less file still works and a wrong file fails with a message saying
  what was found.
- No reader unpickles anything (``docs/security.md``): the pandas HDF5 is read with h5py, not
  PyTables, whose attribute reads unpickle.
- Every reader is chunked and never loads a whole file: parquet row batches, h5py row slices,
  ``TTree.iterate(step_size=...)`` and, for npz, a streaming read of the ``.npy`` member inside
  the zip (``np.load`` would decompress all of ``X`` at once).
- Where a file stores the jet 4-vector (JetClass ``jet_pt/eta/phi/energy``, weaver parquet) it is
  kept, because the reference feature definitions (``part_logptrel`` ...) use the stored jet;
  otherwise the jet is the constituent sum.
- Every chunk goes through :func:`jettag.data.store.validate_jets` with the file name and the
  absolute row offset, so an error names the file, the field and the row in that file.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from jettag.data import store
from jettag.data.formats.common import (
    _HDF5_SIGNATURE,
    DATASET_SUFFIXES,
    ENERGYFLOW_CLASSES,
    FORMATS,
    JETCLASS_CLASSES,
    PDG_TABLE,
    TOPLANDSCAPE_CLASSES,
    UnknownFormatError,
    _first_row,
    _Reader,
    charge_from_pid,
    error_text,
    pid_from_flags,
    reading,
)
from jettag.data.formats.energyflow import (
    QG_CONVENTIONS,
    _EnergyFlowReader,
)
from jettag.data.formats.jetclass import (
    _JetClassReader,
)
from jettag.data.formats.parquet import (
    _JettagReader,
    _WeaverParquetReader,
)
from jettag.data.formats.toplandscape import (
    TOPLANDSCAPE_KEY,
    _TopLandscapeReader,
    read_layout,
)
from jettag.data.store import DropReport, JetDataError

__all__ = [
    "DATASET_SUFFIXES",
    "ENERGYFLOW_CLASSES",
    "FORMATS",
    "JETCLASS_CLASSES",
    "PDG_TABLE",
    "QG_CONVENTIONS",
    "TOPLANDSCAPE_CLASSES",
    "UnknownFormatError",
    "charge_from_pid",
    "dataset_classes",
    "describe",
    "detect_format",
    "file_classes",
    "iter_jets",
    "num_jets",
    "pid_from_flags",
    "read_jets",
    "resolve_dataset",
]

_MOMENTA_ORIGIN = {f: f for f in store.MOMENTUM_FIELDS}
_READERS: dict[str, _Reader] = {
    "jettag": _JettagReader("jettag", {}),
    "weaver_parquet": _WeaverParquetReader("weaver_parquet", _MOMENTA_ORIGIN),
    "toplandscape_h5": _TopLandscapeReader(
        "toplandscape_h5",
        {"part_px": "PX_*", "part_py": "PY_*", "part_pz": "PZ_*", "part_energy": "E_*"},
    ),
    "jetclass_root": _JetClassReader("jetclass_root", _MOMENTA_ORIGIN),
}
_QG_ORIGIN = {
    "part": "X[..., 0:3] = (pT, y taken as eta, phi), massless",
    "pdg": "X[..., 0:3] = (pT, y, phi) and the PDG-id mass",
}
_QG_READERS = {
    c: _EnergyFlowReader("energyflow_npz", dict.fromkeys(store.MOMENTUM_FIELDS, _QG_ORIGIN[c]), convention=c)
    for c in QG_CONVENTIONS
}
_READERS["energyflow_npz"] = _QG_READERS["part"]


def _reader(fmt: str, qg_convention: str = "part") -> _Reader:
    """The reader of a layout; EnergyFlow files are read in the chosen quark/gluon convention."""
    return _QG_READERS[qg_convention] if fmt == "energyflow_npz" else _READERS[fmt]


# --------------------------------------------------------------------------------------------
# public API


def _describe_parquet(path: Path) -> str:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as err:
        raise JetDataError(
            f"{path}: starts like parquet but its schema cannot be read: {error_text(err)}"
        ) from err
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
    # h5py, not pandas: PyTables would unpickle attributes (see toplandscape.py)
    try:
        keys, frame = read_layout(path, TOPLANDSCAPE_KEY)
        columns = frame.columns
    except UnknownFormatError:
        raise
    except JetDataError as err:
        raise UnknownFormatError(
            f"{err} (the only HDF5 layout read is TopLandscape: a pandas DataFrame under key 'table')"
        ) from None
    if {"E_0", "PX_0", "PY_0", "PZ_0", "is_signal_new"} <= set(columns):
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
        raise UnknownFormatError(
            f"{path}: looks like a zip/npz archive but cannot be opened: {error_text(err)}"
        ) from err
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
        raise UnknownFormatError(f"{path}: ROOT file that uproot cannot read ({error_text(err)})") from err
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
    describe_layout = {b"PAR1": _describe_parquet, b"PK\x03\x04": _describe_zip, b"root": _describe_root}.get(
        head[:4], _describe_hdf5 if hdf5 else None
    )
    if describe_layout is not None:
        with reading(path, "read its layout"):
            return describe_layout(path)
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
    reader = _READERS[detect_format(path)]
    with reading(path, "read the number of jets"):
        return reader.num_jets(path)


def file_classes(path: str | os.PathLike) -> list[str]:
    """The ordered class names of one file."""
    path = Path(path)
    reader = _READERS[detect_format(path)]
    with reading(path, "read the class names"):
        return _checked_classes(path, reader.classes(path))


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


def _check_jet_fields(jets: ak.Array, source: str, row_offset: int, rows_exact: bool) -> None:
    """Per-jet numbers (the stored or summed jet 4-vector) must be finite: a NaN ``jet_pt`` read
    from a file's stored jet would otherwise reach the features silently."""
    for f in jets.fields:
        if jets[f].ndim != 1 or f == "label":
            continue
        values = ak.to_numpy(jets[f])
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            row = _first_row(~np.isfinite(values))
            where = (
                f"row {row + row_offset}" if rows_exact else f"kept jet {row} of the rows from {row_offset}"
            )
            raise JetDataError(
                f"{source}: field {f!r} is {values[row]} at {where}; jet fields must be finite"
            )


def iter_jets(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    chunk_size: int = 100_000,
    drop_invalid: bool = False,
    *,
    max_jets: int | None = None,
    report: DropReport | None = None,
    qg_convention: str = "part",
) -> Iterator[ak.Array]:
    """Canonical jets of a dataset of any supported layout, in chunks of at most ``chunk_size``.

    Args:
        paths: a file, directory, glob or list of them; each file's layout is detected.
        chunk_size: the most jets read (and held in memory) at once.
        drop_invalid: drop jets with NaN/inf momenta or no constituents instead of raising.
        max_jets: read at most this many jets in total (before dropping), then stop.
        report: if given, accumulates what was kept and dropped (``DropReport``), per file.
        qg_convention: how EnergyFlow quark/gluon rows become 4-vectors: ``"part"`` (rapidity
            taken as eta, massless: ParT's published setup) or ``"pdg"`` (rapidity, PDG masses).

    Raises:
        JetDataError naming the file, the field and the row (0-based, in that file) of the first
        problem; FileNotFoundError for a missing path.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if qg_convention not in QG_CONVENTIONS:
        raise ValueError(f"qg_convention must be one of {QG_CONVENTIONS}, got {qg_convention!r}")
    files = resolve_dataset(paths)
    remaining = max_jets
    for path in files:
        if remaining is not None and remaining <= 0:
            return
        fmt = detect_format(path)
        reader = _reader(fmt, qg_convention)
        n_classes = len(file_classes(path))
        read_here = 0
        for offset, jets in _guarded(path, fmt, reader.chunks(path, chunk_size, remaining)):
            with reading(path, f"validate the jets read as {fmt}"):  # e.g. a field of strings
                try:
                    valid, rep = store.validate_jets(
                        jets, str(path), drop_invalid=drop_invalid, row_offset=offset
                    )
                except JetDataError as err:
                    raise JetDataError(_with_origin(str(err), reader.origin)) from None
                _check_labels(jets, n_classes, str(path), offset)
                _check_jet_fields(valid, str(path), offset, rep.dropped == 0)
            read_here = offset + len(jets)
            if report is not None:
                report += rep
                if str(path) not in report.sources:
                    report.sources.append(str(path))
            yield valid
        if remaining is not None:
            remaining -= read_here


def _guarded(
    path: Path, fmt: str, chunks: Iterator[tuple[int, ak.Array]]
) -> Iterator[tuple[int, ak.Array]]:
    """A reader's chunks, with whatever a corrupt file makes the reader raise turned into a
    ``JetDataError`` naming the file (the consumer's own code runs outside this guard)."""
    with reading(path, f"read it as {fmt}"):
        yield from chunks


def _checked_classes(path: Path, classes: Any) -> list[str]:
    """Class names as a non-empty list of distinct strings (store metadata is JSON from the file)."""
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, str) for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise JetDataError(
            f"{path}: class names must be a non-empty list of distinct strings, found {classes!r:.200}"
        )
    return classes


def _with_origin(message: str, origin: dict[str, str]) -> str:
    """Append where the canonical field named in a validation message comes from in the file."""
    hits = [f"{f!r} is read from {src}" for f, src in origin.items() if f"'{f}'" in message and src != f]
    return f"{message} ({'; '.join(hits)})" if hits else message


def read_jets(paths: str | os.PathLike | Sequence[str | os.PathLike], **kwargs: Any) -> ak.Array:
    """A whole dataset in memory as one array of canonical jets (``iter_jets`` keywords apply)."""
    chunks = [c for c in iter_jets(paths, **kwargs)]
    if not chunks:
        shown = paths if isinstance(paths, str | os.PathLike) else ", ".join(str(p) for p in paths)
        raise JetDataError(f"{shown}: no jets read")
    return chunks[0] if len(chunks) == 1 else ak.concatenate(chunks)


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Format, classes and size of one file, from headers only (used by ``jettag inspect``)."""
    path = Path(path)
    fmt = detect_format(path)
    reader = _READERS[fmt]
    with reading(path, "read its header"):
        out: dict[str, Any] = {
            "path": str(path),
            "format": fmt,
            "classes": _checked_classes(path, reader.classes(path)),
            "jets": reader.num_jets(path),
        }
        if fmt == "jettag":
            out["metadata"] = store.read_metadata(path)
    return out
