"""The flavour study's plan and report logic (seed 001's verdicts computed from the numbers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from jettag.evaluate.report import write_predictions
from jettag.studies import get_study
from jettag.studies.flavour import _roc_figure, extra_report, gain_at_high_pt, pair_auc, plan

CLASSES = ["ud", "s", "c", "b", "g", "ss", "cc", "bb"]


def _result(group: str, seed: int, sharp: float, confuse: tuple[int, int] = (0, 1)) -> dict:
    """Scores with ``sharp`` separation, except that classes ``confuse`` look alike."""
    rng = np.random.default_rng(seed + 100 * len(group) + int(10 * sharp))
    labels = np.repeat(np.arange(8), 60)
    logits = rng.normal(0, 1, (len(labels), 8))
    logits[np.arange(len(labels)), labels] += sharp
    a, b = confuse
    pair = np.isin(labels, confuse)
    logits[pair, a] = logits[pair, b] = sharp + rng.normal(0, 1, pair.sum())  # a and b: the same score
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"name": f"{group}-s{seed}", "model": group, "labels": labels, "probs": probs,
            "classes": CLASSES, "metrics": {}}


def _results(confuse: tuple[int, int]) -> list[dict]:
    out = []
    for seed in (0, 1):
        out += [_result("transformer", seed, 3.0, confuse), _result("transformer_tracks", seed, 1.5, confuse),
                _result("particlenet", seed, 2.0, confuse), _result("mipart", seed, 2.5, confuse)]
        out += [_result(f"transformer@{n}", seed, s, confuse) for n, s in ((40, 0.5), (80, 1.0), (160, 2.0))]
    return out


def _top(runs: Path, group: str, seed: int, sharp: float, params: float) -> None:
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], 100)
    p_top = 1 / (1 + np.exp(-(sharp * (2 * labels - 1) + rng.normal(0, 1, 200))))
    run = runs / f"{group}-s{seed}"
    run.mkdir(parents=True)
    write_predictions(run / "predictions.parquet", labels, np.stack([1 - p_top, p_top], 1), ["QCD", "Top"])
    (runs / f"{group}-s{seed}.study.json").write_text(json.dumps(
        {"recipe": "r", "overrides": [], "status": "finished", "metrics": {"params": params}}))


def test_plan_covers_models_seeds_size_scan_and_top() -> None:
    runs = plan("quick", [0, 1, 2])
    groups = {r.group for r in runs}
    assert {"transformer", "transformer_tracks", "particlenet", "mipart", "top_transformer",
            "top_particlenet"} <= groups
    sizes = sorted(int(g.split("@")[1]) for g in groups if "@" in g)
    assert len(sizes) == 3 and 480 / sizes[0] > 10  # four sizes with the pool: more than a decade
    assert all(r.seed in (0, 1, 2) for r in runs) and len(runs) == 3 * 9
    assert all(not r.report for r in runs if r.group.startswith("top_"))
    # every flavour run is scored on the same separate test set
    assert all("data.test=generate:flavour:240:1" in r.overrides for r in runs if r.data == "flavour")
    assert get_study("flavour").extra is extra_report


def test_report_verdicts_follow_the_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JETTAG_CACHE", str(tmp_path / "empty-cache"))  # the report never generates
    runs = tmp_path / "runs"
    _top(runs, "top_transformer", 0, 2.0, 101_634)
    _top(runs, "top_transformer", 1, 2.0, 101_634)
    _top(runs, "top_particlenet", 0, 1.0, 366_160)
    _top(runs, "top_particlenet", 1, 1.0, 366_160)
    meta = {"scale": "quick", "data": {"flavour": "generate:flavour:480"}}
    text = extra_report(tmp_path, runs, _results((0, 1)), meta, figures=False)  # figures: below
    assert "**s vs ud is the hardest pair**: holds" in text
    assert "**More data helps every class**" in text and "8 of 8 classes improve" in text
    assert "**Clusters add information**" in text and ": holds at this scale" in text
    assert "the transformer beats" in text and "3.6x fewer" in text
    # ud vs g made the confusable pair instead: the s vs ud statement no longer holds
    text = extra_report(tmp_path, runs, _results((0, 4)), meta, figures=False)
    assert "**s vs ud is the hardest pair**: does not hold" in text and "g vs ud" not in text
    assert "ud vs g" in text
    # s vs g confusable: a pair with s in it is not the s vs ud pair
    text = extra_report(tmp_path, runs, _results((1, 4)), meta, figures=False)
    assert "**s vs ud is the hardest pair**: does not hold" in text


def test_clusters_add_most_at_high_pt_only_when_the_highest_bin_gains_most() -> None:
    assert gain_at_high_pt([0.01, 0.02, 0.05], [0.01, 0.01, 0.01]) == "holds"
    assert gain_at_high_pt([0.01, 0.02, 0.05], [0.01, 0.01, 0.03]) == "not established"  # within 2 SE
    assert gain_at_high_pt([0.01, 0.02, 0.05], [0.01, 0.01, math.nan]) == "not established"  # one seed
    # clusters hurt least at high pT: that is not "add most"
    assert gain_at_high_pt([-0.052, -0.047, -0.027], [0.01, 0.01, 0.01]) == "does not hold"
    assert gain_at_high_pt([0.01, 0.06, 0.05], [0.001, 0.001, 0.001]) == "does not hold"  # most at mid pT


def test_pair_auc_uses_only_the_two_classes() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.5, 0.4],
                      [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # class-2 jets would spoil the AUC if counted
    assert pair_auc(labels, probs, 0, 1) == 1.0


def test_roc_figure_is_drawn(tmp_path: Path) -> None:
    r = _result("transformer", 0, 2.0)
    _roc_figure(tmp_path / "roc.png", r["labels"], r["probs"], CLASSES, "t")
    assert (tmp_path / "roc.png").stat().st_size > 10_000
