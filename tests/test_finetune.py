"""Pre-training then fine-tuning (seed 000; issue 15's acceptance test), through ``jettag.train.train``.

A narrow MIParT is pre-trained on a 3-class toy store, then fine-tuned on a 2-class store with the
seed's two learning rates (1.6e-4 for the pre-trained weights, 8e-3 for the new head). The model
and optimizer are captured the moment the trainer builds its ``Run`` (after ``init_from`` loaded
the weights, before the first step). Also: a frozen backbone stays bit-identical through training,
and a source run that cannot start the target (other features, no replaceable head) is refused
before any data is read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from jetfactory import random_jets
from safetensors.torch import load_file

from jettag.data.store import write_store
from jettag.models.pfn import PFN
from jettag.train import trainer as T
from jettag.train.checkpoint import CheckpointError, build_model_from_config
from jettag.train.config import resolve
from jettag.train.transfer import in_modules, replaceable_head, transfer_head_modules

TINY = {"embed_dims": [16, 32, 16], "pair_embed_dims": [8, 8, 8], "num_heads": 4, "num_mi_layers": 1,
        "num_layers": 1, "num_cls_layers": 1}
LR, LR_HEAD = 1.6e-4, 8e-3  # seed 000's fine-tuning learning rates


def _cfg(path: Path, *extra: str, model: str = "mipart") -> dict[str, Any]:
    tiny = [f"model.overrides.{k}={v}" for k, v in TINY.items()] if model == "mipart" else []
    return resolve("top_mipart", [f"model.name={model}", f"data.path={path}", "data.max_len=16", "epochs=1",
                                  "batch_size=32", "progress=false", "deterministic=true", "log_every=1",
                                  *tiny, *extra])


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ft-data")
    three, two = d / "three.parquet", d / "two.parquet"
    write_store(three, random_jets(160, seed=11, max_len=16, n_classes=3), ["QCD", "A", "B"], "random")
    write_store(two, random_jets(160, seed=12, max_len=16, n_classes=2), ["QCD", "top"], "random")
    return {"three": three, "two": two}


@pytest.fixture(scope="module")
def pretrained(stores: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("ft-runs") / "pre"
    T.train(_cfg(stores["three"]), run)
    return run


class Captured:
    """The model's state and the optimizer's groups when ``Run`` is built: after ``init_from``, before
    any optimizer step."""

    state: dict[str, torch.Tensor]
    groups: list[dict[str, Any]]
    names: dict[int, str]


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> Captured:
    got = Captured()
    init = T.Run.__init__

    def spy(self: T.Run, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        got.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        got.groups = self.optimizer.param_groups
        got.names = {id(p): n for n, p in self.model.named_parameters()}

    monkeypatch.setattr(T.Run, "__init__", spy)
    return got


def test_fine_tuning_keeps_backbone_fresh_head_two_learning_rates(
        stores: dict[str, Path], pretrained: Path, tmp_path: Path, capture: Captured) -> None:
    cfg = _cfg(stores["two"], f"init_from={pretrained}", f"lr={LR}", f"lr_head={LR_HEAD}", "seed=3")
    T.train(cfg, tmp_path / "ft")
    src = load_file(str(pretrained / "checkpoints" / "best.safetensors"))
    start = capture.state
    head = replaceable_head(build_model_from_config(cfg, num_classes=2), "test")
    assert head == "head.fc"
    head_keys = {k for k in start if in_modules(k, (head,))}
    assert head_keys == {"head.fc.weight", "head.fc.bias"}
    assert start["head.fc.weight"].shape[0] == 2 and src["head.fc.weight"].shape[0] == 3  # 3 -> 2 classes
    # the backbone starts as the pre-trained run's best weights, every tensor bit for bit (copied)
    backbone = [k for k in start if k not in head_keys]
    assert backbone and set(backbone) <= set(src)
    for k in backbone:
        assert torch.equal(start[k], src[k]), k
    # the head is fresh: exactly a newly initialised model's head under the run's seed (nothing copied)
    torch.manual_seed(3)
    fresh = build_model_from_config(cfg, num_classes=2).state_dict()
    for k in head_keys:
        assert torch.equal(start[k], fresh[k]), k
    assert not torch.equal(start["head.fc.weight"], src["head.fc.weight"][:2])
    # two parameter groups with their own learning rates, read back from the optimizer
    by_part: dict[str, set[float]] = {}
    params: dict[str, set[str]] = {}
    for g in capture.groups:
        part = g["name"].split("_")[0]
        by_part.setdefault(part, set()).add(g["initial_lr"])
        params.setdefault(part, set()).update(capture.names[id(p)] for p in g["params"])
    assert by_part == {"backbone": {LR}, "head": {LR_HEAD}}
    assert params["head"] == head_keys
    assert params["backbone"] == {n for n in capture.names.values() if n not in head_keys}
    # the schedule scales both alike: after training the ratio is still the seed's 8e-3 / 1.6e-4 = 50
    lrs = {g["name"].split("_")[0]: g["lr"] for g in capture.groups}
    assert lrs["head"] / lrs["backbone"] == pytest.approx(LR_HEAD / LR, rel=1e-9)  # float product rounding


def test_frozen_backbone_bit_identical_through_training(stores: dict[str, Path], pretrained: Path,
                                                        tmp_path: Path) -> None:
    cfg = _cfg(stores["two"], f"init_from={pretrained}", f"lr={LR}", f"lr_head={LR_HEAD}",
               "freeze_backbone=true")
    T.train(cfg, tmp_path / "frozen")
    src = load_file(str(pretrained / "checkpoints" / "best.safetensors"))
    end = load_file(str(tmp_path / "frozen" / "checkpoints" / "last.safetensors"))
    dense = transfer_head_modules(build_model_from_config(cfg, num_classes=2))
    frozen = [k for k in end if not in_modules(k, dense)]
    assert frozen and len(frozen) > 10 * len(dense)
    for k in frozen:  # never written by the optimizer: bit-identical by construction
        assert torch.equal(end[k], src[k]), k
    torch.manual_seed(0)
    fresh = build_model_from_config(cfg, num_classes=2).state_dict()
    assert not torch.equal(end["head.fc.weight"], fresh["head.fc.weight"])  # the head did train


def _no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the data was read before the source run was checked")

    monkeypatch.setattr(T, "load_data", refuse)


def test_source_with_other_features_refused_before_data(
        stores: dict[str, Path], pretrained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_data(monkeypatch)
    cfg = _cfg(stores["two"], f"init_from={pretrained}", "data.feature_set=kinpid")
    pattern = (rf"^{re.escape(str(pretrained / 'config.yaml'))}: data.feature_set is 'kin', this run's is "
               r"'kinpid': the pre-trained input layer reads other features")
    with pytest.raises(CheckpointError, match=pattern):
        T.train(cfg, tmp_path / "ft")
    assert not (tmp_path / "ft").exists()


def test_model_without_replaceable_head_refused_before_data(stores: dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "pfn-pre"
    T.train(_cfg(stores["three"], "max_steps=1", model="pfn"), src)
    monkeypatch.setattr(PFN, "classifier_path", "phi")  # a classifier that is no Linear
    _no_data(monkeypatch)
    cfg = _cfg(stores["two"], f"init_from={src}", model="pfn")
    pattern = (rf"^{re.escape(str(src))}: init_from: model PFN has no replaceable head to fine-tune: its "
               r"classifier 'phi' is a \w+, not an nn.Linear$")
    with pytest.raises(CheckpointError, match=pattern):
        T.train(cfg, tmp_path / "ft")
    assert not (tmp_path / "ft").exists()
    with pytest.raises(CheckpointError, match=r"^m: model Sequential has no replaceable head"):
        replaceable_head(torch.nn.Sequential(torch.nn.ReLU()), "m")
