"""Training from a stream (``data.streaming=true``): exact resume mid-epoch, and the held-out jets
that ``jettag evaluate RUN`` rebuilds from the run's config alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from jetfactory import random_jets
from safetensors.torch import load_file

from jettag.data.dataset import load_splits
from jettag.data.store import read_store, write_store
from jettag.train import checkpoint as ckpt
from jettag.train.config import apply_overrides, read_config, resolve
from jettag.train.trainer import train


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 jets in row groups of 40: the stream's buffers of 64 jets hold one or two units each."""
    path = tmp_path_factory.mktemp("data") / "jets.parquet"
    write_store(path, random_jets(300, seed=5, max_len=16), ["QCD", "top"], "random", row_group_size=40)
    return path


def cfg_for(path: Path, *extra: str) -> dict:
    return resolve("top_pfn", [f"data.path={path}", "data.streaming=true", "data.buffer_size=64",
                               "data.max_len=16", "epochs=2", "batch_size=16", "eval_batch_size=32",
                               "progress=false", "deterministic=true", "log_every=1",
                               "model.overrides.phi_sizes=[16,16]", "model.overrides.f_sizes=[16]", *extra])


@pytest.fixture(scope="module")
def uninterrupted(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "full"
    train(cfg_for(store), run)
    return run


def test_streaming_run_killed_mid_epoch_resumes_bit_identical(store: Path, uninterrupted: Path,
                                                              tmp_path: Path) -> None:
    run = tmp_path / "killed"
    assert train(cfg_for(store, "max_steps=6"), run)["step"] == 6
    epoch, batch = (lambda m: (m["epoch"], m["batch"]))(ckpt.read_meta(run / "checkpoints", "last"))
    assert (epoch, batch) == (0, 6)  # mid-epoch 0 (about 15 batches per epoch), inside a buffer
    cfg = read_config(run)
    assert cfg["data"]["streaming"] is True
    assert train(apply_overrides(cfg, ["max_steps=21"]), run, resume=True)["step"] == 21
    assert ckpt.read_meta(run / "checkpoints", "last")["epoch"] == 1  # killed again, mid-epoch 1
    train(apply_overrides(read_config(run), ["max_steps=null"]), run, resume=True)
    full = load_file(str(uninterrupted / "checkpoints" / "last.safetensors"))
    resumed = load_file(str(run / "checkpoints" / "last.safetensors"))
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_streaming_split_is_rebuilt_by_evaluate(store: Path, uninterrupted: Path) -> None:
    cfg = read_config(uninterrupted)
    splits, classes = load_splits(cfg, ("train", "val", "test"))
    assert classes == ["QCD", "top"]
    keys = {name: {float(v) for v in jets["part_px"][:, 0]} for name, jets in splits.items()}
    assert sum(len(k) for k in keys.values()) == 300  # every jet in exactly one part
    assert len(keys["train"] | keys["val"] | keys["test"]) == 300
    assert 20 < len(keys["test"]) < 60  # binomial(300, 0.1): mean 30, std 5
    # the validation metrics of the run were computed on exactly the val part
    meta = ckpt.read_meta(uninterrupted / "checkpoints", "best")
    assert 0 < meta["val"]["auc"] < 1
    all_px = {float(v) for v in read_store(store)["part_px"][:, 0]}
    assert keys["test"] <= all_px


def test_streaming_refuses_in_memory_only_options(store: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.max_jets"):
        train(cfg_for(store, "data.max_jets=100"), tmp_path / "a")
    with pytest.raises(ValueError, match=r"data\.streaming must be"):
        train(resolve("top_pfn", [f"data.path={store}", "data.streaming=maybe"]), tmp_path / "b")
    other = write_store(tmp_path / "val.parquet", random_jets(20, seed=1, max_len=8), ["b", "s"], "random")
    with pytest.raises(ValueError, match=r"val\.parquet: classes \['b', 's'\] differ"):
        train(cfg_for(store, f"data.val={other}"), tmp_path / "c")


def test_evaluate_command_scores_the_rebuilt_test_part(uninterrupted: Path) -> None:
    import pyarrow.parquet as pq

    from jettag.cli import main

    assert main(["evaluate", str(uninterrupted), "--out", str(uninterrupted / "report")]) == 0
    scored = pq.read_table(uninterrupted / "report" / "predictions" / "full.parquet")
    test = load_splits(read_config(uninterrupted), ("test",))[0]["test"]
    assert scored.num_rows == len(test)


def test_two_rank_streaming_run_validates_every_val_jet_once(store: Path, tmp_path: Path) -> None:
    """torchrun, 2 gloo ranks: shares of the stream, DDP steps in lockstep, and the validation
    metrics gathered over the ranks' parts equal one process scoring the whole val part."""
    import os
    import subprocess
    import sys

    from jettag.data.kinds.particles import JetTensors
    from jettag.evaluate.scoring import evaluate_tensors
    from jettag.train.checkpoint import load_run_model

    run = tmp_path / "ddp"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "jettag.cli", "train", "top_pfn", f"data.path={store}", "data.streaming=true",
            "data.buffer_size=64", "data.max_len=16", "epochs=1", "batch_size=16", "eval_batch_size=8",
            "progress=false", "model.overrides.phi_sizes=[16,16]", "model.overrides.f_sizes=[16]",
            "--run-dir", str(run)]
    proc = subprocess.run(args, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    meta = ckpt.read_meta(run / "checkpoints", "best")
    model, cfg = load_run_model(run, "best")
    val = load_splits(cfg, ("val",))[0]["val"]
    single = evaluate_tensors(model, JetTensors.from_jets(val, "kin", 16), ["QCD", "top"], batch_size=64)
    for k, v in single.items():  # float32 scores summed in another order: ~1e-7 relative
        assert meta["val"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


def test_auto_streams_above_the_size_threshold(store: Path) -> None:
    from jettag.data.dataset import use_streaming

    assert use_streaming({"streaming": "auto", "stream_above": 299}, store)  # the store holds 300 jets
    assert not use_streaming({"streaming": "auto", "stream_above": 300}, store)
    assert use_streaming({"streaming": True}, store) and not use_streaming({"streaming": False}, store)
