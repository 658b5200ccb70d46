"""``jettag demo --quick``: the whole chain (generate, train, evaluate, report) end to end, with the
reported numbers recomputed independently from the run it wrote.

One model (the PFN, the cheapest) runs: the chain is the same for every model, and each model's
training and evaluation have their own tests (test_train, test_evaluate, test_models)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from jettag.cli import main
from jettag.data.dataset import load_splits
from jettag.data.features import build_inputs
from jettag.train.checkpoint import load_run_model

N_JETS = 200  # --quick: 200 generated jets, split 67/8/25 -> 134 train, 50 test jets


def _rejection(labels: np.ndarray, score: np.ndarray, eff: float) -> float:
    """1/FPR at TPR = eff for tie-free scores, from the definition: the cut sits on the
    ceil(eff * n_signal)-th highest signal score, FPR is the fraction of background above it."""
    labels = np.asarray(labels, dtype=bool)
    cut = np.sort(score[labels])[::-1][math.ceil(eff * labels.sum() - 1e-9) - 1]
    fpr = float(np.mean(score[~labels] > cut))
    return math.inf if fpr == 0 else 1.0 / fpr


@pytest.mark.slow
def test_demo_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("JETTAG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--models", "pfn", "--out", str(out), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    report = out / "report"
    res = json.loads((report / "results.json").read_text())
    assert res["classes"] == ["QCD", "Top"] and res["n_test"] == 50
    [run] = res["runs"]
    m = run["metrics"]
    assert (run["name"], run["model"], m["epochs"]) == ("pfn", "pfn", 1)

    # the reported metrics, recomputed from the saved best model on its own test split, padded to
    # max_len in one batch (no bucketing, no loader) and scored with scikit-learn
    model, cfg = load_run_model(out / "pfn")
    assert cfg["data"]["path"] == f"generate:top:{N_JETS}"  # the reproducible spec, not the cache path
    splits, _ = load_splits(cfg, ("train", "test"))
    assert (len(splits["train"]), len(splits["test"])) == (134, 50)
    x = build_inputs(splits["test"], cfg["data"]["feature_set"], max_len=cfg["data"]["max_len"])
    t = {k: torch.from_numpy(np.asarray(x[k])) for k in ("points", "features", "vectors", "mask")}
    probs = model.predict_proba(t["points"], t["features"], t["vectors"], t["mask"].bool()).double().numpy()
    labels = np.asarray(x["label"])
    assert 0 < labels.sum() < len(labels)
    # padded vs bucketed batches agree to ~1e-6 in the scores, which can swap at most a pair of
    # near-equal scores: allow two swapped (signal, background) pairs in the AUC, one jet in acc
    pairs = labels.sum() * (len(labels) - labels.sum())
    assert m["auc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]), abs=2.0 / pairs)
    assert m["acc"] == pytest.approx(np.mean(probs.argmax(1) == labels), abs=1.0 / len(labels))
    for key, eff in (("rej50", 0.5), ("rej30", 0.3)):
        assert m[key] == pytest.approx(_rejection(labels, probs[:, 1], eff), rel=1e-6), key
    assert m["params"] == sum(p.numel() for p in model.parameters())

    # training: 134 jets in batches of 32 = 5 steps; one validation row; flat+decay ends at 1% of lr
    with open(out / "pfn" / "log.csv") as f:
        val = [r for r in csv.DictReader(f) if r["split"] == "val"]
    assert len(val) == 1 and int(val[0]["step"]) == 5
    assert float(val[0]["lr"]) == pytest.approx(cfg["train"]["lr"] * 0.01, rel=1e-12)
    timings = json.loads((report / "timings.json").read_text())
    assert timings["total_s"] >= timings["generation_s"] + timings["train_pfn_s"]
    # jets/s is training throughput: 134 jets in less time than the whole train() call took
    assert m["jets_per_s"] >= 134 / timings["train_pfn_s"]

    # the printed table is the report's table, with the json's numbers in the seed layout
    md = (report / "results.md").read_text()
    assert md in stdout and f"test jets: {res['n_test']}" in md
    row = (f"| pfn | {m['acc']:.3f} | {m['auc']:.4f} | {m['rej50']:.1f} | {m['rej30']:.1f} | "
           f"{m['params'] / 1e3:.1f}k | 1 | {m['jets_per_s']:.0f} |")
    assert row in md.splitlines(), md
    assert (report / "roc.png").stat().st_size > 0 and (out / "pfn" / "checkpoints" / "best.json").is_file()
    # the sample was generated into the given cache, not the user's
    manifests = list((tmp_path / "cache").rglob("manifest.json"))
    assert len(manifests) == 1
