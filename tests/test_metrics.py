"""Metrics against independent references: scikit-learn, the Gaussian analytic ROC, hand-built cases."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import roc_auc_score

from jettag.evaluate import metrics as M


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=5000)
    # rounded scores: many ties, which sklearn counts one half
    s = np.round(rng.normal(y * 0.7, 1.0), 1)
    assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_edge_cases() -> None:
    assert M.auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert M.auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert M.auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    with pytest.raises(ValueError, match="both signal"):
        M.auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        M.auc([0, 1], [0.1, float("nan")])


@pytest.mark.parametrize("eff", [0.5, 0.3])
def test_rejection_gaussian_analytic(eff: float) -> None:
    """Signal N(2,1), background N(0,1): cut c = 2 + z_(1-eff), FPR = 1 - Phi(c)."""
    rng = np.random.default_rng(7)
    n = 1_000_000
    y = np.r_[np.ones(n), np.zeros(n)]
    s = np.r_[rng.normal(2.0, 1.0, n), rng.normal(0.0, 1.0, n)]
    nd = NormalDist()
    cut = 2.0 + nd.inv_cdf(1 - eff)
    expected = 1.0 / (1.0 - nd.cdf(cut))
    assert M.rejection(y, s, eff) == pytest.approx(expected, rel=0.04)


def test_rejection_linear_interpolation_exact() -> None:
    # 4 signal, 4 background; ROC points at TPR 0.25 steps; TPR 0.3 lies between (fpr .25, tpr .25)
    # and (fpr .25, tpr .5)? build a case where the bracket has different FPRs
    y = np.array([1, 0, 1, 1, 0, 1, 0, 0])
    s = np.array([8, 7, 6, 5, 4, 3, 2, 1], dtype=float)
    # points: (0,0) (0,.25) (.25,.25) (.25,.5) (.25,.75) (.5,.75) (.5,1) ...
    assert M.rejection(y, s, 0.25) == math.inf
    assert M.rejection(y, s, 0.5) == pytest.approx(4.0)
    # between (0,.25) and (.25,.25) the TPR does not move; first point with TPR>=0.3 is (.25,.5)
    # preceded by (.25,.25): FPR stays 0.25
    assert M.rejection(y, s, 0.3) == pytest.approx(4.0)
    # TPR 0.875 between (.5,.75) and (.5,1.0): FPR 0.5
    assert M.rejection(y, s, 0.875) == pytest.approx(2.0)
    # tied block: scores equal for one signal and one background -> diagonal segment
    y2 = np.array([1, 1, 0, 0])
    s2 = np.array([3.0, 2.0, 2.0, 1.0])
    # points (0,0) (0,.5) (.5,1) (1,1): TPR .75 -> FPR .25 by interpolation on the diagonal
    assert M.rejection(y2, s2, 0.75) == pytest.approx(4.0)


def test_multiclass_working_points_constructed() -> None:
    classes = ["label_QCD", "label_Hbb", "label_Hqql", "label_Tbl"]
    # 4 jets of each class; probabilities built so that p_X/(p_X+p_QCD) ranks are known
    labels = np.repeat(np.arange(4), 4)
    probs = np.full((16, 4), 0.1)
    # QCD jets: Hbb ratio scores 0.1..0.4 relative to QCD prob 0.6
    probs[0:4, 0] = 0.6
    probs[0:4, 1] = [0.1, 0.2, 0.3, 0.9]  # one QCD jet looks very Hbb-like
    # Hbb jets
    probs[4:8, 0] = 0.1
    probs[4:8, 1] = [0.8, 0.7, 0.6, 0.05]
    probs[8:12, 2] = 0.7
    probs[8:12, 0] = [0.05, 0.1, 0.15, 0.2]
    probs[12:16, 3] = 0.7
    probs[12:16, 0] = 0.05
    probs /= probs.sum(axis=1, keepdims=True)
    out = M.multiclass_metrics(labels, probs, classes)
    # Hbb vs QCD scores r = p1/(p1+p0): QCD: .1/.7,.2/.8,.3/.9,.9/1.5 = .143,.25,.333,.6
    # Hbb: .8/.9,.7/.8,.6/.7,.05/.15 = .889,.875,.857,.333 -> top 2 Hbb above all QCD: TPR .5 at FPR 0
    assert out["rej50_Hbb"] == math.inf
    # Hqql at 99%: needs all 4 Hqql (r = .7/.75...) > every QCD r (p2/(p2+p0) = .1/.7 = .143) -> FPR 0
    assert out["rej99_Hqql"] == math.inf
    assert set(out) == {"acc", "auc", "rej50_Hbb", "rej99_Hqql", "rej99.5_Tbl"}
    # make one QCD jet score high for Tbl: FPR at 99.5% = interpolation between ROC points
    probs2 = probs.copy()
    probs2[0, 3] = 50.0
    probs2 /= probs2.sum(axis=1, keepdims=True)
    out2 = M.multiclass_metrics(labels, probs2, classes)
    # Tbl vs QCD: 4 Tbl jets ratio .7/.75=.933; QCD jet 0 ratio ~.98 (above), others .1/.7 (below)
    # ROC: (0,0) (.25,0) (.25,1) (1,1): TPR .995 -> FPR .25 -> rej 4
    assert out2["rej99.5_Tbl"] == pytest.approx(4.0)
    ovr = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert out["auc"] == pytest.approx(ovr, abs=1e-12)
    assert out["acc"] == pytest.approx(np.mean(probs.argmax(1) == labels))


def test_binary_metrics_and_confusion() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 2000)
    p1 = 1 / (1 + np.exp(-rng.normal((y - 0.5) * 3, 1)))
    probs = np.stack([1 - p1, p1], axis=1)
    m = M.binary_metrics(y, probs)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p1), abs=1e-12)
    assert m["acc"] == pytest.approx(np.mean((p1 > 0.5) == y))
    pred = probs.argmax(1)
    counts = M.confusion_matrix(y, pred, 2)
    np.testing.assert_array_equal(counts, sk_confusion(y, pred))
    np.testing.assert_allclose(M.normalise_confusion(counts, "true"), sk_confusion(y, pred, normalize="true"))
    np.testing.assert_allclose(M.normalise_confusion(counts, "pred"), sk_confusion(y, pred, normalize="pred"))


def test_mean_std() -> None:
    out = M.mean_std([{"auc": 0.9, "rej30": 10}, {"auc": 0.92, "rej30": 14}])
    assert out["auc"][0] == pytest.approx(0.91)
    assert out["rej30"] == pytest.approx((12.0, np.std([10, 14], ddof=1)))
