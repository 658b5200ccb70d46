"""TopLandscape pandas HDF5 (key "table", E_i/PX_i/PY_i/PZ_i columns, is_signal_new), read with h5py.

pandas writes a DataFrame through PyTables, and PyTables unpickles every string attribute that
ends in ``"."`` as soon as it is read; a crafted ``.h5`` whose attribute holds a pickle therefore
runs code on ``pd.HDFStore``/``pd.read_hdf`` before a single number is read. This module reads
the same layout with h5py, which never unpickles, and takes the column layout from the data:

``format="table"`` (``frame_table``)
    one compound dataset ``/table/table`` with the index in its first field and the columns in
    ``values_block_<k>`` fields of shape ``(n_k,)`` (or one field per data column, named after
    it). The names of the columns of block ``k`` are stored by pandas only as a pickled list of
    strings in the dataset attribute ``values_block_<k>_kind``; it is decoded with
    :class:`_NoGlobalsUnpickler`, which refuses every global (class or function) so that the
    pickle can build nothing but strings, numbers, lists, tuples and dicts.
``format="fixed"`` (``frame``)
    ``/table/block<k>_items`` (column names as a plain string array) and
    ``/table/block<k>_values`` (rows x columns, attribute ``transposed=1``), ``nblocks`` on the
    group. Nothing pickled is needed.

Everything a corrupt or hostile file can make h5py raise becomes a ``JetDataError`` naming the
file; external links, external raw storage and virtual datasets (which would read other files)
are refused, and a dataset whose declared size is not backed by stored data is refused before
any read, so a flipped size field cannot make the reader allocate or loop over phantom rows.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from jettag.data import store
from jettag.data.formats.common import (
    TOPLANDSCAPE_CLASSES,
    _binary_label,
    _padded_to_jagged,
    _Reader,
    error_text,
)
from jettag.data.store import JetDataError

TOPLANDSCAPE_KEY = "table"
# A pickled column-name list of 10^5 names is ~1.5 MB; anything larger is not a pandas attribute.
_MAX_PICKLE_BYTES = 16 << 20
_BLOCK_FIELD = re.compile(r"values_block_(\d+)")


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Unpickler that builds only built-in containers and scalars: every global is refused.

    Code execution through pickle needs a callable, and every callable reaches the unpickler
    through ``find_class`` (``GLOBAL``/``STACK_GLOBAL``/``INST``/``OBJ``/extension codes alike);
    refusing them all leaves ``str``, ``bytes``, numbers, ``None``, ``bool``, lists, tuples,
    dicts and sets. Persistent ids are refused by the base class (no ``persistent_load``).
    """

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _unpickle_plain(raw: bytes) -> Any:
    if len(raw) > _MAX_PICKLE_BYTES:
        raise pickle.UnpicklingError(f"{len(raw)} bytes, more than a pandas attribute holds")
    return _NoGlobalsUnpickler(io.BytesIO(raw), encoding="latin1").load()


def _text(value: Any) -> str | None:
    """A string attribute as text (h5py gives bytes or numpy bytes); None for anything else."""
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    return None


@dataclass(frozen=True)
class _Block:
    """Columns stored together: a compound field (table format) or a 2D array (fixed format)."""

    dataset: str  # path of the dataset inside the file
    field: str | None  # compound field of the table format; None for a fixed-format array
    names: tuple[str, ...]
    kind: str  # numpy dtype kind of the values ("f", "i", ...)


@dataclass(frozen=True)
class PandasFrame:
    """Column layout of one DataFrame that pandas wrote to HDF5, read without unpickling."""

    path: Path
    key: str
    fmt: str  # "table" or "fixed"
    nrows: int
    blocks: tuple[_Block, ...]

    @property
    def columns(self) -> list[str]:
        return [n for b in self.blocks for n in b.names]

    def locate(self, names: list[str]) -> dict[str, tuple[int, int]]:
        """Column name -> (block index, position within the block)."""
        where = {n: (b, i) for b, blk in enumerate(self.blocks) for i, n in enumerate(blk.names)}
        return {n: where[n] for n in names}

    def read(self, f: Any, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``start:stop`` of the named numeric columns (from an open ``h5py.File``)."""
        where = self.locate(names)
        out: dict[str, np.ndarray] = {}
        for b in sorted({b for b, _ in where.values()}):
            blk = self.blocks[b]
            ds = f[blk.dataset]
            if blk.field is None:
                values = ds[start:stop]
            else:
                values = ds.fields(blk.field)[start:stop]
            values = np.asarray(values).reshape(stop - start, len(blk.names))
            for n, (bb, i) in where.items():
                if bb == b:
                    out[n] = values[:, i]
        return out


def _refuse_links(path: Path, group: Any, name: str) -> None:
    import h5py

    link = group.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink | h5py.SoftLink):
        raise JetDataError(
            f"{path}: {group.name.rstrip('/')}/{name} is a {type(link).__name__}; jettag reads only "
            "data stored in the file itself"
        )


def _check_stored(path: Path, ds: Any, rows: int) -> None:
    """Refuse a dataset that reads other files or declares more data than the file stores."""
    import h5py

    if ds.is_virtual or ds.external:
        raise JetDataError(f"{path}: dataset {ds.name} maps data from other files; refused")
    if ds.size == 0:
        return
    dcpl = ds.id.get_create_plist()
    layout = dcpl.get_layout()
    declared = int(ds.size) * ds.dtype.itemsize
    what = f"dataset {ds.name} declares {rows} rows ({declared} bytes)"
    if layout == h5py.h5d.CONTIGUOUS:
        offset = ds.id.get_offset()
        if offset is None or ds.id.get_storage_size() < declared:
            raise JetDataError(f"{path}: {what} but stores {ds.id.get_storage_size()} bytes (truncated?)")
        if offset + declared > os.path.getsize(path):
            raise JetDataError(f"{path}: {what} that run past the end of the file (truncated?)")
    elif layout == h5py.h5d.CHUNKED:
        chunk = ds.chunks
        expected = int(np.prod([-(-s // c) for s, c in zip(ds.shape, chunk)], dtype=np.int64))
        stored = ds.id.get_num_chunks()
        if stored < expected:
            raise JetDataError(
                f"{path}: {what} but only {stored} of its {expected} data chunks are stored (truncated?)"
            )


def _read_table_format(path: Path, key: str, group: Any) -> PandasFrame:
    import h5py

    _refuse_links(path, group, "table")
    ds = group.get("table")
    if not isinstance(ds, h5py.Dataset) or ds.dtype.names is None or ds.ndim != 1:
        raise JetDataError(f"{path}: pandas table {key!r} has no compound dataset '{key}/table'")
    blocks = []
    for field in ds.dtype.names[1:]:  # pandas writes the index as the first field
        sub = ds.dtype.fields[field][0]
        width = int(np.prod(sub.shape, dtype=np.int64)) if sub.shape else 1
        if _BLOCK_FIELD.fullmatch(field):
            raw = ds.attrs.get(f"{field}_kind")
            if not isinstance(raw, bytes | np.bytes_):
                raise JetDataError(f"{path}: column names of {key}/table field {field!r} are missing")
            try:
                names = _unpickle_plain(bytes(raw))
            except Exception as err:
                raise JetDataError(
                    f"{path}: column names of {key}/table field {field!r} are not a plain pickled list "
                    f"of strings ({error_text(err)}); refusing to unpickle anything else"
                ) from None
            if not isinstance(names, list) or not all(isinstance(n, str | int) for n in names):
                raise JetDataError(
                    f"{path}: column names of {key}/table field {field!r} are {type(names).__name__}, "
                    "not a list of strings"
                )
            names = [str(n) for n in names]
        else:
            names = [field]  # a data column: its own field
        if len(names) != width:
            raise JetDataError(
                f"{path}: {key}/table field {field!r} holds {width} columns but names {len(names)}"
            )
        blocks.append(_Block(ds.name, field, tuple(names), sub.base.kind))
    _check_stored(path, ds, ds.shape[0])
    return PandasFrame(path, key, "table", int(ds.shape[0]), tuple(blocks))


def _read_fixed_format(path: Path, key: str, group: Any) -> PandasFrame:
    import h5py

    nblocks = group.attrs.get("nblocks")
    if not isinstance(nblocks, int | np.integer) or not 0 <= int(nblocks) <= 10_000:
        raise JetDataError(f"{path}: pandas frame {key!r} has no valid 'nblocks' attribute ({nblocks!r})")
    blocks = []
    nrows: int | None = None
    for k in range(int(nblocks)):
        if _text(group.attrs.get(f"block{k}_items_variety")) != "regular":
            raise JetDataError(f"{path}: pandas frame {key!r} block {k} does not have plain column names")
        for part in (f"block{k}_items", f"block{k}_values"):
            _refuse_links(path, group, part)
        items, values = group.get(f"block{k}_items"), group.get(f"block{k}_values")
        if not isinstance(items, h5py.Dataset) or not isinstance(values, h5py.Dataset):
            raise JetDataError(f"{path}: pandas frame {key!r} lacks block{k}_items/block{k}_values")
        if items.ndim != 1 or items.dtype.kind not in "SUiu" or items.size > 10_000_000:
            raise JetDataError(f"{path}: {key}/block{k}_items is not a list of column names ({items.dtype})")
        _check_stored(path, items, items.shape[0])
        names = tuple(n.decode("utf-8", errors="replace") if isinstance(n, bytes) else str(n)
                      for n in items[()].tolist())  # fmt: skip
        transposed = values.attrs.get("transposed")
        if values.ndim != 2 or not isinstance(transposed, int | np.integer) or transposed != 1:
            raise JetDataError(
                f"{path}: {key}/block{k}_values is not a rows x columns array as pandas writes it "
                f"(shape {values.shape})"
            )
        if values.shape[1] != len(names):
            raise JetDataError(
                f"{path}: {key}/block{k}_values holds {values.shape[1]} columns but block{k}_items "
                f"names {len(names)}"
            )
        if nrows is not None and values.shape[0] != nrows:
            raise JetDataError(f"{path}: blocks of pandas frame {key!r} have different numbers of rows")
        nrows = int(values.shape[0])
        _check_stored(path, values, nrows)
        blocks.append(_Block(values.name, None, names, values.dtype.kind))
    return PandasFrame(path, key, "fixed", nrows or 0, tuple(blocks))


def pandas_frame_layout(f: Any, path: Path, key: str) -> PandasFrame:
    """The layout of DataFrame ``key`` in an open ``h5py.File`` (format ``table`` or ``fixed``)."""
    import h5py

    _refuse_links(path, f, key)
    group = f.get(key)
    if not isinstance(group, h5py.Group):
        raise JetDataError(f"{path}: HDF5 key {key!r} missing; the file has keys {sorted(f.keys())}")
    pandas_type = _text(group.attrs.get("pandas_type"))
    if pandas_type == "frame_table":
        return _read_table_format(path, key, group)
    if pandas_type == "frame":
        return _read_fixed_format(path, key, group)
    raise JetDataError(
        f"{path}: HDF5 key {key!r} is not a pandas DataFrame (pandas_type {pandas_type!r:.60}, expected "
        "'frame_table' or 'frame')"
    )


def open_hdf5(path: Path) -> Any:
    """``h5py.File`` opened read-only; errors become a ``JetDataError`` naming the file."""
    import h5py

    try:
        return h5py.File(path, "r", locking=False)
    except Exception as err:  # h5py raises OSError for most corruption, others for a few
        raise JetDataError(f"{path}: cannot open as HDF5: {error_text(err)}") from None


def read_layout(path: Path, key: str = TOPLANDSCAPE_KEY) -> tuple[list[str], PandasFrame]:
    """(top-level keys, DataFrame layout of ``key``) of an HDF5 file, any h5py error wrapped."""
    with open_hdf5(path) as f:
        try:
            keys = sorted(f.keys())
            return keys, pandas_frame_layout(f, path, key)
        except JetDataError:
            raise
        except Exception as err:  # a corrupt header can make h5py raise OSError, KeyError, ...
            raise JetDataError(f"{path}: corrupt HDF5 structure: {error_text(err)}") from None


class _TopLandscapeReader(_Reader):
    KEY = TOPLANDSCAPE_KEY

    def _layout(self, path: Path) -> tuple[PandasFrame, int]:
        """(frame layout, number of constituent slots), checking every needed column exists."""
        _, frame = read_layout(path, self.KEY)
        columns = frame.columns
        slots = sorted(int(m.group(1)) for c in columns if (m := re.fullmatch(r"E_(\d+)", c)))
        needed = [f"{p}_{i}" for i in range(len(slots)) for p in ("E", "PX", "PY", "PZ")] + ["is_signal_new"]
        present = set(columns)
        missing = [c for c in needed if c not in present]
        if not slots or missing:
            shown = missing[:8] if slots else ["E_0", "PX_0", "PY_0", "PZ_0"]
            raise JetDataError(
                f"{path}: TopLandscape column(s) {shown}{' ...' if len(missing) > 8 else ''} missing "
                f"(key {self.KEY!r} has {len(columns)} columns: {columns[:6]} ...)"
            )
        for b in sorted({b for b, _ in frame.locate(needed).values()}):
            blk = frame.blocks[b]
            if blk.kind not in "fiub":
                raise JetDataError(
                    f"{path}: TopLandscape column(s) {list(blk.names[:4])} are not numeric (dtype kind "
                    f"{blk.kind!r})"
                )
        return frame, len(slots)

    def classes(self, path: Path) -> list[str]:
        return list(TOPLANDSCAPE_CLASSES)

    def num_jets(self, path: Path) -> int:
        return self._layout(path)[0].nrows

    def chunks(self, path: Path, chunk_size: int, stop: int | None) -> Iterator[tuple[int, ak.Array]]:
        frame, m = self._layout(path)
        end = frame.nrows if stop is None else min(stop, frame.nrows)
        cols = {p: [f"{p}_{i}" for i in range(m)] for p in ("E", "PX", "PY", "PZ")}
        wanted = [c for names in cols.values() for c in names] + ["is_signal_new"]
        source = str(path)
        with open_hdf5(path) as f:
            for start in range(0, end, chunk_size):
                stop_here = min(start + chunk_size, end)
                try:
                    data = frame.read(f, wanted, start, stop_here)
                except Exception as err:  # corrupt chunk data: h5py raises OSError and others
                    raise JetDataError(
                        f"{path}: cannot read rows {start}-{stop_here - 1} of key {self.KEY!r}: "
                        f"{error_text(err)}"
                    ) from None
                arrays = {p: np.stack([data[c] for c in names], axis=1).astype(np.float64)
                          for p, names in cols.items()}  # fmt: skip
                # Padding is all-zero; a NaN or a negative energy is kept as a "real" entry so that
                # validation reports it instead of it silently vanishing as padding.
                real = (arrays["E"] != 0) | (arrays["PX"] != 0) | (arrays["PY"] != 0) | (arrays["PZ"] != 0)
                jag, _ = _padded_to_jagged(arrays, real)
                label = _binary_label(data["is_signal_new"], "is_signal_new", source, start)
                yield start, store.make_jets(jag["PX"], jag["PY"], jag["PZ"], jag["E"], label=label)
