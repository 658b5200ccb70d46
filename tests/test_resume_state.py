"""Resume restores the early-stopping state (best validation value, epochs without improvement), not
only the weights: a run killed mid-epoch and resumed stops, and keeps its ``best`` checkpoint, exactly
where the uninterrupted run does."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jetfactory import random_jets

from jettag.data.store import write_store
from jettag.train import checkpoint as ckpt
from jettag.train import trainer
from jettag.train.config import apply_overrides, read_config, resolve
from jettag.train.schedule import ScheduleSpec, lr_factor

#: validation losses of successive epochs: best at epoch 1, then three epochs without improvement
#: (0.95 > 0.9), then one (0.97) that a run which forgot ``best`` would take for an improvement.
VAL_LOSSES = [1.0, 0.9, 0.95, 0.97, 0.99, 0.98, 0.96, 0.94]
PATIENCE = 3
STEPS_PER_EPOCH = 5  # 160 training jets (80% of 200) in batches of 32


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.parquet"
    write_store(path, random_jets(200, seed=5, max_len=12), ["QCD", "top"], "random")
    return path


@pytest.fixture
def scripted_validation(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replace the validation pass by ``VAL_LOSSES`` in call order (across kill and resume); returns
    the list of calls so far, so a test can check how many validations ran."""
    calls: list[int] = []
    losses: Iterator[float] = iter(VAL_LOSSES)

    def fake(*_args: Any, **_kwargs: Any) -> dict[str, float]:
        calls.append(len(calls))
        return {"loss": next(losses), "acc": 0.5, "auc": 0.5, "rej50": 2.0, "rej30": 3.0}  # every metric

    monkeypatch.setattr(trainer, "evaluate_tensors", fake)
    return calls


def _cfg(store: Path, *extra: str) -> dict:
    return resolve("top_pfn", [f"data.path={store}", "data.max_len=12", f"epochs={len(VAL_LOSSES)}",
                               "batch_size=32", "progress=false", "deterministic=true",
                               f"early_stopping={PATIENCE}", "best_metric=loss", "log_every=1",
                               "train.schedule.name=flat+decay", "train.schedule.flat_fraction=0.1", *extra])


def _expected_stop() -> tuple[float, int, int]:
    """(best, epochs run, best epoch) of patience-based early stopping on VAL_LOSSES, by hand."""
    best, bad, best_epoch = None, 0, 0
    for epoch, loss in enumerate(VAL_LOSSES, start=1):
        if best is None or loss < best:
            best, bad, best_epoch = loss, 0, epoch
        else:
            bad += 1
        if bad >= PATIENCE:
            return best, epoch, best_epoch
    raise AssertionError("VAL_LOSSES never triggers early stopping")


def test_uninterrupted_run_stops_on_patience(
    store: Path, tmp_path: Path, scripted_validation: list[int]
) -> None:
    best, epochs, best_epoch = _expected_stop()
    assert (best, epochs, best_epoch) == (0.9, 5, 2)
    summary = trainer.train(_cfg(store), tmp_path / "full")
    assert (summary["best"], summary["epoch"], len(scripted_validation)) == (best, epochs, epochs)
    assert ckpt.read_meta(tmp_path / "full" / "checkpoints", "best")["epoch"] == best_epoch


@pytest.mark.parametrize("killed_after", [3, 4])  # validations done before the kill (bad_epochs 1, 2)
def test_resume_restores_best_and_patience(
    store: Path, tmp_path: Path, scripted_validation: list[int], killed_after: int
) -> None:
    best, epochs, best_epoch = _expected_stop()
    run = tmp_path / "killed"
    # killed two batches into epoch `killed_after` (after `killed_after` validations)
    trainer.train(_cfg(store, f"max_steps={killed_after * STEPS_PER_EPOCH + 2}"), run)
    assert len(scripted_validation) == killed_after
    meta = ckpt.read_meta(run / "checkpoints", "last")
    assert (meta["epoch"], meta["batch"]) == (killed_after, 2)
    # the state at the kill, as the uninterrupted run had it after the same validations
    assert (meta["best"], meta["bad_epochs"]) == (0.9, killed_after - best_epoch)

    summary = trainer.train(apply_overrides(read_config(run), ["max_steps=null"]), run, resume=True)
    # a resume that forgot `best` would save epoch 4 (0.97) as best and run on; one that forgot the
    # patience counter would stop later than epoch 5
    assert (summary["best"], summary["epoch"], len(scripted_validation)) == (best, epochs, epochs)
    assert ckpt.read_meta(run / "checkpoints", "best")["epoch"] == best_epoch
    last = ckpt.read_meta(run / "checkpoints", "last")
    assert (last["epoch"], last["best"], last["bad_epochs"]) == (epochs, best, PATIENCE)
    # the schedule continues where it stopped: every logged lr, before and after the kill, is
    # lr * factor(step) for the whole run's 40 steps (decay from step 4 on). Exact: the trainer does the
    # same multiplication, and the CSV holds repr() of the float.
    cfg = read_config(run)
    factor = lr_factor(ScheduleSpec(**cfg["train"]["schedule"]), len(VAL_LOSSES) * STEPS_PER_EPOCH)
    with open(run / "log.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    assert [int(r["step"]) for r in rows] == list(range(1, epochs * STEPS_PER_EPOCH + 1))
    for r in rows:
        assert float(r["lr"]) == cfg["train"]["lr"] * factor(int(r["step"])), r


# ---------------------------------------------------------------- checkpoint parts, exact round trips
def test_nested_state_round_trips_through_json_exactly() -> None:
    """``flatten_state`` then JSON then ``unflatten_state`` gives back every type and value: tuples
    stay tuples, integer keys stay integers, arrays keep their dtype, tensors their values."""
    import json
    import random

    import numpy as np
    import torch

    t = torch.arange(6.0).reshape(2, 3).t()  # non-contiguous
    state = {"opt": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": t}, 7: {}},
                     "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 7]}]},
             "arr": np.array([[1, 2]], dtype=np.int32), "np_scalar": np.float32(0.25), "n": np.int64(4),
             "flags": [True, None, "x", 2.5], "pos": (1, (2, 3))}
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.loads(json.dumps(ckpt.flatten_state(state, tensors)))
    assert sorted(tensors) == ["s.opt.state.0.exp_avg", "s.opt.state.0.step"]
    assert tensors["s.opt.state.0.exp_avg"].is_contiguous()
    back = ckpt.unflatten_state(skeleton, tensors)
    assert set(back["opt"]["state"]) == {0, 7} and back["opt"]["state"][7] == {}
    torch.testing.assert_close(back["opt"]["state"][0]["exp_avg"], t, rtol=0, atol=0)
    assert back["opt"]["param_groups"] == [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 7]}]
    assert type(back["opt"]["param_groups"][0]["betas"]) is tuple
    assert back["arr"].dtype == np.int32 and back["arr"].tolist() == [[1, 2]]
    assert back["np_scalar"] == 0.25 and back["n"] == 4 and type(back["n"]) is int
    assert back["flags"] == [True, None, "x", 2.5] and back["pos"] == (1, (2, 3))
    assert type(back["pos"][1]) is tuple
    # the RNG states go through the same path and restore the same draws
    rng_json = json.loads(json.dumps(ckpt.flatten_state(ckpt.rng_state(), tensors)))
    saved = ckpt.unflatten_state(rng_json, tensors)
    want = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    random.random(), np.random.rand(), torch.rand(1)  # noqa: NPY002  (move every generator on)
    ckpt.set_rng_state(saved)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want  # noqa: NPY002


def test_save_and_load_with_state_then_weight_only(tmp_path: Path) -> None:
    """Weights and optimizer state come back bit-exact; a later weight-only save of the same name
    removes the stale optimizer file, so that it cannot be resumed from."""
    import torch

    from jettag.models import create_model

    def pfn() -> torch.nn.Module:
        return create_model("pfn", num_classes=2, features="kin", phi_sizes=[8, 8], f_sizes=[8])

    torch.manual_seed(0)
    model = pfn()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(None, torch.randn(3, 7, 5), None, torch.ones(3, 1, 5, dtype=torch.bool)).sum().backward()
    opt.step()

    class Wrapped(torch.nn.Module):  # DDP and torch.compile wrappers: .module / ._orig_mod
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.module = inner

    wrapper = type("Compiled", (), {"_orig_mod": Wrapped(model)})()
    assert ckpt.unwrap(wrapper) is model
    meta = {"model": "pfn", "epoch": 2, "batch": 1, "step": 9, "bad_epochs": 1, "best": 0.4,
            "classes": ["a", "b"]}
    ckpt.save_checkpoint(tmp_path, "last", Wrapped(model), meta, opt, {"extra": (1, torch.ones(2))})
    fresh = pfn()
    got, state = ckpt.load_checkpoint(tmp_path, "last", fresh, "pfn", with_state=True)
    assert got["format_version"] == ckpt.FORMAT_VERSION and got["epoch"] == 2 and got["best"] == 0.4
    assert got["shapes"]["fc.weight"] == [2, 8]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=0)
    assert state is not None and state["extra"][0] == 1
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    opt2.load_state_dict(state["optimizer"])
    a, b = opt.state_dict(), opt2.state_dict()
    for i in a["state"]:
        torch.testing.assert_close(b["state"][i]["exp_avg_sq"], a["state"][i]["exp_avg_sq"], rtol=0, atol=0)
    # without state: the meta only, no optimizer state returned
    assert ckpt.load_checkpoint(tmp_path, "last", pfn())[1] is None
    ckpt.save_checkpoint(tmp_path, "last", model, meta)
    assert not (tmp_path / "last.optim.safetensors").exists()
    with pytest.raises(ckpt.CheckpointError, match="weight-only checkpoint"):
        ckpt.read_meta(tmp_path, "last", resume=True)
    assert ckpt.read_meta(tmp_path, "last")["step"] == 9


def test_load_weights_skips_only_whole_prefixes() -> None:
    """``skip=("f",)`` leaves the ``f.*`` tensors as they were but copies ``fc.*`` (a prefix must end
    at a dot); a skipped key may be absent from the state."""
    import torch

    from jettag.models import create_model

    src = create_model("pfn", num_classes=2, features="kin", phi_sizes=[8, 8], f_sizes=[8])
    dst = create_model("pfn", num_classes=2, features="kin", phi_sizes=[8, 8], f_sizes=[8])
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("f.")}
    ckpt.load_weights(dst, state, "x", skip=("f",))
    for k, v in dst.state_dict().items():
        want = before[k] if k.startswith("f.") else src.state_dict()[k]
        torch.testing.assert_close(v, want, rtol=0, atol=0, msg=k)
    ckpt.load_weights(dst, src.state_dict(), "x", skip=("f.0.weight",))
    torch.testing.assert_close(dst.state_dict()["f.0.bias"], src.state_dict()["f.0.bias"], rtol=0, atol=0)
    torch.testing.assert_close(dst.state_dict()["f.0.weight"], before["f.0.weight"], rtol=0, atol=0)


def test_model_from_config_takes_drop_path_and_class_count() -> None:
    cfg = {"model": {"name": "part", "overrides": {"embed_dims": [16, 16], "pair_embed_dims": [8, 8],
                                                   "num_heads": 2, "num_layers": 1, "num_cls_layers": 1}},
           "classes": ["a", "b", "c"], "data": {"feature_set": "kin"}, "train": {"drop_path": 0.2}}
    model = ckpt.build_model_from_config(cfg)
    assert model.get_classifier().out_features == 3
    rates = [m.p for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)  # the rate rises linearly to drop_path
    assert ckpt.build_model_from_config(cfg, num_classes=5).get_classifier().out_features == 5
    cfg["train"] = {}
    assert not [m for m in ckpt.build_model_from_config(cfg).modules() if type(m).__name__ == "DropPath"
                and m.p > 0]


def test_model_from_config_honours_overrides_features_and_drop_path() -> None:
    """The model a run's config.yaml describes: its overrides, feature set, class count and
    ``train.drop_path`` all reach ``create_model`` (a rebuilt run must be the trained architecture)."""
    from jettag.models import feature_dim
    from jettag.models.profile import count_parameters

    cfg = {"model": {"name": "pfn", "overrides": {"phi_sizes": [8, 8], "f_sizes": [8]}},
           "classes": ["a", "b", "c"], "data": {"feature_set": "kinpid"}, "train": {}}
    model = ckpt.build_model_from_config(cfg)
    assert model.input_dim == feature_dim("kinpid") == 13 and model.num_classes == 3
    narrow = count_parameters(model)
    assert narrow < count_parameters(ckpt.build_model_from_config({**cfg, "model": {"name": "pfn"}}))
    assert ckpt.build_model_from_config(cfg, num_classes=5).num_classes == 5
    no_train = {k: v for k, v in cfg.items() if k != "train"}  # a config without a train section
    assert count_parameters(ckpt.build_model_from_config(no_train)) == narrow
    part = {"model": {"name": "part", "overrides": {"num_layers": 2, "embed_dims": [16, 16],
                                                    "pair_embed_dims": [8]}},
            "classes": ["a", "b"], "data": {"feature_set": "kin"}, "train": {"drop_path": 0.2}}
    from jettag.models.layers import DropPath

    rates = [m.p for m in ckpt.build_model_from_config(part).modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(0.2)  # linear over depth up to train.drop_path
