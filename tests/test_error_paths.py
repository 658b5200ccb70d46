"""Bad rows in a later chunk: every reader error names the absolute row in the file, not the row
within the chunk it was found in. Files are written with uproot from known jets, then one row is
spoiled; ``chunk_size=3`` puts that row in the third or fourth chunk."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from jetfactory import random_jets

from jettag.data import formats
from jettag.data.formats.common import JETCLASS_LABELS, PID_FLAGS
from jettag.data.store import JetDataError

N_JETS = 14
CHUNK = 3


def _flags(pid: np.ndarray) -> np.ndarray:
    """JetClass particle-id flags (PID_FLAGS order) of PDG ids, from the JetClass definitions."""
    a = np.abs(pid)
    return np.stack(
        [np.isin(a, [211, 321, 2212]), np.isin(a, [130, 2112]), a == 22, a == 11, a == 13], axis=1
    ).astype(np.float32)


def _jetclass_branches(seed: int) -> dict[str, np.ndarray | ak.Array]:
    """The branches of a JetClass ROOT tree holding ``N_JETS`` valid jets."""
    jets = random_jets(N_JETS, seed=seed, min_len=2, max_len=8, n_classes=10)
    counts = ak.to_numpy(ak.num(jets["part_px"], axis=1))
    flat = {f: ak.to_numpy(ak.flatten(jets[f])) for f in jets.fields if jets[f].ndim == 2}
    data: dict[str, np.ndarray | ak.Array] = {
        f: ak.unflatten(flat[f].astype(np.float32), counts)
        for f in ("part_px", "part_py", "part_pz", "part_energy", "part_charge")
    }
    flags = _flags(flat["part_pid"])
    for k, f in enumerate(PID_FLAGS):
        data[f] = ak.unflatten(flags[:, k], counts)
    label = ak.to_numpy(jets["label"])
    for k, f in enumerate(JETCLASS_LABELS):
        data[f] = (label == k).astype(np.float32)
    return data


def _write(path: Path, data: dict[str, np.ndarray | ak.Array]) -> Path:
    with uproot.recreate(path) as f:
        types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in data.items()}
        f.mktree("tree", types)
        f["tree"].extend(data)
    return path


def _read_all(path: Path) -> None:
    list(formats.iter_jets(path, chunk_size=CHUNK))


def _set_jagged(data: dict, field: str, row: int, index: int, value: float) -> None:
    counts = ak.num(data[field], axis=1)
    flat = ak.to_numpy(ak.flatten(data[field])).copy()
    flat[int(ak.sum(counts[:row])) + index] = value
    data[field] = ak.unflatten(flat, counts)


@pytest.mark.parametrize(("row", "values"), [(7, (1.0, 1.0)), (10, (0.0, 0.0)), (12, (0.5, 0.5))])
def test_jetclass_one_hot_error_names_absolute_row(
    tmp_path: Path, row: int, values: tuple[float, float]
) -> None:
    """Two classes set, none set, or fractional values: the error names row ``row`` of the file."""
    data = _jetclass_branches(seed=41)
    for name in JETCLASS_LABELS:
        data[name] = data[name].copy()
        data[name][row] = 0.0
    data["label_QCD"][row], data["label_Hbb"][row] = values
    path = _write(tmp_path / "labels.root", data)
    with pytest.raises(JetDataError, match=rf"labels\.root: one-hot label fields .* at row {row} \(values"):
        _read_all(path)
    # the same file read in one chunk gives the same row (the offset is the only difference)
    with pytest.raises(JetDataError, match=rf"at row {row} \("):
        list(formats.iter_jets(path, chunk_size=N_JETS))


def test_jetclass_conflicting_flags_name_absolute_row(tmp_path: Path) -> None:
    data = _jetclass_branches(seed=42)
    _set_jagged(data, "part_isPhoton", 8, 1, 1.0)
    _set_jagged(data, "part_isChargedHadron", 8, 1, 1.0)  # particle 1 of jet 8 is now both
    with pytest.raises(JetDataError, match=r"flags\.root: particle 1 of the jet at row 8 has more than one"):
        _read_all(_write(tmp_path / "flags.root", data))


def test_jetclass_non_finite_momentum_names_absolute_row(tmp_path: Path) -> None:
    data = _jetclass_branches(seed=43)
    _set_jagged(data, "part_py", 11, 0, np.nan)
    with pytest.raises(JetDataError, match=r"nan\.root: field 'part_py' has NaN/inf .* first at row 11;"):
        _read_all(_write(tmp_path / "nan.root", data))


def test_jetclass_empty_jet_names_absolute_row(tmp_path: Path) -> None:
    data = _jetclass_branches(seed=44)
    keep = np.ones(N_JETS, dtype=bool)
    keep[9] = False
    for k, v in list(data.items()):
        if isinstance(v, ak.Array):  # jet 9 loses every constituent
            data[k] = ak.where(keep, v, v[:, :0])
    with pytest.raises(JetDataError, match=r"empty\.root: 1 jet\(s\) have no constituents, first at row 9;"):
        _read_all(_write(tmp_path / "empty.root", data))
