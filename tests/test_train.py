"""Training machinery: exact resume, checkpoint errors, schedules, optimizers, recipes, fine-tuning."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from jetfactory import random_jets
from safetensors.torch import load_file
from torch import nn

from jettag.data.store import write_store
from jettag.train import checkpoint as ckpt
from jettag.train.config import ConfigError, apply_overrides, load_recipe, resolve
from jettag.train.optim import Lookahead, build_optimizer, param_groups
from jettag.train.schedule import Scheduler, ScheduleSpec, lr_factor
from jettag.train.trainer import balanced_weights, train


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.parquet"
    write_store(path, random_jets(200, seed=5, max_len=16), ["QCD", "top"], "random")
    return path


#: a narrow MIParT (every block type present, 1 layer each) so that CPU tests take seconds
TINY_MIPART = {"embed_dims": [16, 32, 16], "pair_embed_dims": [8, 8, 8], "num_heads": 4, "num_mi_layers": 1,
               "num_layers": 1, "num_cls_layers": 1}


def tiny_cfg(path: Path, model: str = "mipart", *extra: str) -> dict:
    tiny = [f"model.overrides.{k}={v}" for k, v in TINY_MIPART.items()] if model == "mipart" else []
    return resolve("top_mipart", [f"model.name={model}", f"data.path={path}", "data.max_len=16", "epochs=2",
                                  "batch_size=32", "progress=false", "deterministic=true", "log_every=1",
                                  *tiny, *extra])


@pytest.fixture(scope="module")
def uninterrupted(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "full"
    train(tiny_cfg(tiny_store), run)
    return run


def test_resume_after_kill_gives_identical_weights(
    tiny_store: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    """Killed twice (mid-epoch 0 and mid-epoch 1), resumed each time: same final weights, bit for bit."""
    run = tmp_path / "killed"
    cfg = tiny_cfg(tiny_store, "mipart", "max_steps=3")  # 160 training jets: 5 batches of 32 per epoch
    s1 = train(cfg, run)
    assert s1["step"] == 3
    meta = ckpt.read_meta(run / "checkpoints", "last")
    assert (meta["epoch"], meta["batch"]) == (0, 3)
    from jettag.train.config import read_config

    cfg2 = apply_overrides(read_config(run), ["max_steps=7"])
    assert train(cfg2, run, resume=True)["step"] == 7
    meta = ckpt.read_meta(run / "checkpoints", "last")
    assert (meta["epoch"], meta["batch"]) == (1, 2)
    cfg3 = apply_overrides(read_config(run), ["max_steps=null"])
    train(cfg3, run, resume=True)
    full = load_file(str(uninterrupted / "checkpoints" / "last.safetensors"))
    resumed = load_file(str(run / "checkpoints" / "last.safetensors"))
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    log = (run / "log.csv").read_text().splitlines()
    assert log[0].startswith("time,epoch,step") and any(",val," in row for row in log)


def test_interrupted_run_differs_from_full(tiny_store: Path, uninterrupted: Path, tmp_path: Path) -> None:
    train(tiny_cfg(tiny_store, "mipart", "max_steps=3"), tmp_path / "short")
    full = load_file(str(uninterrupted / "checkpoints" / "last.safetensors"))
    short = load_file(str(tmp_path / "short" / "checkpoints" / "last.safetensors"))
    assert any(not torch.equal(full[k], short[k]) for k in full)


def test_corrupt_and_mismatched_checkpoints(uninterrupted: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(uninterrupted, run)
    model, cfg = ckpt.load_run_model(run)
    assert cfg["model"]["name"] == "mipart" and not model.training
    # wrong model name
    from jettag.models import create_model

    pfn = create_model("pfn", num_classes=2, features="kin")
    with pytest.raises(ckpt.CheckpointError, match="for model 'mipart', not 'pfn'"):
        ckpt.load_checkpoint(run / "checkpoints", "best", pfn, model_name="pfn")
    # same name, different shapes (3 classes)
    three = create_model("mipart", num_classes=3, features="kin", **TINY_MIPART)
    with pytest.raises(ckpt.CheckpointError, match="shape mismatch"):
        ckpt.load_checkpoint(run / "checkpoints", "best", three)
    # truncated tensor file
    f = run / "checkpoints" / "best.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(ckpt.CheckpointError, match="corrupt"):
        ckpt.load_run_model(run, "best")
    # garbage JSON
    (run / "checkpoints" / "last.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="corrupt checkpoint metadata"):
        ckpt.load_run_model(run, "last")


def test_token_mismatch_detected(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    ckpt.save_checkpoint(tmp_path, "a", model, {"model": "lin"})
    ckpt.save_checkpoint(tmp_path, "b", model, {"model": "lin"})
    (tmp_path / "b.safetensors").replace(tmp_path / "a.safetensors")  # a half-finished save
    with pytest.raises(ckpt.CheckpointError, match="different save"):
        ckpt.load_checkpoint(tmp_path, "a", nn.Linear(3, 2))


def test_state_roundtrip_exact() -> None:
    state = {"a": torch.arange(5.0), 3: {"b": (1, 2.5, "x"), "c": [torch.ones(2, 2), None]},
             "d": float("inf")}
    tensors: dict[str, torch.Tensor] = {}
    skeleton = ckpt.flatten_state(state, tensors)
    import json

    back = ckpt.unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert set(back) == {"a", 3, "d"} and back[3]["b"] == (1, 2.5, "x") and back["d"] == math.inf
    assert torch.equal(back["a"], state["a"]) and torch.equal(back[3]["c"][0], torch.ones(2, 2))


def test_flat_decay_schedule() -> None:
    f = lr_factor(ScheduleSpec("flat+decay", flat_fraction=0.7, final_factor=0.01), 100)
    assert [f(s) for s in (0, 50, 69)] == [1.0, 1.0, 1.0]
    assert f(99) == pytest.approx(0.01)
    # exponential between: halfway through the 30 decay steps the factor is 0.01**(15/30) = 0.1
    assert f(70 + 14) == pytest.approx(0.1)


def test_cosine_warmup_restarts() -> None:
    spec = ScheduleSpec("cosine", warmup=0.1, min_factor=1e-3, cycles=2, gamma=0.5)
    f = lr_factor(spec, 200)  # two cycles of 100 steps, 10 warm-up steps each
    assert f(0) == pytest.approx(1e-3 + (1 - 1e-3) * 0.1)
    assert f(9) == pytest.approx(1.0)
    # cosine: half way through the decay of cycle 0 (step 10 + 45) -> midpoint
    assert f(55) == pytest.approx(1e-3 + (1 - 1e-3) * 0.5)
    assert f(99) == pytest.approx(1e-3, abs=1e-3)
    assert f(109) == pytest.approx(0.5)  # restart with peak * gamma


def test_scheduler_sets_group_lrs_and_resumes() -> None:
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD([{"params": [model.weight], "lr": 1.0}, {"params": [model.bias], "lr": 10.0}])
    sched = Scheduler(opt, ScheduleSpec("flat+decay"), 10)
    for _ in range(9):
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.1])
    sched2 = Scheduler(opt, ScheduleSpec("flat+decay"), 10)
    sched2.load_state_dict({"step_count": 9})
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.1])


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.body = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)


def test_param_groups_weight_decay_and_head() -> None:
    m = _Tiny()
    groups = {g["name"]: g for g in param_groups(m, lr=1e-3, weight_decay=0.01, lr_head=5e-2)}
    ids = lambda g: {id(p) for p in g["params"]}  # noqa: E731
    assert ids(groups["backbone_decay"]) == {id(m.body.weight)}
    expected = {id(m.cls_token), id(m.body.bias), id(m.norm.weight), id(m.norm.bias)}
    assert ids(groups["backbone_no_decay"]) == expected
    assert ids(groups["head_decay"]) == {id(m.fc.weight)} and groups["head_decay"]["lr"] == 5e-2
    assert groups["head_no_decay"]["weight_decay"] == 0.0 and groups["backbone_decay"]["weight_decay"] == 0.01
    frozen = param_groups(_Tiny(), lr=1e-3, weight_decay=0.01, freeze_backbone=True)
    assert {g["name"] for g in frozen} == {"head_decay", "head_no_decay"}


def test_lookahead_matches_hand_computation() -> None:
    p = nn.Parameter(torch.tensor([1.0]))
    inner = torch.optim.SGD([p], lr=0.1)
    opt = Lookahead(inner, alpha=0.5, k=2)
    # loss = p: gradient 1 each step; fast: 1 -> 0.9 -> 0.8, then slow = 1 + 0.5 * (0.8 - 1) = 0.9
    for _ in range(2):
        opt.zero_grad()
        p.sum().backward()
        opt.step()
    assert p.item() == pytest.approx(0.9)
    state = opt.state_dict()
    opt2 = Lookahead(torch.optim.SGD([p], lr=0.1), alpha=0.5, k=2)
    opt2.load_state_dict(state)
    assert opt2.counter == 0 and opt2.slow[0].item() == pytest.approx(0.9)
    ranger = build_optimizer("ranger", [{"params": [p], "lr": 1e-3, "weight_decay": 0.0}])
    assert isinstance(ranger, Lookahead) and ranger.param_groups is ranger.inner.param_groups


def test_class_weights_inverse_frequency() -> None:
    w = balanced_weights(np.array([3, 1]))  # three jets of class 0, one of class 1
    # N / (K * n_k): 4 / (2*3), 4 / (2*1)
    assert w.tolist() == pytest.approx([2 / 3, 2.0])


def test_recipes_and_overrides() -> None:
    cfg = load_recipe("top_part")
    assert (cfg["model"]["name"], cfg["train"]["batch_size"], cfg["train"]["epochs"]) == ("part", 512, 20)
    mi = load_recipe("top_mipart")
    assert (mi["train"]["lr"], mi["train"]["batch_size"], mi["train"]["epochs"]) == (1e-3, 256, 15)
    assert mi["train"]["optimizer"] == "ranger" and mi["train"]["schedule"]["name"] == "flat+decay"
    out = apply_overrides(cfg, ["lr=5e-4", "train.schedule.name=cosine", "split=[0.5,0.25,0.25]",
                                "model.overrides.drop_path=0.1"])
    assert out["train"]["lr"] == 5e-4 and out["train"]["schedule"]["name"] == "cosine"
    assert out["data"]["split"] == [0.5, 0.25, 0.25] and out["model"]["overrides"]["drop_path"] == 0.1
    with pytest.raises(ConfigError, match="no such key"):
        apply_overrides(cfg, ["lrr=1"])
    with pytest.raises(ConfigError, match="not found"):
        load_recipe("no_such_recipe")


def test_fine_tuning_new_head_keeps_backbone(uninterrupted: Path, tiny_store: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tiny_store, "mipart", f"init_from={uninterrupted}", "lr_head=8e-3", "lr=1.6e-4",
                   "max_steps=1", "freeze_backbone=true")
    train(cfg, tmp_path / "ft")
    src = load_file(str(uninterrupted / "checkpoints" / "best.safetensors"))
    ft = load_file(str(tmp_path / "ft" / "checkpoints" / "last.safetensors"))
    from jettag.models import create_model
    from jettag.train.optim import find_head

    head = find_head(create_model("mipart", num_classes=2, features="kin", **TINY_MIPART))
    head_keys = [k for k in ft if k.startswith(head + ".")]
    assert head_keys
    # frozen backbone: every non-head parameter equals the source run's; the head was re-initialised
    for k in ft:
        if k in head_keys or "running" in k or "num_batches" in k:
            continue
        assert torch.equal(src[k], ft[k]), k
    assert any(not torch.equal(src[k], ft[k]) for k in head_keys)


def test_split_is_random_subset_of_class_ordered_file() -> None:
    """Generated samples are written class by class: ``max_jets`` must not take one class only."""
    from jettag.data.dataset import split_indices

    n = 1000
    labels = (torch.arange(n) >= n // 2).numpy()  # first half class 0, second half class 1
    tr, va, te = split_indices(n, [0.5, 0.1, 0.4], seed=0, limit=200)
    assert (len(tr), len(va), len(te)) == (100, 20, 80)
    every = set(tr) | set(va) | set(te)
    assert len(every) == 200 and not (set(tr) & set(te))
    for part in (tr, te):
        assert 0.3 < labels[part].mean() < 0.7
    # the same seed gives the same split (every run of a recipe shares one test set)
    assert all((a == b).all() for a, b in zip(split_indices(n, [0.5, 0.1, 0.4], 0, 200), (tr, va, te)))
