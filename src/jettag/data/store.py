"""The canonical jet store: parquet files with one row per jet.

Every reader converts its format into this layout and every later stage (features, batching,
training, evaluation) reads only this layout, so a new input format needs one reader and nothing
else. The schema is weaver's vocabulary (``part_*``, ``jet_*``, ``label``) so that weaver users
recognise it:

- jagged float32 ``part_px, part_py, part_pz, part_energy``, int32 ``part_pid`` (PDG id, 0 when
  unknown), float32 ``part_charge``; optional float32 ``part_d0val, part_d0err, part_dzval,
  part_dzerr`` in mm; optional detector-level fields (``jettag generate --detector simple``): int32
  ``part_kind`` (``KIND_TRACK`` = 0, ``KIND_CLUSTER`` = 1) and float32 ``part_emfrac``,
  ``part_hadfrac`` (a cluster's E_EM/E and E_Had/E; 0 for tracks);
- float32 ``jet_pt, jet_eta, jet_phi, jet_energy, jet_mass``, int32 ``jet_nparticles``, int32
  ``label`` (index into the ordered class names);
- file metadata key ``jettag``: JSON with at least ``classes`` and ``source``.

Generated jets (``jettag generate``, generator version 4 on) also carry the generator truth of the
resonance a signal jet was matched to, as jagged per-jet lists of its visible decay partons
(``TRUTH_FIELDS``): int32 ``truth_pid`` (signed PDG id), ``truth_mother`` (|PDG id| of the parton's
mother: 6 for the b of a top, 24 for a W daughter, 23/25 for Z/H daughters), float32 ``truth_pt,
truth_eta, truth_phi``; empty lists for jets of classes without a resonance (QCD). Optional: no
reader requires them.

Event samples (``jettag generate hh4b``) store each event as consecutive rows, one per jet, leading
first, with int32 ``event_index, event_jet_index`` and float32 ``event_pt, event_eta, event_phi,
event_energy, event_mass`` (the system of the event's jets), ``event_truth_mass`` and the optional
int32 ``jet_nbhadrons`` (generator b hadrons within R of the jet axis, ``OPTIONAL_JET_FIELDS``); every
jet-level tool reads them as jets, and ``group_events`` gives the [event][jet] view.

Particles are sorted by decreasing pT. A dataset is a directory, a glob or a list of such files.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jettag.errors import JettagError
from jettag.files import atomic_path
from jettag.physics import kinematics as kin

METADATA_KEY = b"jettag"

PARTICLE_FIELDS: dict[str, type] = {
    "part_px": np.float32,
    "part_py": np.float32,
    "part_pz": np.float32,
    "part_energy": np.float32,
    "part_pid": np.int32,
    "part_charge": np.float32,
}
OPTIONAL_PARTICLE_FIELDS: dict[str, type] = {
    "part_d0val": np.float32,
    "part_d0err": np.float32,
    "part_dzval": np.float32,
    "part_dzerr": np.float32,
}
TRUTH_FIELDS: dict[str, type] = {
    "truth_pid": np.int32,
    "truth_mother": np.int32,
    "truth_pt": np.float32,
    "truth_eta": np.float32,
    "truth_phi": np.float32,
}
# Detector-level constituents: what each one is, and a cluster's energy split between the layers.
DETECTOR_PARTICLE_FIELDS: dict[str, type] = {
    "part_kind": np.int32,
    "part_emfrac": np.float32,
    "part_hadfrac": np.float32,
}
KIND_TRACK, KIND_CLUSTER = 0, 1
JET_FIELDS: dict[str, type] = {
    "jet_pt": np.float32,
    "jet_eta": np.float32,
    "jet_phi": np.float32,
    "jet_energy": np.float32,
    "jet_mass": np.float32,
    "jet_nparticles": np.int32,
    "label": np.int32,
}
# Jet-level fields some stores carry: generator truth of event recipes (``jettag generate hh4b``).
OPTIONAL_JET_FIELDS: dict[str, type] = {
    "jet_nbhadrons": np.int32,
}
MOMENTUM_FIELDS = ("part_px", "part_py", "part_pz", "part_energy")


class JetDataError(JettagError, ValueError):
    """Bad input data: the message names the file, the field and the jet (row) at fault."""


@dataclass
class DropReport:
    """What ``validate_jets(..., drop_invalid=True)`` removed, by reason."""

    empty: int = 0
    non_finite: int = 0
    kept: int = 0
    sources: list[str] = field(default_factory=list)

    def __iadd__(self, other: DropReport) -> DropReport:
        self.empty += other.empty
        self.non_finite += other.non_finite
        self.kept += other.kept
        return self

    @property
    def dropped(self) -> int:
        return self.empty + self.non_finite


def make_jets(
    px: ak.Array,
    py: ak.Array,
    pz: ak.Array,
    energy: ak.Array,
    label: np.ndarray,
    pid: ak.Array | None = None,
    charge: ak.Array | None = None,
    extra_particle: dict[str, ak.Array] | None = None,
    extra_jet: dict[str, np.ndarray] | None = None,
    jet_p4: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    extra_jagged: dict[str, ak.Array] | None = None,
) -> ak.Array:
    """Assemble canonical jets from jagged constituent arrays (one list per jet).

    Constituents are re-sorted by decreasing pT; the jet 4-vector is the sum of the constituents
    unless ``jet_p4`` = (px, py, pz, E) per jet is given (e.g. a file's stored jet). PDG id and
    charge default to 0 (unknown) when the source does not have them. ``extra_jagged`` holds per-jet
    lists not tied to the particles (the ``truth_*`` fields), stored as given.
    """
    px, py, pz, energy = (ak.values_astype(ak.Array(a), np.float32) for a in (px, py, pz, energy))
    order = ak.argsort(kin.pt(px, py), axis=1, ascending=False, stable=True)
    parts: dict[str, ak.Array] = {
        "part_px": px[order],
        "part_py": py[order],
        "part_pz": pz[order],
        "part_energy": energy[order],
    }
    zeros = ak.zeros_like(px)
    parts["part_pid"] = ak.values_astype((zeros if pid is None else ak.Array(pid))[order], np.int32)
    charge = zeros if charge is None else ak.Array(charge)
    parts["part_charge"] = ak.values_astype(charge[order], np.float32)
    for name, values in (extra_particle or {}).items():
        dtype = {**OPTIONAL_PARTICLE_FIELDS, **DETECTOR_PARTICLE_FIELDS}.get(name, np.float32)
        parts[name] = ak.values_astype(ak.Array(values)[order], dtype)

    if jet_p4 is None:
        # Sum in float64: a float32 sum of the constituents of a ~600 GeV jet rounds each
        # component by ~1e-4 GeV, which E^2 - p^2 amplifies (up to ~0.01 GeV of jet mass on
        # jetfactory jets), so the jet mass would depend on the constituent order.
        jpx, jpy, jpz, je = (
            ak.to_numpy(ak.sum(ak.values_astype(parts[f], np.float64), axis=1)) for f in MOMENTUM_FIELDS
        )
    else:
        jpx, jpy, jpz, je = (np.asarray(a, dtype=np.float64) for a in jet_p4)
    jets = {
        "jet_pt": kin.pt(jpx, jpy),
        "jet_eta": kin.eta(jpx, jpy, jpz),
        "jet_phi": kin.phi(jpx, jpy),
        "jet_energy": je,
        "jet_mass": kin.mass(jpx, jpy, jpz, je),
        "jet_nparticles": ak.to_numpy(ak.num(px, axis=1)),
        "label": np.asarray(label),
    }
    out = {k: ak.Array(np.asarray(v).astype(JET_FIELDS[k])) for k, v in jets.items()}
    for name, values in (extra_jet or {}).items():
        out[name] = ak.Array(np.asarray(values))
    for name, values in (extra_jagged or {}).items():
        out[name] = ak.values_astype(ak.Array(values), TRUTH_FIELDS.get(name, np.float32))
    return ak.zip({**parts, **out}, depth_limit=1)


def group_events(jets: ak.Array, source: str = "<memory>") -> ak.Array:
    """Rows of an event sample as [event][jet] (leading jet first), checked to form whole events.

    Every event must be ``n`` consecutive rows with ``event_jet_index`` 0..n-1 and one
    ``event_index`` and ``label``; anything else (a filtered or shuffled table) is an error naming the
    first bad row, since regrouping it would silently pair jets of different events.
    """
    if "event_jet_index" not in jets.fields or "event_index" not in jets.fields:
        raise JetDataError(
            f"{source}: no 'event_jet_index'/'event_index' fields: not an event sample "
            "(such as jettag generate hh4b makes)"
        )
    rank = ak.to_numpy(jets.event_jet_index)
    n = int(rank.max()) + 1 if len(rank) else 1
    bad = np.flatnonzero(rank != np.arange(len(rank)) % n)
    if len(rank) % n or len(bad):
        row = int(bad[0]) if len(bad) else len(rank) - len(rank) % n
        raise JetDataError(
            f"{source}: {len(rank)} rows do not form whole events of {n} jets "
            f"(event_jet_index 0..{n - 1} in order); first bad row {row}"
        )
    for name in ("event_index", "label"):
        values = ak.to_numpy(jets[name]).reshape(-1, n)
        mixed = np.flatnonzero((values != values[:, :1]).any(axis=1))
        if len(mixed):
            raise JetDataError(f"{source}: field {name!r} differs within the event at rows {mixed[0] * n}..")
    return ak.unflatten(jets, n)


def validate_jets(
    jets: ak.Array, source: str = "<memory>", drop_invalid: bool = False, row_offset: int = 0
) -> tuple[ak.Array, DropReport]:
    """Check constituents for NaN/inf momenta, negative energies and empty jets.

    Negative energies and missing fields are always errors. NaN/inf momenta and empty jets are
    errors unless ``drop_invalid`` is set, in which case those jets are removed and counted in the
    returned report (so that a user sees exactly what was lost).
    """
    report = DropReport(sources=[source])
    missing = [f for f in (*MOMENTUM_FIELDS, "label") if f not in jets.fields]
    if missing:
        raise JetDataError(f"{source}: missing field(s) {missing}; present: {jets.fields}")
    n = len(jets)
    bad_finite = np.zeros(n, dtype=bool)
    for f in MOMENTUM_FIELDS:
        flat = ak.to_numpy(ak.flatten(jets[f]))
        finite = np.isfinite(flat)
        if not finite.all():
            per_jet = ak.to_numpy(ak.any(~np.isfinite(jets[f]), axis=1))
            if not drop_invalid:
                row = int(np.flatnonzero(per_jet)[0]) + row_offset
                raise JetDataError(
                    f"{source}: field {f!r} has NaN/inf values in {int(per_jet.sum())} jet(s), first at row "
                    f"{row}; pass drop_invalid=True (CLI: --drop-invalid) to drop such jets"
                )
            bad_finite |= per_jet
    energies = ak.to_numpy(ak.flatten(jets["part_energy"]))
    if (energies[np.isfinite(energies)] < 0).any():
        per_jet = ak.to_numpy(ak.any(jets["part_energy"] < 0, axis=1))
        row = int(np.flatnonzero(per_jet)[0]) + row_offset
        raise JetDataError(f"{source}: field 'part_energy' is negative in jet at row {row}")
    empty = ak.to_numpy(ak.num(jets["part_px"], axis=1)) == 0
    if empty.any() and not drop_invalid:
        row = int(np.flatnonzero(empty)[0]) + row_offset
        raise JetDataError(
            f"{source}: {int(empty.sum())} jet(s) have no constituents, first at row {row}; "
            "pass drop_invalid=True (CLI: --drop-invalid) to drop them"
        )
    keep = ~(bad_finite | empty)
    report.empty = int(empty.sum())
    report.non_finite = int((bad_finite & ~empty).sum())
    report.kept = int(keep.sum())
    return (jets if keep.all() else jets[keep]), report


def write_store(
    path: str | os.PathLike,
    jets: ak.Array | Iterator[ak.Array],
    classes: Sequence[str],
    source: str,
    metadata: dict | None = None,
    row_group_size: int = 50_000,
) -> Path:
    """Write canonical jets (an array, or an iterator of chunks) to one parquet file, atomically.

    The file appears under its final name only once complete, so an interrupted conversion or
    generation never leaves a truncated file that looks valid.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"classes": list(classes), "source": source, **(metadata or {})}
    chunks = [jets] if isinstance(jets, ak.Array) else jets
    writer = None
    with atomic_path(path) as tmp:
        try:
            for chunk in chunks:
                table = ak.to_arrow_table(chunk, extensionarray=False, list_to32=True)
                if writer is None:
                    schema = table.schema.with_metadata({METADATA_KEY: json.dumps(meta).encode()})
                    writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                writer.write_table(table.cast(writer.schema), row_group_size=row_group_size)
            if writer is None:
                raise JetDataError(f"{path}: nothing to write (no jets)")
        finally:
            if writer is not None:  # closed before the rename (or before removing a partial file)
                writer.close()
    return path


def resolve_paths(
    paths: str | os.PathLike | Sequence[str | os.PathLike], suffixes: Sequence[str] = (".parquet",)
) -> list[Path]:
    """Expand a file, a directory (its files with the given suffixes), a glob, or a list of them."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in suffixes and q.is_file())
            if not found:
                raise FileNotFoundError(f"{p}: directory holds no {'/'.join(suffixes)} files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            matches = sorted(glob.glob(str(item)))
            if not matches:
                raise FileNotFoundError(f"{item}: no such file, directory or glob match")
            out.extend(Path(m) for m in matches)
    return out


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``jettag`` JSON metadata of one store file (classes, source, ...)."""
    schema = pq.read_schema(path)
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise JetDataError(f"{path}: not a jettag store file (no 'jettag' metadata key)")
    return json.loads(raw)


def _check_columns(path: Path, schema: pa.Schema, columns: Sequence[str] | None) -> None:
    if columns is None:
        return
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise JetDataError(f"{path}: missing field(s) {missing}; the file has {schema.names}")


def iter_store(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    columns: Sequence[str] | None = None,
    chunk_size: int = 100_000,
) -> Iterator[ak.Array]:
    """Stream jets from a dataset in chunks of at most ``chunk_size`` jets (for data larger than memory)."""
    for path in resolve_paths(paths):
        pf = pq.ParquetFile(path)
        _check_columns(path, pf.schema_arrow, columns)
        for batch in pf.iter_batches(batch_size=chunk_size, columns=list(columns) if columns else None):
            yield ak.from_arrow(batch)


def read_store(
    paths: str | os.PathLike | Sequence[str | os.PathLike], columns: Sequence[str] | None = None
) -> ak.Array:
    """Read a whole dataset into memory as one awkward array."""
    chunks = []
    for path in resolve_paths(paths):
        pf = pq.ParquetFile(path)
        _check_columns(path, pf.schema_arrow, columns)
        chunks.append(ak.from_arrow(pf.read(columns=list(columns) if columns else None)))
    return chunks[0] if len(chunks) == 1 else ak.concatenate(chunks)
