"""Validation before work, runs that cannot be mixed up, best-metric selection, stochastic depth."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import shutil
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
from jetfactory import random_jets

from jettag.cli import main
from jettag.data.dataset import split_indices
from jettag.data.store import JetDataError, write_store
from jettag.evaluate.metrics import multiclass_metrics, summary_rejection
from jettag.models import create_model
from jettag.models.layers import DropPath, NormFormerBlock
from jettag.train import checkpoint as ckpt
from jettag.train.config import ConfigError, apply_overrides, load_recipe, resolve, save_config
from jettag.train.trainer import BestTracker, train

#: a narrow PFN so that every training here takes a second or two
TINY_PFN = ["model.overrides.phi_sizes=[16,16]", "model.overrides.f_sizes=[16]"]
TINY_MIPART = {"embed_dims": [16, 32, 16], "pair_embed_dims": [8, 8, 8], "num_heads": 4, "num_mi_layers": 1,
               "num_layers": 1, "num_cls_layers": 1}
TINY_PART = {"embed_dims": [16, 32, 16], "pair_embed_dims": [8, 8, 8], "num_heads": 4, "num_layers": 2,
             "num_cls_layers": 1}


def _store(path: Path, n: int = 120, seed: int = 3, labels: np.ndarray | None = None,
           n_classes: int = 2) -> Path:
    jets = random_jets(n, seed=seed, max_len=12, n_classes=n_classes)
    if labels is not None:
        jets = ak.with_field(jets, labels.astype(np.int32), "label")
    write_store(path, jets, ["QCD", "top"], "random")
    return path


def cli_error(argv: list[str], pattern: str) -> None:
    """``jettag`` refuses ``argv`` the way a user sees it: exit 2 and one stderr line matching."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    lines = err.getvalue().splitlines()
    assert code == 2 and len(lines) == 1 and re.search(pattern, lines[0]), err.getvalue()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _store(tmp_path_factory.mktemp("data") / "jets.parquet")


def pfn_args(data: Path, *extra: str) -> list[str]:
    return [f"data.path={data}", "data.max_len=12", "epochs=1", "batch_size=32", "progress=false",
            "log_every=1", *TINY_PFN, *extra]


def pfn_cfg(data: Path, *extra: str) -> dict:
    return resolve("top_pfn", pfn_args(data, *extra))


# ------------------------------------------------------------------ validation before work
@pytest.mark.parametrize(("override", "named"), [
    ("early_stopping=-1", "train.early_stopping"),  # -1 used to stop after one epoch
    ("early_stopping=0", "train.early_stopping"),
    ("best_metric=rej70", "train.best_metric"),  # used to fall back to the loss silently
    ("label_smoothing=1", "train.label_smoothing"),
    ("grad_clip=0", "train.grad_clip"),
    ("weight_decay=-0.1", "train.weight_decay"),
    ("betas=[0.9]", "train.betas"),
    ("betas=[0.9,1.0]", "train.betas"),
    ("bf16=maybe", "train.bf16"),
    ("batch_size=0", "train.batch_size"),
    ("eval_batch_size=2.5", "train.eval_batch_size"),
    ("log_every=0", "train.log_every"),
    ("save_every=-1", "train.save_every"),
    ("max_steps=0", "train.max_steps"),
    ("max_len=0", "data.max_len"),
    ("split=[0.5,0.5]", "data.split"),
    ("progress=often", "train.progress"),
    ("optimizer=sgd", "train.optimizer"),
    ("schedule.name=linear", "train.schedule.name"),
    ("model.name=bdt", "model.name"),
    ("feature_set=everything", "data.feature_set"),
    ("detector=cms", "data.detector"),
    ("data.path=generate:ttbar:1000", "ttbar"),
    ("data.path=/no/such/file.parquet", "data.path"),
    ("model.overrides.num_layerz=3", "num_layerz"),
])
def test_bad_values_refused_naming_the_key(store: Path, override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        resolve("top_mipart", [f"data.path={store}", override])


def test_unknown_best_metric_refused(store: Path) -> None:
    with pytest.raises(ConfigError, match="unknown metric 'rej70'; known: loss, acc, auc, rej50, rej30"):
        resolve("top_pfn", [f"data.path={store}", "best_metric=rej70"])
    with pytest.raises(ConfigError, match="rej70"):
        BestTracker("rej70")


def test_model_overrides_checked_by_a_trial_build(store: Path) -> None:
    with pytest.raises(ConfigError, match="not divisible by num_heads 7"):
        resolve("top_mipart", [f"data.path={store}", "model.overrides.num_heads=7"])


def test_bad_optimizer_fails_fast_before_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recipe with a generation spec and a typo stops in seconds, before any jet is generated."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("JETTAG_CACHE", str(cache))
    run = tmp_path / "run"
    args = ["train", "top_mipart", "optimizer=adamw_typo", "data.path=generate:top:100000",
            "--run-dir", str(run)]
    t0 = time.perf_counter()
    cli_error(args, r"train\.optimizer: unknown value 'adamw_typo'")
    # the trainer checks too, for configs that did not come through resolve()
    cfg = apply_overrides(load_recipe("top_mipart"), ["optimizer=adamw_typo"])
    with pytest.raises(ConfigError, match=r"train\.optimizer"):
        train(cfg, run)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, elapsed  # generating 100k jets takes minutes
    assert not cache.exists() and not run.exists()


def test_cuda_without_gpu_refused(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"train\.device='cuda' but torch sees no CUDA GPU"):
        resolve("top_pfn", [f"data.path={store}", "device=cuda"])
    with pytest.raises(ConfigError, match=r"train\.device"):
        resolve("top_pfn", [f"data.path={store}", "device=gpu"])
    assert resolve("top_pfn", [f"data.path={store}", "device=cpu"])["train"]["device"] == "cpu"


@pytest.mark.parametrize("model", ["pfn", "particlenet"])
def test_drop_path_on_model_without_stochastic_depth_refused(store: Path, model: str) -> None:
    with pytest.raises(ConfigError, match=f"model '{model}' has no stochastic depth"):
        resolve(f"top_{model}", [f"data.path={store}", "drop_path=0.1"])
    for name in ("part", "mipart", "mipart_l"):
        cfg = resolve("top_mipart", [f"data.path={store}", f"model.name={name}", "drop_path=0.1"])
        assert cfg["train"]["drop_path"] == 0.1
    with pytest.raises(ConfigError, match="differ"):
        resolve("top_mipart", [f"data.path={store}", "drop_path=0.1", "model.overrides.drop_path=0.2"])


def test_override_by_unique_path_tail(store: Path) -> None:
    cfg = resolve("top_pfn", [f"data.path={store}", "schedule.name=cosine"])
    assert cfg["train"]["schedule"]["name"] == "cosine"
    with pytest.raises(ConfigError, match="ambiguous"):
        apply_overrides(cfg, ["name=part"])


# ------------------------------------------------------------------ best metric and early stopping
def test_best_tracker_direction_and_patience() -> None:
    vals = [{"loss": 0.60, "rej30": 5.0}, {"loss": 0.50, "rej30": 9.0}, {"loss": 0.40, "rej30": 7.0},
            {"loss": 0.45, "rej30": math.inf}, {"loss": 0.30, "rej30": 8.0}]
    rej = BestTracker("rej30", patience=2)
    assert [rej.update(v) for v in vals[:3]] == [True, True, False]
    assert rej.best == 9.0 and rej.bad_epochs == 1 and not rej.stop
    assert rej.update(vals[3]) and rej.best == math.inf  # no background jet passes: the best possible
    assert not rej.update(vals[4]) and not rej.update(vals[4]) and rej.stop
    loss = BestTracker("loss")
    assert [loss.update(v) for v in vals] == [True, True, True, False, True] and loss.best == 0.30
    assert not loss.stop  # no patience: never stops
    nan_first = BestTracker("auc", patience=1)
    assert not nan_first.update({"auc": math.nan}) and nan_first.best is None
    assert nan_first.update({"auc": 0.5}) and not nan_first.update({"auc": math.nan}) and nan_first.stop


def test_best_metric_rej30_keeps_highest_validation_rej30(tmp_path: Path) -> None:
    data = _store(tmp_path / "jets300.parquet", n=300)  # 150 validation jets: Rej30 moves between epochs
    run = tmp_path / "rej30"
    summary = train(pfn_cfg(data, "epochs=4", "best_metric=rej30", "deterministic=true", "split=[0.5,0.5,0]",
                            "lr=1e-2"), run)
    with open(run / "log.csv", newline="") as f:
        rej30 = [float(r["rej30"]) for r in csv.DictReader(f) if r["split"] == "val"]
    assert len(rej30) == 4 and np.isfinite(rej30).all()
    # a run where the direction matters: minimising would keep another epoch (ties: the first one)
    assert int(np.argmax(rej30)) != int(np.argmin(rej30))
    best = ckpt.read_meta(run / "checkpoints", "best")
    assert best["epoch"] == int(np.argmax(rej30)) + 1 and best["best_metric"] == "rej30"
    assert best["val"]["rej30"] == max(rej30)  # csv writes repr(float): exact round trip
    assert summary["best"] == max(rej30) and summary["best_metric"] == "rej30"


def test_multiclass_summary_rejection_is_geometric_mean_of_class_rejections() -> None:
    rng = np.random.default_rng(0)
    classes = ["label_QCD", "label_Hbb", "label_Tbqq"]
    labels = rng.integers(0, 3, size=600)
    logits = rng.normal(size=(600, 3)) + np.array([1.0, 0.5, 1.5]) * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    per_class = multiclass_metrics(labels, probs, classes)
    assert per_class["rej50_Tbqq"] > 2 * per_class["rej50_Hbb"]  # geometric and arithmetic means differ
    expect = math.exp((math.log(per_class["rej50_Hbb"]) + math.log(per_class["rej50_Tbqq"])) / 2)
    # same ROC arithmetic in a different order: equal to float64 rounding
    assert summary_rejection(labels, probs, classes, 0.5) == pytest.approx(expect, rel=1e-12)
    assert summary_rejection(labels, probs, classes, 0.3) > summary_rejection(labels, probs, classes, 0.5)


# ------------------------------------------------------------------ data with too few classes
def test_one_class_dataset_refused_with_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _store(tmp_path / "one.parquet", n=60, n_classes=1)

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was built before the class counts were checked")

    monkeypatch.setattr(ckpt, "build_model_from_config", no_model)
    with pytest.raises(JetDataError, match=r"one\.parquet: jets of only one class \(QCD: 60, top: 0\)"):
        train(pfn_cfg(data, "split=[0.5,0.5,0]"), tmp_path / "run")


def test_split_with_one_class_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n, split = 60, [0.5, 0.25, 0.25]
    tr, va, _ = split_indices(n, split, seed=0)
    labels = np.zeros(n, dtype=np.int32)
    labels[tr[::2]] = 1  # top jets in the train split only
    data = _store(tmp_path / "skewed.parquet", n=n, labels=labels)
    monkeypatch.setattr(ckpt, "build_model_from_config", lambda *a, **k: pytest.fail("model built"))
    msg = rf"the val split has jets of only one class \(QCD: {len(va)}, top: 0\)"
    with pytest.raises(JetDataError, match=msg):
        train(pfn_cfg(data, "split=[0.5,0.25,0.25]"), tmp_path / "run")


# ------------------------------------------------------------------ run directories
def test_second_run_into_same_directory_refused_overwrite_replaces(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "top_pfn", *pfn_args(store), "--run-dir", str(run)]
    assert main(args) == 0
    log = (run / "log.csv").read_text()
    (run / "report").mkdir()
    (run / "report" / "results.md").write_text("old report")
    cli_error(args, r"already holds a run .*--resume.*--overwrite")
    assert (run / "log.csv").read_text() == log  # untouched
    assert main([*args, "--overwrite"]) == 0
    new_log = (run / "log.csv").read_text()
    assert new_log.count("time,epoch,step") == 1 and new_log != log  # a fresh log, not appended
    assert not (run / "report").exists()
    # --overwrite deletes only what a run writes
    (run / "notes.txt").write_text("mine")
    cli_error([*args, "--overwrite"], r"no jettag run writes \(notes\.txt\)")
    assert (run / "notes.txt").read_text() == "mine" and (run / "log.csv").exists()
    cli_error([*args, "--overwrite", "--resume", str(run)], "give one of them")


def test_overwrite_is_in_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--overwrite" in out and "delete its config.yaml, log.csv, checkpoints/" in out


def test_resume_without_checkpoint_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed before its first save: config.yaml and an empty checkpoints/ folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("JETTAG_CACHE", str(cache))
    run = tmp_path / "killed"
    (run / "checkpoints").mkdir(parents=True)
    save_config(resolve("top_mipart"), run / "config.yaml")  # data: generate:top:100000
    cli_error(["train", "--resume", str(run)],
              r"killed has no checkpoint yet \(killed before the first save\).*--overwrite")
    assert not cache.exists()  # refused before generating the data
    # --resume overrides are checked as well
    cli_error(["train", "--resume", str(run), "optimizer=nope"], r"train\.optimizer")


@pytest.fixture(scope="module")
def stopped_run(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("stopped") / "run"
    train(pfn_cfg(store, "max_steps=1"), run)
    return run


@pytest.fixture
def resumable(stopped_run: Path, tmp_path: Path) -> Path:
    """A copy of a run stopped after one step (each test edits or continues its own)."""
    return Path(shutil.copytree(stopped_run, tmp_path / "run"))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.pop("epoch"), "field 'epoch' is missing"),
    (lambda m: m.update(step="3"), "field 'step' must be int, got '3'"),
    (lambda m: m.update(best=[1.0]), "field 'best' must be float or int or null"),
    (lambda m: m.update(bad_epochs=True), "field 'bad_epochs' must be int, got True"),
    (lambda m: m.update(token=7), "field 'token' must be str"),
    (lambda m: m.update(shapes=None), "field 'shapes' must be dict"),
])
def test_checkpoint_json_fields_checked(resumable: Path, edit, message: str) -> None:
    path = resumable / "checkpoints" / "last.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    cli_error(["train", "--resume", str(resumable)], f"last.json: {message}")


def test_resume_refuses_other_best_metric(resumable: Path) -> None:
    cli_error(["train", "--resume", str(resumable), "best_metric=auc"], "chose its best checkpoint by 'loss'")
    assert main(["train", "--resume", str(resumable), "max_steps=null"]) == 0


# ------------------------------------------------------------------ stochastic depth
def _inputs(batch: int = 8, length: int = 10) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 7, length, generator=g)
    v = torch.rand(batch, 4, length, generator=g)
    v[:, 3] += 3.0  # E > |p|
    mask = torch.ones(batch, 1, length, dtype=torch.bool)
    mask[: batch // 2, :, length // 2:] = False
    return x, v, mask


def test_drop_path_module() -> None:
    x = torch.ones(400, 3, 4)
    dp = DropPath(0.5).train()
    y = dp(x)
    per_sample = y[:, 0, 0]
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1/(1-p)
    assert (y == per_sample[:, None, None]).all()  # one decision per sample
    assert 120 < int((per_sample == 0).sum()) < 280
    assert dp.eval()(x) is x
    state = torch.get_rng_state()
    assert DropPath(0.0).train()(x) is x and torch.equal(state, torch.get_rng_state())
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        DropPath(1.0)


def test_drop_path_on_both_residual_branches() -> None:
    """A sample passes a block unchanged exactly when both of its branches are dropped (w_resid = 1
    at initialisation): with p = 0.5 for about a quarter of the samples, and never in eval mode."""
    torch.manual_seed(0)
    block = NormFormerBlock(16, 4, dropout=0.0, attn_dropout=0.0, activation_dropout=0.0, drop_path=0.5)
    x = torch.randn(400, 6, 16)
    unchanged = (block.train()(x) == x).flatten(1).all(1)
    assert 60 < int(unchanged.sum()) < 140  # binomial(400, 1/4): mean 100, sd 8.7
    assert not (block.eval()(x) == x).flatten(1).all(1).any()
    cls = torch.randn(400, 1, 16)
    bias = torch.zeros(400, 1, 1, 7)
    unchanged_cls = (block.train().forward_cls(x, cls, bias) == cls).flatten(1).all(1)
    assert 60 < int(unchanged_cls.sum()) < 140


@pytest.mark.parametrize(("name", "tiny"), [("part", TINY_PART), ("mipart", TINY_MIPART),
                                             ("mipart_l", TINY_MIPART)])
def test_stochastic_depth_in_transformers(name: str, tiny: dict) -> None:
    x, v, mask = _inputs()
    torch.manual_seed(0)
    plain = create_model(name, 2, "kin", dropout=0.0, **tiny)
    deep = create_model(name, 2, "kin", dropout=0.0, drop_path=0.5, **tiny)
    deep.load_state_dict(plain.state_dict())  # no extra parameters or buffers
    rates = [m.p for m in deep.modules() if isinstance(m, DropPath)]
    n_blocks = len(rates)
    assert n_blocks == tiny.get("num_mi_layers", 0) + tiny["num_layers"] + tiny["num_cls_layers"]
    assert rates == pytest.approx([0.5 * (i + 1) / n_blocks for i in range(n_blocks)])  # linear, last = p
    # training mode: some samples' branches are dropped, so two calls differ; p = 0 draws nothing
    plain.train()
    deep.train()
    state = torch.get_rng_state()
    a = plain(None, x, v, mask)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, plain(None, x, v, mask))  # BN batch statistics: same batch, same output
    assert not torch.equal(deep(None, x, v, mask), deep(None, x, v, mask))
    # eval mode: the identity, equal to the model without stochastic depth, bit for bit
    plain.eval()
    deep.eval()
    assert torch.equal(plain(None, x, v, mask), deep(None, x, v, mask))
    assert torch.equal(deep(None, x, v, mask), deep(None, x, v, mask))


def test_drop_path_run_trains_and_evaluates(store: Path, tmp_path: Path) -> None:
    """``train.drop_path`` reaches the model (it used to be a TypeError after loading the data)."""
    cfg = resolve("top_mipart", [f"data.path={store}", "data.max_len=12", "epochs=1", "batch_size=32",
                                 "progress=false", "drop_path=0.2",
                                 *[f"model.overrides.{k}={v}" for k, v in TINY_MIPART.items()]])
    train(cfg, tmp_path / "dp")
    model, saved = ckpt.load_run_model(tmp_path / "dp")
    assert saved["train"]["drop_path"] == 0.2 and "drop_path" not in saved["model"]["overrides"]
    assert max(m.p for m in model.modules() if isinstance(m, DropPath)) == pytest.approx(0.2)
