"""Two torchrun processes (gloo, CPU) train and evaluate; their reduced metrics equal one process's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jetfactory import random_jets

from jettag.data.dataset import load_splits
from jettag.data.kinds.particles import JetTensors
from jettag.data.store import write_store
from jettag.evaluate.metrics import evaluate_scores
from jettag.evaluate.scoring import evaluate_tensors
from jettag.train.checkpoint import load_run_model, read_meta

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    data = root / "jets.parquet"
    write_store(data, random_jets(403, seed=11, max_len=20), ["QCD", "top"], "random")  # odd: uneven shards
    run = root / "run"
    _run([*TORCHRUN, "-m", "jettag.cli", "train", "top_pfn", f"data.path={data}", "data.max_len=24",
          "epochs=2", "batch_size=32", "eval_batch_size=16", "progress=false", "--run-dir", str(run)], root)
    return run


def test_ddp_validation_metrics_equal_single_process(ddp_run: Path) -> None:
    meta = read_meta(ddp_run / "checkpoints", "best")
    model, cfg = load_run_model(ddp_run, "best")
    splits, classes = load_splits(cfg, ("val",))
    val = JetTensors.from_jets(splits["val"], cfg["data"]["feature_set"], cfg["data"]["max_len"])
    single = evaluate_tensors(model, val, classes, batch_size=64)
    assert set(single) == set(meta["val"])
    for k, v in single.items():
        assert meta["val"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    assert meta["val"]["loss"] > 0 and 0 < meta["val"]["auc"] < 1


def test_ddp_evaluate_equals_single_process(ddp_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    _run([*TORCHRUN, "-m", "jettag.cli", "evaluate", str(ddp_run), "--out", str(out), "--batch-size", "16"],
         tmp_path)
    reduced = json.loads((out / "results.json").read_text())["runs"][0]["metrics"]
    # single process, independent batching (one batch holding every test jet, no bucketing)
    model, cfg = load_run_model(ddp_run, "best")
    splits, classes = load_splits(cfg, ("test",))
    test = JetTensors.from_jets(splits["test"], cfg["data"]["feature_set"], cfg["data"]["max_len"])
    batch = test.batch(np.arange(len(test)))
    probs = model.predict_proba(batch.points, batch.features, batch.vectors, batch.mask).double().numpy()
    single = evaluate_scores(batch.label.numpy(), probs, classes)
    for k, v in single.items():
        assert reduced[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    shutil.rmtree(out)


# Run by torchrun in each rank: join, train one DDP step, leave, and write the native threads left.
_GLOO_THREADS_SCRIPT = """
import os, torch
from jettag.train import distributed as D
D.setup("cpu")
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
model(torch.ones(4, 3)).sum().backward()
del model
D.cleanup()
names = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
with open(f"threads-{os.environ['RANK']}.txt", "w") as f:
    f.write(",".join(names))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through Linux's /proc")
def test_cleanup_joins_the_gloo_threads(tmp_path: Path) -> None:
    """``cleanup`` frees the process group even after DDP has run, so gloo's worker threads end there:
    left alive into interpreter exit, one of them finishing a barrier aborted a rank ("terminate
    called without an active exception", seen in CI)."""
    script = tmp_path / "ranks.py"
    script.write_text(_GLOO_THREADS_SCRIPT)
    _run([*TORCHRUN, str(script)], tmp_path)
    for rank in (0, 1):  # a file per rank: the ranks share torchrun's stdout
        names = (tmp_path / f"threads-{rank}.txt").read_text()
        assert "python" in names and "gloo" not in names, f"rank {rank}: {names}"
