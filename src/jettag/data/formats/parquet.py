"""Parquet layouts: the canonical jettag store and the files weaver users converted."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import awkward as ak
import numpy as np

from jettag.data import store
from jettag.data.formats.common import (
    IMPACT_FIELDS,
    JET_P4_FIELDS,
    PID_FLAGS,
    _first_row,
    _flat_column,
    _jagged_float,
    _jet_p4_from_stored,
    _one_hot_to_label,
    _pid_from_jagged_flags,
    _Reader,
    charge_from_pid,
)
from jettag.data.store import JetDataError


class _JettagReader(_Reader):
    def classes(self, path: Path) -> list[str]:
        return store.read_metadata(path)["classes"]  # checked as a list of strings by the caller

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
        detector = [f for f in store.DETECTOR_PARTICLE_FIELDS if f in names]
        if detector and len(detector) != len(store.DETECTOR_PARTICLE_FIELDS):
            lacking = [f for f in store.DETECTOR_PARTICLE_FIELDS if f not in names]
            raise JetDataError(f"{path}: detector field(s) {lacking} missing while {detector} are present")
        optional = [f for f in ("part_pid", "part_charge", *PID_FLAGS, *JET_P4_FIELDS) if f in names]
        columns = [*store.MOMENTUM_FIELDS, *optional, *impact, *detector, *labels]
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
            extra = {f: chunk[f] for f in (*impact, *detector)} or None
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
