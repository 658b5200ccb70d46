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


# ---------------------------------------------------------------- exact values of the less-used branches


def test_binary_metrics_from_the_signal_column_alone() -> None:
    """1-D ``probs`` (the signal probability): the prediction is ``score > 0.5`` (0.5 itself is
    background), and every figure equals the one from the equivalent (N, 2) softmax."""
    y = np.array([1, 0, 1, 0, 1, 0, 0, 1])
    s = np.array([0.9, 0.5, 0.5, 0.2, 0.7, 0.6, 0.1, 0.8])
    one = M.binary_metrics(y, s)
    # predictions 1 0 0 0 1 1 0 1 -> right on jets 0, 1, 3, 4, 6, 7
    assert one["acc"] == 6 / 8  # exact: a ratio of small integers
    assert one["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)  # summation order only
    # signal sorted 0.9 0.8 0.7 0.5; background 0.6 0.5 0.2 0.1. Rej50: TPR .5 reached at 0.8, no
    # background above -> FPR 0 -> inf. Rej30 too.
    assert one["rej50"] == math.inf and one["rej30"] == math.inf
    two = M.binary_metrics(y, np.stack([1 - s, s], axis=1))
    assert two["auc"] == one["auc"] and two["rej50"] == one["rej50"]
    # argmax of (0.5, 0.5) is column 0: the same background call for the tie
    assert two["acc"] == one["acc"]


def test_binary_rejections_at_both_working_points() -> None:
    """Rej50 and Rej30 against the tie-free reference (each key checked separately, so swapping
    them or the working points is caught)."""
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(400, dtype=int), np.zeros(400, dtype=int)]
    s = np.r_[rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 400)]
    p = 1 / (1 + np.exp(-s))
    m = M.binary_metrics(y, p)
    r50 = _reference_rejection(p[:400], p[400:], 0.5)
    r30 = _reference_rejection(p[:400], p[400:], 0.3)
    assert r30 > r50 * 1.2  # the two working points differ enough to tell apart
    assert m["rej50"] == pytest.approx(r50, rel=1e-12)  # the same division, reordered sums only
    assert m["rej30"] == pytest.approx(r30, rel=1e-12)
    assert M.evaluate_scores(y, np.stack([1 - p, p], 1), ["QCD", "top"]) == M.binary_metrics(
        y, np.stack([1 - p, p], 1))


def test_signal_vs_background_zero_sum_scores_one_half() -> None:
    labels = np.array([0, 1, 2, 1, 0])
    probs = np.array([[0.0, 0.0, 1.0], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    is_sig, score = M.signal_vs_background(labels, probs, 1, 0)
    np.testing.assert_array_equal(is_sig, [False, True, True, False])
    # p_S / (p_S + p_B) exactly where the sum is > 0, 0.5 where it is 0 (bit-exact: same division)
    np.testing.assert_array_equal(score, [0.5, 0.6 / 0.8, 0.5, 0.5])


def test_multiclass_skips_absent_classes_and_uses_the_given_background() -> None:
    """A class without test jets gives no Rej key and is left out of the macro AUC; an explicit
    ``background`` replaces the QCD look-up."""
    classes = ["label_QCD", "label_Hbb", "label_Hqql", "label_Tbl"]
    rng = np.random.default_rng(2)
    labels = rng.choice([0, 1, 3], 600)  # no Hqql jet
    logits = rng.normal(0, 1, (600, 4)) + 1.2 * np.eye(4)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    out = M.multiclass_metrics(labels, probs, classes)
    assert set(out) == {"acc", "auc", "rej50_Hbb", "rej99.5_Tbl"}
    want_auc = np.mean([roc_auc_score(labels == k, probs[:, k]) for k in (0, 1, 3)])
    assert out["auc"] == pytest.approx(want_auc, abs=1e-12)  # summation order only
    assert out["acc"] == pytest.approx(np.mean(probs.argmax(1) == labels), abs=0)
    # Hbb as the background: keys for QCD and Tbl, scored against class 1
    out_b = M.multiclass_metrics(labels, probs, classes, background=1)
    assert set(out_b) == {"acc", "auc", "rej50_QCD", "rej99.5_Tbl"}
    sig, bkg = probs[labels == 0], probs[labels == 1]
    want = _reference_rejection(sig[:, 0] / (sig[:, 0] + sig[:, 1]), bkg[:, 0] / (bkg[:, 0] + bkg[:, 1]), 0.5)
    assert out_b["rej50_QCD"] == pytest.approx(want, rel=1e-12)
    assert M.evaluate_scores(labels, probs, classes) == out
    # a class with a single jet still counts in the macro AUC (as in scikit-learn)
    one = np.r_[labels[:200], 2]
    got = M.multiclass_metrics(one, probs[:201], classes)["auc"]
    want_one = np.mean([roc_auc_score(one == k, probs[:201, k]) for k in (0, 1, 2, 3)])
    assert got == pytest.approx(want_one, abs=1e-12)  # summation order only
    # no background jet at all: no Rej key; one class only: no AUC
    only_sig = M.multiclass_metrics(np.array([1, 1, 3]), probs[:3], classes)
    assert set(only_sig) == {"acc", "auc"}
    assert math.isnan(M.multiclass_metrics(np.array([1, 1]), probs[:2], classes)["auc"])


def test_summary_rejection_is_the_geometric_mean_over_signal_classes() -> None:
    classes = ["label_Hbb", "label_QCD", "label_Tbl"]  # background found by name, not position
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 3, 900)
    logits = rng.normal(0, 1, (900, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    rej = []
    for k in (0, 2):
        sig, bkg = probs[labels == k], probs[labels == 1]
        ratio_sig, ratio_bkg = sig[:, k] / (sig[:, k] + sig[:, 1]), bkg[:, k] / (bkg[:, k] + bkg[:, 1])
        rej.append(_reference_rejection(ratio_sig, ratio_bkg, 0.3))
    assert rej[0] != pytest.approx(rej[1], rel=0.05)  # geometric and arithmetic means differ
    want = math.sqrt(rej[0] * rej[1])
    assert M.summary_rejection(labels, probs, classes, 0.3) == pytest.approx(want, rel=1e-12)
    # a class without jets is skipped; no signal class left -> NaN
    keep = labels != 2
    assert M.summary_rejection(labels[keep], probs[keep], classes, 0.3) == pytest.approx(rej[0], rel=1e-12)
    assert math.isnan(M.summary_rejection(np.ones(5, dtype=int), probs[:5], classes, 0.3))


def test_background_names_and_working_point_tags() -> None:
    assert M.background_index(["sig", "Background"]) == 1
    assert M.background_index(["label_bkg", "sig"]) == 0 and M.background_index(["x", "label_bkg"]) == 1
    assert M.background_index(["x", "QCDlike"]) == 0  # the whole name must match
    assert M.working_point("label_Hqql") == 0.99 and M.working_point("Hbb") == 0.5
    assert M._wp_tag(0.995) == "99.5" and M._wp_tag(0.5) == "50"


def test_confusion_counts_and_empty_rows() -> None:
    """Exact counts with a class never seen (row and column of zeros), normalised both ways."""
    labels = np.array([0, 0, 1, 1, 1, 0])
    pred = np.array([0, 1, 1, 1, 0, 0])
    counts = M.confusion_matrix(labels, pred, 3)
    np.testing.assert_array_equal(counts, [[2, 1, 0], [1, 2, 0], [0, 0, 0]])
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(M.normalise_confusion(counts, "true"),
                                  [[2 / 3, 1 / 3, 0], [1 / 3, 2 / 3, 0], [0, 0, 0]])
    np.testing.assert_array_equal(M.normalise_confusion(counts, "pred"),
                                  [[2 / 3, 1 / 3, 0], [1 / 3, 2 / 3, 0], [0, 0, 0]])
    asym = M.confusion_matrix(np.array([0, 0, 0, 1]), np.array([0, 1, 1, 1]), 2)
    np.testing.assert_array_equal(M.normalise_confusion(asym, "true"), [[1 / 3, 2 / 3], [0, 1]])
    np.testing.assert_array_equal(M.normalise_confusion(asym, "pred"), [[1, 2 / 3], [0, 1 / 3]])
    with pytest.raises(KeyError):
        M.normalise_confusion(asym, "rows")
    # labels and predictions read back as floats (a predictions file) count the same
    np.testing.assert_array_equal(M.confusion_matrix(labels.astype(np.float64), pred.astype(np.float32), 3),
                                  counts)


def test_mean_std_one_run_and_partial_keys() -> None:
    out = M.mean_std([{"auc": 0.9, "acc": 0.8}])
    assert out == {"auc": (0.9, 0.0), "acc": (0.8, 0.0)}
    three = M.mean_std([{"auc": 1.0, "x": 1.0}, {"auc": 2.0}, {"auc": 4.0, "x": 3.0}])
    assert set(three) == {"auc"}  # a key missing from one run is dropped
    # sample std (ddof 1) of 1, 2, 4: mean 7/3, sum of squares 14/3 over 2
    assert three["auc"][0] == pytest.approx(7 / 3, abs=1e-15)
    assert three["auc"][1] == pytest.approx(math.sqrt(7 / 3), rel=1e-12)


def test_efficiency_on_a_roc_point_reads_its_fpr_exactly() -> None:
    """Background 10 10, then a tied block (signal + three background) at 9, then signal + background
    at 0: ROC points (0, 0) (2/6, 0) (5/6, 1/2) (1, 1). TPR 0.5 is a point of the curve, so FPR is
    read off as 5/6 exactly; interpolating from (2/6, 0) would give 2/6 + 3/6 = 0.8333333333333333,
    one ulp below 5/6 (bit-exact comparison on purpose)."""
    y = np.array([0, 0, 1, 0, 0, 0, 1, 0])
    s = np.array([10, 10, 9, 9, 9, 9, 0, 0], dtype=np.uint8)
    fpr, tpr, thr = M.roc_curve(y, s)
    assert fpr.tolist() == [0.0, 2 / 6, 5 / 6, 1.0] and tpr.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert thr.dtype == np.float64 and thr.tolist() == [math.inf, 10.0, 9.0, 0.0]
    assert M.fpr_at_tpr(fpr, tpr, 0.5) == 5 / 6
    # unsigned integer scores are ranked as numbers (negating a uint8 wraps: -0 would rank first)
    assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s.astype(float)), abs=1e-12)
