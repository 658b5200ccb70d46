"""Transfer learning (seed 003): the dense head each model retrains when frozen, frozen weights and
statistics untouched by training, the fine-tuning learning rates, and the ``transfer`` study's plan
and report."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from jettag.data.kinds import get_kind
from jettag.models import create_model
from jettag.studies import get_study
from jettag.studies.transfer import SOURCES, group_name, parse_group, plan, timing_rows, verdict
from jettag.train.optim import build_optimizer, find_head, param_groups
from jettag.train.transfer import in_modules, transfer_head_modules, transfer_overrides

SMALL = {  # small widths keep each model's forward/backward at a few ms; the module names are the same
    "lundnet5": {},
    "particlenet": {},
    "part": {"embed_dims": [16], "pair_embed_dims": [8], "num_layers": 1, "num_cls_layers": 1,
             "num_heads": 2},
    "mipart": {},
    "pfn": {},
}
DENSE = {
    "lundnet5": ("fusion_block", "fc"),
    "particlenet": ("fc",),
    "part": ("head.fc",),
    "mipart": ("head.fc",),
    "pfn": ("f", "fc"),
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=2, **SMALL[name])


@pytest.mark.parametrize("name", sorted(DENSE))
def test_dense_head_per_model(name: str) -> None:
    model = _model(name)
    heads = transfer_head_modules(model)
    assert heads == DENSE[name]
    assert in_modules(find_head(model), heads)  # the fresh output layer is always retrained


def test_unknown_model_retrains_its_classifier() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert transfer_head_modules(model) == ("2",)


@pytest.mark.parametrize("name", ["lundnet5", "particlenet", "part"])
def test_frozen_training_changes_only_the_dense_head(name: str) -> None:
    model = _model(name)
    inputs = get_kind(model.input_kind).example_inputs(model, batch_size=6, length=12, seed=1)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    groups = param_groups(model, lr=1e-2, weight_decay=0.0, freeze_backbone=True)
    opt = build_optimizer("adam", groups)
    model.train()  # as the trainer does every epoch: frozen norm layers must stay in eval mode anyway
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(*inputs), labels).backward()
        opt.step()
    heads = DENSE[name]
    after = model.state_dict()
    frozen = [k for k in after if not in_modules(k, heads)]
    dense = [k for k in after if in_modules(k, heads) and after[k].is_floating_point()]
    assert frozen and dense
    for k in frozen:  # parameters and running statistics: bit-identical by construction (never written)
        assert torch.equal(after[k], before[k]), k
    changed = [k for k in dense if not torch.equal(after[k], before[k])]
    assert set(changed) == set(dense), set(dense) - set(changed)
    # the optimizer holds the dense head alone, at the recipe's lr
    trainable = {id(p) for g in opt.param_groups for p in g["params"]}
    named = {id(p): n for n, p in model.named_parameters()}
    assert {named[i] for i in trainable} == {n for n, _ in model.named_parameters() if in_modules(n, heads)}
    assert {g["lr"] for g in opt.param_groups} == {1e-2}
    assert {g["name"].split("_")[0] for g in opt.param_groups} <= {"dense", "head"}


def test_fine_tuning_groups_read_back_from_the_optimizer() -> None:
    model = _model("lundnet5")
    (lr_override,) = transfer_overrides("finetune", 1e-3, 10.0)
    assert lr_override == "train.lr=0.0001"
    assert transfer_overrides("finetune", 1e-3, 3.0) == ("train.lr=0.000333333",)
    assert transfer_overrides("frozen", 1e-3) == ("train.freeze_backbone=true",)
    assert transfer_overrides("scratch", 1e-3) == ()
    with pytest.raises(ValueError, match="unknown transfer method"):
        transfer_overrides("thaw", 1e-3)
    opt = build_optimizer("adam", param_groups(model, lr=1e-4, weight_decay=0.0))
    held = [p for g in opt.param_groups for p in g["params"]]
    assert len(held) == len(list(model.parameters()))  # fine-tuning: every weight trains
    assert all(p.requires_grad for p in model.parameters())
    assert {g["lr"] for g in opt.param_groups} == {1e-4}


def test_plan_follows_seed003() -> None:
    runs = plan("cpu", [0, 1, 2])
    by_name = {r.name: r for r in runs}
    sizes = sorted({parse_group(r.group)[3] for r in runs if r.report})
    assert len(sizes) >= 3 and sizes[-1] >= 10 * sizes[0]
    sources = [r for r in runs if not r.report]
    assert len(sources) == len(SOURCES) * 3 and {r.data for r in sources} == {"top2tev", "wtag"}
    tests = {o for r in runs if r.report for o in r.overrides if o.startswith("data.test=")}
    assert len(tests) == 1  # one test sample for every size and method
    for r in runs:
        if not r.report:
            continue
        method, model, source, n = parse_group(r.group)
        assert r.recipe == f"top500_{model}" and r.data == "top500"
        assert f"data.max_jets={round(n / 0.8)}" in r.overrides
        if method == "scratch":
            assert r.init_from is None and not any(o.startswith("train.lr") for o in r.overrides)
            continue
        src = by_name[r.init_from]
        assert src.seed == r.seed and src.data == source and src.recipe == r.recipe
        if method == "finetune":
            lr = 1e-3 / (3.0 if source == "wtag" else 10.0)
            assert f"train.lr={lr:.6g}" in r.overrides
        else:
            assert "train.freeze_backbone=true" in r.overrides
    groups = {r.group for r in runs if r.report}
    assert group_name("frozen", "particlenet", "top2tev", 200) in groups
    assert group_name("finetune", "lundnet5", "wtag", 2000) in groups
    assert get_study("transfer").plan is plan


def test_verdict_tables_and_timing() -> None:
    def run(rej30: float, jps: float) -> dict[str, float]:
        return {"rej30": rej30, "rej50": rej30 / 4, "jets_per_s": jps}

    rows = {
        group_name("scratch", "lundnet5", None, 100): [run(10.0, 200.0), run(12.0, 250.0)],
        group_name("scratch", "lundnet5", None, 1000): [run(40.0, 200.0), run(44.0, 200.0)],
        group_name("finetune", "lundnet5", "top2tev", 100): [run(38.0, 400.0), run(40.0, 400.0)],
        group_name("frozen", "lundnet5", "top2tev", 100): [run(30.0, 1000.0), run(32.0, math.nan)],
    }
    timing = timing_rows(rows)
    # 1000 / jets_per_s: 5 and 4 ms (scratch n=100), 5 and 5 (n=1000); the NaN run is left out
    assert timing[("lundnet5", "scratch")] == [5.0, 4.0, 5.0, 5.0]
    assert timing[("lundnet5", "frozen")] == [1.0]
    text = verdict(rows)
    assert "| lundnet5 | frozen | 1.00 | 0.83 h | 8.3 h |" in text  # 1 ms x 30 epochs x 1e5 / 3.6e6 ms/h
    assert "| finetune | lundnet5 | top2tev | 39.0 ± 1.4 | n/a |" in text
    assert "0.93 of from scratch on 1000 jets (42.0)" in text  # 39 / 42
    # 39 - 0.9 x 42 = 1.2 against 2 x sqrt(1^2 + (0.9 x 2)^2) = 4.1: within the errors
    assert "at least 90% of it: **not shown**." in text
    assert "*Frozen models are cheaper still*: LundNet-5 1.00 ms/sample/epoch frozen vs 2.50 fine" in text
    assert text.rstrip().endswith("**not shown** (one seed: no spread).")  # one frozen run timed

    def claims(**groups: list[float]) -> str:
        """The verdict on rows whose groups ('<method>_<model>_<source>_<n>') have these Rej30s."""
        out = {}
        for key, rej in groups.items():
            method, model, source, n = key.split("_")
            out[group_name(method, model, None if source == "none" else source, int(n))] = [
                run(r, 1000.0 if method == "frozen" else 400.0) for r in rej]
        return verdict(out)

    base = dict(scratch_lundnet5_none_100=[10.0, 12.0], scratch_lundnet5_none_1000=[40.0, 44.0],
                scratch_particlenet_none_100=[10.0, 12.0])
    good = claims(**base, finetune_lundnet5_top2tev_100=[45.0, 46.0], finetune_lundnet5_wtag_100=[20.0, 22.0],
                  frozen_lundnet5_top2tev_100=[30.0, 32.0], frozen_particlenet_top2tev_100=[10.0, 11.0])
    assert "at least 90% of it: **holds**." in good  # 45.5 - 37.8 = 7.7 > 2 x 1.9
    assert "(gain +10.0 ± 1.4): **holds**." in good
    assert "LundNet-5 2.82 ± 0.27" in good and "ParticleNet 0.95 ± 0.10" in good  # 31/11, 10.5/11, SE 1 each
    assert good.split("*LundNet-frozen holds up better")[1].split("\n")[0].endswith("**holds**.")
    assert "2.50 fine-tuned (per run, over every size and seed): **holds**" in good
    bad = claims(**base, finetune_lundnet5_top2tev_100=[20.0, 21.0], finetune_lundnet5_wtag_100=[4.0, 5.0],
                 frozen_lundnet5_top2tev_100=[5.0, 5.5], frozen_particlenet_top2tev_100=[20.0, 21.0])
    assert "at least 90% of it: **does not hold**." in bad and "(gain -6.5 ± 1.1): **does not hold**." in bad
    assert bad.split("*LundNet-frozen holds up better")[1].split("\n")[0].endswith("**does not hold**.")
