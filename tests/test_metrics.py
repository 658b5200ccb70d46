"""Metrics against independent references: scikit-learn, the Gaussian analytic ROC, hand-built cases."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy.special import ndtri
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
    """Signal N(2,1), background N(0,1): cut c = 2 + z_(1-eff), FPR = 1 - Phi(c).

    The scores are the n-point quantile grids of the two Gaussians (not random draws), so the
    empirical CDFs differ from the true ones by at most 1/n: FPR is off by <= 1/n absolute, the cut
    by <= 1/(n pdf(z)); at n = 100k and eff 0.3 (FPR 5.8e-3) that is < 0.2% relative, hence rel=5e-3.
    """
    n = 100_000
    grid = ndtri((np.arange(n) + 0.5) / n)
    y = np.r_[np.ones(n), np.zeros(n)]
    s = np.r_[grid + 2.0, grid]
    nd = NormalDist()
    cut = 2.0 + nd.inv_cdf(1 - eff)
    expected = 1.0 / (1.0 - nd.cdf(cut))
    assert M.rejection(y, s, eff) == pytest.approx(expected, rel=5e-3)


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
    """Hand-built scores for which ``p_X / (p_X + p_QCD)`` and ``p_X`` alone give different rejections.

    Rows are (p_QCD, p_Hbb, p_Tbl); four jets of each class. The third class moves probability
    between the rows so that the two-class ratio reorders the jets relative to the raw ``p_X``.
    """
    classes = ["label_QCD", "label_Hbb", "label_Tbl"]
    labels = np.repeat(np.arange(3), 4)
    probs = np.array([
        [0.50, 0.48, 0.02], [0.80, 0.15, 0.05], [0.10, 0.15, 0.75], [0.04, 0.06, 0.90],  # QCD
        [0.05, 0.90, 0.05], [0.368, 0.45, 0.182], [0.30, 0.20, 0.50], [0.60, 0.10, 0.30],  # Hbb
        [0.01, 0.01, 0.98], [0.05, 0.00, 0.95], [0.02, 0.50, 0.48], [0.10, 0.15, 0.75],  # Tbl
    ])  # fmt: skip
    out = M.multiclass_metrics(labels, probs, classes)
    assert set(out) == {"acc", "auc", "rej50_Hbb", "rej99.5_Tbl"}
    # Hbb vs QCD, ratio: Hbb .947 .55 .4 .143, QCD .49 .158 .6 .6 -> ROC (0,.25) (.5,.25) (.5,.5):
    # TPR .5 at FPR .5 -> Rej50 = 2. (p_Hbb alone: Hbb .9 .45, QCD .48 above .45 -> FPR .25 -> 4)
    assert out["rej50_Hbb"] == pytest.approx(2.0, rel=1e-12)
    # Tbl vs QCD, ratio: Tbl .99 .96 .95 .882, QCD .957 and .882 (a tie with the 4th Tbl jet: one
    # diagonal ROC segment (.25,.75)->(.5,1)) -> FPR at .995 = .25 + .25 * .245/.25 = .495.
    # (p_Tbl alone: QCD .9 sits between the 2nd and 3rd Tbl jets, ROC (.5,.75)->(.5,1) -> Rej 2)
    assert out["rej99.5_Tbl"] == pytest.approx(1 / 0.495, rel=1e-12)
    ovr = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert out["auc"] == pytest.approx(ovr, abs=1e-12)
    assert out["acc"] == pytest.approx(7 / 12)  # argmax right for QCD 1,2; Hbb 1,2; Tbl 1,2,3
    assert [M.working_point(c) for c in ("label_Hbb", "label_Hqql", "Tbl")] == [0.5, 0.99, 0.995]
    assert M.background_index(["Hbb", "label_QCD", "Tbl"]) == 1 and M.background_index(["a", "b"]) == 0


def _reference_rejection(sig: np.ndarray, bkg: np.ndarray, eff: float) -> float:
    """1/FPR for continuous (tie-free) scores: the cut sits on the ceil(eff * n_sig)-th highest
    signal score (the first ROC point with TPR >= eff; without ties the point before it has the same
    FPR, so interpolation changes nothing) and FPR is the fraction of background above that cut."""
    cut = np.sort(sig)[::-1][math.ceil(eff * len(sig) - 1e-9) - 1]
    fpr = np.mean(bkg > cut)
    return math.inf if fpr == 0 else 1.0 / fpr


def test_multiclass_rejection_uses_two_class_ratio() -> None:
    """Random softmax outputs of five classes: every Rej equals the ratio-score reference and differs
    from what the raw class probability would give (so the test can tell the two apart)."""
    classes = ["label_QCD", "label_Hbb", "label_Hqql", "label_Tbl", "label_Wqq"]
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 5, 3000)
    logits = rng.normal(0.0, 1.0, (3000, 5)) + 1.5 * np.eye(5)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    out = M.multiclass_metrics(labels, probs, classes)
    for k, name in enumerate(classes[1:], start=1):
        wp = M.working_point(name)
        sig, bkg = probs[labels == k], probs[labels == 0]
        ratio_sig, ratio_bkg = sig[:, k] / (sig[:, k] + sig[:, 0]), bkg[:, k] / (bkg[:, k] + bkg[:, 0])
        want = _reference_rejection(ratio_sig, ratio_bkg, wp)
        raw = _reference_rejection(sig[:, k], bkg[:, k], wp)
        key = f"rej{wp * 100:g}_{name.removeprefix('label_')}"
        assert out[key] == pytest.approx(want, rel=1e-12), key
        assert raw != pytest.approx(want, rel=0.01), key  # the raw score would be caught
    assert out["auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"), abs=1e-12)


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
