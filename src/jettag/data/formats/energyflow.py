"""EnergyFlow quark/gluon npz (X = pt, y, phi, pdgid; y = 1 quark), streamed from the zip.

Two conventions turn a file row (pT, rapidity y, phi, PDG id) into a 4-vector (``QG_CONVENTIONS``):

``"part"`` (default)
    What ParT's own converter (``utils/convert_qg_datasets.py`` of particle_transformer) did to
    produce the parquet files behind the published quark/gluon numbers: the rapidity column is
    used as pseudorapidity and every constituent is massless, so ``E = |p|``, ``eta = y``.
    Choose it to compare with published ParT/MIParT/ParticleNet results.
``"pdg"``
    The physically exact reading: the column is rapidity and the mass is the PDG mass of the
    particle id (``PDG_TABLE``), so ``E = mT cosh y`` reproduces the file's rapidity and
    ``E^2 - p^2`` is the PDG mass squared. Soft hadrons then differ from the ``part`` reading
    (for a 1 GeV pion at y = 1, eta - y is about 0.007).

Charges (and the PDG id kept on each constituent) come from the PDG id in both conventions.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import awkward as ak
import numpy as np

from jettag.data import store
from jettag.data.formats.common import (
    _PDG_CHARGE,
    _PDG_MASS,
    ENERGYFLOW_CLASSES,
    PDG_TABLE,
    _binary_label,
    _first_row,
    _padded_to_jagged,
    _pid_lookup,
    _Reader,
)
from jettag.data.store import JetDataError
from jettag.physics import kinematics as kin

QG_CONVENTIONS = ("part", "pdg")


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
        if dtype.kind not in "fiub":  # text or complex values would be parsed or cut silently
            raise JetDataError(f"{path}: array {name!r} has dtype {dtype}, expected real numbers")
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


@dataclass(frozen=True)
class _EnergyFlowReader(_Reader):
    """EnergyFlow npz reader; ``convention`` is one of :data:`QG_CONVENTIONS` (module docstring)."""

    convention: str = "part"

    def __post_init__(self) -> None:
        if self.convention not in QG_CONVENTIONS:
            raise ValueError(f"qg_convention must be one of {QG_CONVENTIONS}, got {self.convention!r}")

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
                    x = xs.read(rows).astype(np.float64)
                    yield start, self._convert(x, ys.read(rows), source, start, self.convention)
            finally:
                xs.close()
                ys.close()

    @staticmethod
    def _convert(x: np.ndarray, y: np.ndarray, source: str, start: int, convention: str) -> ak.Array:
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
        if convention == "part":  # rapidity column taken as eta, massless (ParT's converter)
            p4 = kin.from_pt_eta_phi_m(pt, rap, phi, np.zeros_like(pt))
        else:  # rapidity with the PDG mass of the id
            p4 = kin.from_pt_y_phi_m(pt, rap, phi, _PDG_MASS[idx])
        # a NaN/inf id makes the 4-vector NaN, so validation reports (or drops) that jet
        px, py, pz, energy = (np.where(np.isfinite(pid_f), v, np.nan) for v in p4)
        charge = np.where(known, _PDG_CHARGE[idx] * np.sign(pid), 0.0)
        jag, _ = _padded_to_jagged(
            {"px": px, "py": py, "pz": pz, "e": energy, "pid": pid.astype(np.int32), "charge": charge}, real
        )
        return store.make_jets(
            jag["px"], jag["py"], jag["pz"], jag["e"], label=label, pid=jag["pid"], charge=jag["charge"]
        )
