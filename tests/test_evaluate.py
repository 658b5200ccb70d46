"""``jettag evaluate / predict / info`` against independent computations (padded inputs, scikit-learn)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from jetfactory import random_jets
from sklearn.metrics import roc_auc_score

from jettag.cli import main
from jettag.data.dataset import load_splits
from jettag.data.features import build_inputs
from jettag.data.store import write_store
from jettag.train.checkpoint import load_run_model
from jettag.train.config import resolve
from jettag.train.trainer import train


def _train(root: Path, classes: list[str], seed: int, n_jets: int = 240, *extra: str) -> Path:
    data = root / f"jets{len(classes)}.parquet"
    write_store(data, random_jets(n_jets, seed=seed, max_len=20, n_classes=len(classes)), classes, "random")
    run = root / f"run{len(classes)}"
    cfg = resolve("top_pfn", [f"data.path={data}", "data.max_len=24", "epochs=1", "batch_size=32",
                              "progress=false", *extra])
    train(cfg, run)
    return run


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("bin"), ["QCD", "Top"], 21)


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # a large test split (150 jets): enough QCD jets that the two-class ratio and the raw class
    # probability give different rejections (checked in the test)
    return _train(tmp_path_factory.mktemp("multi"), ["label_QCD", "label_Hbb", "label_Tbl"], 22, 300,
                  "data.split=[0.4,0.1,0.5]")


def _reference_probs(run: Path, jets) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities from weaver-layout arrays padded to max_len (no bucketing, no loader)."""
    model, cfg = load_run_model(run)
    x = build_inputs(jets, cfg["data"]["feature_set"], max_len=cfg["data"]["max_len"])
    t = {k: torch.from_numpy(np.asarray(x[k])) for k in ("points", "features", "vectors", "mask")}
    probs = model.predict_proba(t["points"], t["features"], t["vectors"], t["mask"].bool()).double().numpy()
    return probs, np.asarray(x["label"])


def test_evaluate_binary_report(binary_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "rep"
    assert main(["evaluate", str(binary_run), str(binary_run), "--out", str(out)]) == 0
    assert "Rej30%" in capsys.readouterr().out
    for f in ("results.md", "results.tex", "results.json", "roc.png", f"scores_{binary_run.name}.png"):
        assert (out / f).is_file(), f
    table = pq.read_table(out / "predictions" / f"{binary_run.name}.parquet")
    _, cfg = load_run_model(binary_run)
    splits, _ = load_splits(cfg, ("test",))
    ref, labels = _reference_probs(binary_run, splits["test"])
    np.testing.assert_array_equal(table["label"].to_numpy(), labels)
    np.testing.assert_allclose(table["score_Top"].to_numpy(), ref[:, 1], atol=2e-5)
    res = json.loads((out / "results.json").read_text())
    m = res["runs"][0]["metrics"]
    assert m["auc"] == pytest.approx(roc_auc_score(labels, ref[:, 1]), abs=1e-3)
    assert m["acc"] == pytest.approx(np.mean(ref.argmax(1) == labels), abs=1.5 / len(labels))
    # two identical runs: std 0, shown as mean ± std in both tables
    md = (out / "results.md").read_text()
    assert "pfn (n=2)" in md and "± 0.000" in md and r"\pm" in (out / "results.tex").read_text()


def _rejection(labels: np.ndarray, score: np.ndarray, eff: float) -> float:
    """1/FPR at TPR = eff for tie-free scores, from the definition: the cut sits on the
    ceil(eff * n_signal)-th highest signal score, FPR is the fraction of background above it."""
    labels = np.asarray(labels, dtype=bool)
    cut = np.sort(score[labels])[::-1][math.ceil(eff * labels.sum() - 1e-9) - 1]
    fpr = float(np.mean(score[~labels] > cut))
    return math.inf if fpr == 0 else 1.0 / fpr


def test_evaluate_multiclass_working_points(multi_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    assert main(["evaluate", str(multi_run), "--out", str(out)]) == 0
    m = json.loads((out / "results.json").read_text())["runs"][0]["metrics"]
    assert set(m) == {"acc", "auc", "rej50_Hbb", "rej99.5_Tbl", "params"}
    for by in ("true", "pred"):
        assert (out / f"confusion_{multi_run.name}_{by}.png").is_file()
    # the values, recomputed from padded inputs with scikit-learn: macro one-vs-rest AUC, and each
    # class scored against QCD only with p_X / (p_X + p_QCD) at its JetClass working point
    _, cfg = load_run_model(multi_run)
    splits, _ = load_splits(cfg, ("test",))
    ref, labels = _reference_probs(multi_run, splits["test"])
    assert set(np.unique(labels)) == {0, 1, 2}
    assert m["auc"] == pytest.approx(roc_auc_score(labels, ref, multi_class="ovr"), abs=1e-3)
    assert m["acc"] == pytest.approx(np.mean(ref.argmax(1) == labels), abs=1.5 / len(labels))
    for k, key, eff in ((1, "rej50_Hbb", 0.5), (2, "rej99.5_Tbl", 0.995)):
        sel = (labels == k) | (labels == 0)
        score = ref[sel, k] / (ref[sel, k] + ref[sel, 0])
        # scores agree with the evaluated ones to ~1e-6 (padding vs bucketing): the same ROC points
        assert m[key] == pytest.approx(_rejection(labels[sel] == k, score, eff), rel=1e-6), key
        assert m[key] != pytest.approx(_rejection(labels[sel] == k, ref[sel, k], eff), rel=1e-3), key
    md = (out / "results.md").read_text()
    assert f"| {m['acc']:.3f} | {m['auc']:.4f} | {m['rej50_Hbb']:.1f} |" in md, md


def test_predict_and_info(binary_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = Path(load_run_model(binary_run)[1]["data"]["path"])
    out = tmp_path / "scores.parquet"
    assert main(["predict", str(binary_run), str(src), "--out", str(out)]) == 0
    table = pq.read_table(out)
    from jettag.data.store import read_store

    ref, labels = _reference_probs(binary_run, read_store(src))
    np.testing.assert_allclose(table["score_Top"].to_numpy(), ref[:, 1], atol=2e-5)
    np.testing.assert_array_equal(table["label"].to_numpy(), labels)
    capsys.readouterr()
    assert main(["info", str(binary_run), "--length", "16"]) == 0
    info = json.loads(capsys.readouterr().out)
    model, _ = load_run_model(binary_run)
    assert info["params"] == sum(p.numel() for p in model.parameters())
    # a PFN's per-particle MLP is linear in the particle count: FLOPs(32) ~ 2 x FLOPs(16)
    assert main(["info", str(binary_run), "--length", "32"]) == 0
    info32 = json.loads(capsys.readouterr().out)
    ratio = info32["flops_per_jet_at_32"] / info["flops_per_jet_at_16"]
    assert 1.6 < ratio <= 2.0


def test_evaluate_rejects_mismatched_classes(binary_run: Path, multi_run: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = Path(load_run_model(multi_run)[1]["data"]["path"])
    assert main(["evaluate", str(binary_run), "--data", str(data), "--out", "/tmp/unused-report"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jettag evaluate: ") and "classes" in err
