"""A model of a new input kind goes through the unchanged trainer and commands.

The kind here is a toy: one vector of jet-level quantities per jet (no particles, no padding).
It is defined entirely in this file (batch, dataset, builder, model, registry entries), which is
what the contract in docs/architecture.md promises a newcomer: training, evaluation, prediction,
FLOP counting and ONNX export then work without touching jettag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from jetfactory import random_jets
from torch import nn

from jettag.cli import main
from jettag.data import kinds
from jettag.data.kinds import InputKind, TensorBatch
from jettag.data.store import write_store
from jettag.models import registry
from jettag.models.profile import flops_per_jet

SUMMARY = ("log_pt", "eta", "log_energy", "log_n")


@dataclass
class SummaryBatch(TensorBatch):
    summary: torch.Tensor  # (B, 4)


class SummaryData:
    def __init__(self, summary: torch.Tensor, labels: torch.Tensor) -> None:
        self.summary, self.labels = summary, labels

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        return self.summary.device

    def sizes(self) -> np.ndarray:
        return np.ones(len(self), dtype=np.int64)

    def batch(self, index: np.ndarray) -> SummaryBatch:
        idx = torch.as_tensor(index, dtype=torch.int64, device=self.device)
        return SummaryBatch(label=self.labels[idx], summary=self.summary[idx])

    def to(self, device: torch.device | str) -> SummaryData:
        return SummaryData(self.summary.to(device), self.labels.to(device))


class SummaryKind(InputKind):
    name = "toy_summary"
    input_names = ("summary",)
    dynamic_axes: ClassVar[dict[str, dict[int, str]]] = {"summary": {0: "batch"}}

    def build(self, jets: ak.Array, data_cfg: dict[str, Any], model: nn.Module,
              device: torch.device | str = "cpu", source: str = "<memory>") -> SummaryData:
        n = ak.to_numpy(ak.num(jets["part_px"]))
        cols = [np.log(ak.to_numpy(jets["jet_pt"])), ak.to_numpy(jets["jet_eta"]),
                np.log(ak.to_numpy(jets["jet_energy"])), np.log(n)]
        summary = torch.from_numpy(np.stack(cols, axis=1).astype(np.float32))
        labels = torch.from_numpy(ak.to_numpy(jets["label"]).astype(np.int64))
        return SummaryData(summary, labels).to(device)

    def example_inputs(self, model: nn.Module, batch_size: int = 2, length: int = 24, seed: int = 0,
                       full: bool = False) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(batch_size, len(SUMMARY), generator=g),)


class SummaryMLP(registry.JetModel):
    input_kind = "toy_summary"
    classifier_path = "fc"

    def __init__(self, input_dim: int, num_classes: int, hidden: int = 16) -> None:
        super().__init__(len(SUMMARY), num_classes)
        self.body = nn.Sequential(nn.Linear(len(SUMMARY), hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, num_classes)

    def forward_features(self, summary: torch.Tensor) -> torch.Tensor:
        return self.body(summary)


def toy_summary_mlp(input_dim: int, num_classes: int, **overrides) -> SummaryMLP:
    return SummaryMLP(input_dim, num_classes, **overrides)


@pytest.fixture(scope="module")
def toy_kind():
    kinds.register_kind(SummaryKind())
    registry.register_model(toy_summary_mlp)
    yield
    registry._REGISTRY.pop("toy_summary_mlp")
    kinds._KINDS.pop("toy_summary")


@pytest.fixture(scope="module")
def toy_run(toy_kind, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("toykind")
    data = root / "jets.parquet"
    write_store(data, random_jets(300, seed=5, max_len=30), ["QCD", "Top"], "random")
    recipe = root / "toy.yaml"
    recipe.write_text("model: {name: toy_summary_mlp}\ntrain: {optimizer: adamw, epochs: 2, batch_size: 32,"
                      " lr: 0.01, progress: false}\n")
    run = root / "run"
    assert main(["train", str(recipe), f"data.path={data}", "--run-dir", str(run)]) == 0
    return run, data


def test_trains_and_evaluates_through_the_unchanged_commands(toy_run) -> None:
    from sklearn.metrics import roc_auc_score

    from jettag.data.dataset import load_splits
    from jettag.train.checkpoint import load_run_model

    run, _ = toy_run
    assert (run / "checkpoints" / "best.safetensors").is_file()
    assert sum(",val," in r for r in (run / "log.csv").read_text().splitlines()) == 2  # one per epoch
    assert main(["evaluate", str(run), "--out", str(run / "report")]) == 0
    scored = pq.read_table(run / "report" / "predictions" / "run.parquet").to_pandas()
    # the evaluation scored exactly the run's test split with the trained model
    model, cfg = load_run_model(run)
    test = load_splits(cfg, ("test",))[0]["test"]
    batch = SummaryKind().build(test, cfg["data"], model).batch(np.arange(len(test)))
    expected = torch.softmax(model.eval()(*batch.inputs()), dim=1).detach().numpy()
    np.testing.assert_array_equal(scored["label"].to_numpy(), ak.to_numpy(test["label"]))
    np.testing.assert_allclose(scored[["score_QCD", "score_Top"]].to_numpy(), expected,
                               rtol=1e-5, atol=1e-6)  # float32 MLP, batched differently
    report = json.loads((run / "report" / "results.json").read_text())
    auc = roc_auc_score(ak.to_numpy(test["label"]), expected[:, 1])
    assert report["runs"][0]["metrics"]["auc"] == pytest.approx(auc, abs=1e-6)  # float32 scores


def test_predict_scores_every_jet_with_the_model(toy_run, tmp_path: Path) -> None:
    run, data = toy_run
    out = tmp_path / "scores.parquet"
    assert main(["predict", str(run), str(data), "--out", str(out)]) == 0
    table = pq.read_table(out).to_pandas()
    assert len(table) == 300
    from jettag.train.checkpoint import load_run_model

    model, cfg = load_run_model(run)
    jets = ak.from_parquet(data)
    batch = SummaryKind().build(jets, cfg["data"], model).batch(np.arange(len(jets)))
    expected = torch.softmax(model.eval()(*batch.inputs()), dim=1).detach().numpy()
    np.testing.assert_allclose(table[["score_QCD", "score_Top"]].to_numpy(), expected,
                               rtol=1e-5, atol=1e-6)  # float32 MLP, batched differently


def test_flops_are_counted_through_the_kind(toy_kind) -> None:
    model = SummaryMLP(0, 2, hidden=16)
    assert flops_per_jet(model, batch_size=3) == 2 * (4 * 16 + 16 * 2)  # two Linears, 2 FLOPs per MAC


def test_onnx_export_through_the_unchanged_command(toy_run, tmp_path: Path) -> None:
    from jettag.models.onnx import run_onnx
    from jettag.train.checkpoint import load_run_model

    run, _ = toy_run
    path = tmp_path / "toy.onnx"
    assert main(["export", str(run), "--onnx", str(path)]) == 0
    model, _ = load_run_model(run)
    x = torch.randn(7, 4)
    expected = torch.softmax(model.eval()(x), dim=1).detach().numpy()
    np.testing.assert_allclose(run_onnx(path, x), expected, rtol=1e-5, atol=1e-6)  # ORT vs torch float32
