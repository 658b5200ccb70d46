"""Loader layer: refusals of ``jettag.data.loader`` name the file, the field and the absolute row.

The stores are written in row groups of ``GROUP`` jets; each bad row sits in a later row group, so a
row counted within its row group instead of within the file would fail the match.
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from jetfactory import random_jets

from jettag.data.kinds.particles import JetTensors
from jettag.data.loader import BatchLoader, StreamingLoader, dataset_units, read_unit
from jettag.data.store import JetDataError, write_store

GROUP = 4  # jets per row group
N_JETS = 12


def build_kin(jets: ak.Array, source: str = "<memory>") -> JetTensors:
    return JetTensors.from_jets(jets, "kin", source=source)


def _store(path: Path, label_at: tuple[int, int] | None = None, nan_at: int | None = None) -> Path:
    jets = random_jets(N_JETS, seed=11, min_len=2, max_len=5)
    if label_at is not None:
        label = ak.to_numpy(jets["label"]).astype(np.int32)
        label[label_at[0]] = label_at[1]
        jets = ak.with_field(jets, label, "label")
    if nan_at is not None:
        py = ak.to_list(jets["part_py"])
        py[nan_at][0] = float("nan")
        jets = ak.with_field(jets, ak.values_astype(ak.Array(py), np.float32), "part_py")
    return write_store(path, jets, ["QCD", "top"], "test", row_group_size=GROUP)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _store(tmp_path_factory.mktemp("loader") / "good.parquet")


@pytest.mark.parametrize("row", [5, 10])
def test_label_counts_names_the_absolute_row(tmp_path: Path, row: int) -> None:
    path = _store(tmp_path / "labels.parquet", label_at=(row, 7))
    loader = StreamingLoader(path, build_kin, batch_size=2)
    pattern = rf"labels\.parquet: field 'label' is 7 at row {row}, outside the 2 classes$"
    with pytest.raises(JetDataError, match=pattern):
        loader.label_counts(2)


def test_read_unit_validation_names_the_absolute_row(tmp_path: Path) -> None:
    path = _store(tmp_path / "nan.parquet", nan_at=9)
    unit = dataset_units(path)[2]  # rows 8..11
    assert unit.first_row == 8
    with pytest.raises(JetDataError, match=r"nan\.parquet: field 'part_py' .*row 9"):
        read_unit(unit)


def test_read_unit_names_missing_columns(good: Path) -> None:
    with pytest.raises(JetDataError, match=r"good\.parquet: missing field\(s\) \['part_nope'\]; the file"):
        read_unit(dataset_units(good)[1], ["part_px", "part_nope"])


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"batch_size": 0}, r"^batch_size must be >= 1, got 0$"),
    ({"rank": 2, "world_size": 2}, r"^rank 2 is not in \[0, world_size=2\)$"),
    ({"world_size": 13}, r"good\.parquet: 12 jets cannot be shared among 13 ranks$"),
    ({"world_size": 5, "batch_size": 1},
     r"^12 jets over 5 ranks cannot give every rank 3 non-empty batches of 1; use drop_last=True$"),
])
def test_streaming_loader_arguments(good: Path, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        StreamingLoader(good, build_kin, **{"batch_size": 4, **kwargs})


def test_streaming_parts_need_dataset_order(good: Path) -> None:
    with pytest.raises(ValueError, match=r"^parts\(\) walks the data in order: build the loader with shuf"):
        next(StreamingLoader(good, build_kin, batch_size=4, shuffle=True).parts())


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"batch_size": 0}, r"^batch_size must be >= 1, got 0$"),
    ({"rank": -1, "world_size": 2}, r"^rank -1 is not in \[0, world_size=2\)$"),
    ({"world_size": 13}, r"^12 jets cannot be shared among 13 ranks$"),
    ({"world_size": 5, "batch_size": 1},
     r"^12 jets over 5 ranks cannot give every rank 3 non-empty batches of size 1; use drop_last=True$"),
])
def test_batch_loader_arguments(kwargs: dict, pattern: str) -> None:
    data = build_kin(random_jets(N_JETS, seed=12, max_len=4))
    with pytest.raises(ValueError, match=pattern):
        BatchLoader(data, **{"batch_size": 4, **kwargs})
