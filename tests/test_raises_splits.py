"""Dataset splits, run directories and dataset-level reads: refusals name the file, split or option."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import uproot
from jetfactory import random_jets

from jettag.data import formats
from jettag.data.dataset import check_class_counts, check_streaming, load_splits
from jettag.data.formats.energyflow import _EnergyFlowReader
from jettag.data.store import JetDataError, write_store
from jettag.train import config as C
from jettag.train.config import ConfigError
from jettag.train.optim import param_groups
from jettag.train.rundir import prepare_run_dir
from jettag.train.trainer import train


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("splits")
    jets = random_jets(10, seed=5, max_len=4)
    return {"qt": write_store(d / "qt.parquet", jets, ["QCD", "top"], "x", row_group_size=5),
            "qw": write_store(d / "qw.parquet", jets, ["QCD", "W"], "x", row_group_size=5)}


def _cfg(path: Path, **data: object) -> dict:
    cfg = copy.deepcopy(C.DEFAULTS)
    cfg["data"].update({"path": str(path), **data})
    return cfg


@pytest.mark.parametrize("streaming", [False, True])
def test_separate_split_with_other_classes(stores: dict[str, Path], streaming: bool) -> None:
    cfg = _cfg(stores["qt"], val=str(stores["qw"]), streaming=streaming)
    with pytest.raises(JetDataError, match=r"qw\.parquet: classes \['QCD', 'W'\] differ from .*qt\.parquet: "
                                           r"\['QCD', 'top'\]"):
        load_splits(cfg, ("val",))


@pytest.mark.parametrize("streaming", [False, True])
def test_empty_split_named(stores: dict[str, Path], streaming: bool) -> None:
    cfg = _cfg(stores["qt"], split=[1.0, 0.0, 0.0], streaming=streaming)
    with pytest.raises(JetDataError, match=r"qt\.parquet: the test split is empty .*split \[1\.0, 0\.0"):
        load_splits(cfg, ("test",))


def test_streaming_refuses_in_memory_options() -> None:
    with pytest.raises(ValueError, match=r"^data\.drop_invalid cannot be used with data\.streaming"):
        check_streaming({"drop_invalid": True})


def test_one_class_dataset_named() -> None:
    with pytest.raises(JetDataError, match=r"^d\.parquet: the dataset declares one class \['QCD'\];"):
        check_class_counts({"train": np.array([3])}, ["QCD"], "d.parquet")


def test_run_directory_and_mode_refusals(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"^run directory .*file exists and is not a directory$"):
        prepare_run_dir(tmp_path / "file", overwrite=False)
    with pytest.raises(ConfigError, match=r"^resume and overwrite exclude each other$"):
        train({}, tmp_path / "run", resume=True, overwrite=True)


def test_frozen_model_without_head_named() -> None:
    model = torch.nn.Linear(2, 2)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match=r"^no trainable parameters \(freeze_backbone with no head\?\)$"):
        param_groups(model, 1e-3, 0.0)


def test_dataset_level_reads(stores: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(formats.UnknownFormatError, match=rf"^{tmp_path}: not a regular file$"):
        formats.detect_format(tmp_path)
    with pytest.raises(ValueError, match=r"^chunk_size must be positive, got 0$"):
        list(formats.iter_jets(stores["qt"], chunk_size=0))
    with pytest.raises(JetDataError, match=r"qt\.parquet: no jets read$"):  # the path, not a list repr
        formats.read_jets([stores["qt"]], max_jets=0)
    with pytest.raises(ValueError, match=r"^qg_convention must be one of \('part', 'pdg'\), got 'mass'$"):
        _EnergyFlowReader("energyflow_npz", {}, convention="mass")


def test_root_reader_names_file_and_tree(tmp_path: Path) -> None:
    reader = formats._reader("jetclass_root")
    with uproot.recreate(tmp_path / "r.root") as f:
        f["events"] = {"x": np.zeros(3)}
    with pytest.raises(JetDataError, match=r"r\.root: tree 'tree' missing; the file has \['events'\]$"):
        reader.num_jets(tmp_path / "r.root")
    (tmp_path / "bad.root").write_bytes(b"this is no ROOT file")
    with pytest.raises(JetDataError, match=r"bad\.root: cannot open as ROOT file: "):
        reader.num_jets(tmp_path / "bad.root")
