"""Tagging metrics: ROC curve, AUC, background rejection at fixed signal efficiency.

Conventions (the ones the seed tables use, so that our figures are comparable to theirs):

- The ROC curve is built like scikit-learn's ``roc_curve``: scores sorted in decreasing order, one
  point per *distinct* score, so tied scores form one diagonal segment and the AUC (trapezoidal
  rule over that curve) equals ``sklearn.metrics.roc_auc_score`` exactly, ties included.
- ``Rej_X = 1 / FPR`` at ``TPR = X``, where FPR at X is read off the ROC curve by linear
  interpolation between the two ROC points that bracket X (the first point with ``TPR >= X`` and
  the one before it). Linear interpolation is what ``np.interp`` on the ROC curve gives in the
  ParT/MIParT evaluation scripts; with millions of test jets it makes no difference, with a few
  thousand it removes the step-function jitter. ``FPR = 0`` gives ``inf`` (no background jet
  passes): it is reported, never clipped, so that a too-small test set is visible.
- Multi-class (JetClass): each class X is scored against the background class B only, on jets of
  those two classes, with ``p_X / (p_X + p_B)``; working points are Rej50 except Hqql (Rej99) and
  Tbl (Rej99.5). The multi-class AUC is the macro average of one-vs-rest AUCs (scikit-learn's
  ``roc_auc_score(..., multi_class="ovr", average="macro")``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

#: signal efficiency of the standard JetClass working point per class (default 0.5)
JETCLASS_WORKING_POINTS: dict[str, float] = {"Hqql": 0.99, "Tbl": 0.995}
BACKGROUND_NAMES = ("qcd", "background", "bkg")


#: the validation metrics a run can select its best checkpoint by, and whether higher is better
#: (``train.best_metric``; a multi-class run's rej50/rej30 are ``summary_rejection``)
BEST_METRICS: dict[str, bool] = {"loss": False, "acc": True, "auc": True, "rej50": True, "rej30": True}


def _check_binary(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels ({labels.shape}) and scores ({scores.shape}) differ in length")
    if not np.isfinite(scores).all():
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise ValueError(f"scores contain NaN/inf (first at jet {bad})")
    uniq = np.unique(labels)
    if not np.isin(uniq, (0, 1)).all():
        raise ValueError(f"binary labels must be 0/1, got values {uniq[:10].tolist()}")
    if len(uniq) < 2:
        raise ValueError("ROC needs both signal (1) and background (0) jets; only one class present")
    return labels.astype(bool), scores


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) with one point per distinct score plus the origin, as scikit-learn.

    Jets with ``score >= threshold`` are called signal. Intermediate collinear points are kept
    (unlike sklearn's ``drop_intermediate``): they do not change the AUC or the interpolation.
    """
    y, s = _check_binary(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[last_of_value]
    fps = (last_of_value + 1) - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    thresholds = np.r_[np.inf, s[last_of_value]]
    return fpr, tpr, thresholds


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (trapezoidal; tied scores count one half, as scikit-learn)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return roc_area(fpr, tpr)


def roc_area(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Trapezoidal area under a ROC curve given as (fpr, tpr) points."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) * 0.5))


def fpr_at_tpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """False-positive rate at signal efficiency ``target``, linearly interpolated on the ROC curve."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"signal efficiency must be in (0, 1], got {target}")
    idx = int(np.searchsorted(tpr, target, side="left"))
    if tpr[idx] == target or idx == 0:
        return float(fpr[idx])
    t0, t1, f0, f1 = tpr[idx - 1], tpr[idx], fpr[idx - 1], fpr[idx]
    return float(f0 + (f1 - f0) * (target - t0) / (t1 - t0))


def rejection(labels: np.ndarray, scores: np.ndarray, efficiency: float) -> float:
    """Background rejection 1/FPR at the given signal efficiency (``inf`` when FPR is 0)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return rejection_at(fpr, tpr, efficiency)


def rejection_at(fpr: np.ndarray, tpr: np.ndarray, efficiency: float) -> float:
    """Background rejection 1/FPR of a ROC curve at the given signal efficiency (``inf`` at FPR 0)."""
    f = fpr_at_tpr(fpr, tpr, efficiency)
    return math.inf if f == 0 else 1.0 / f


def binary_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """accuracy, AUC, Rej50, Rej30 of a two-class tagger.

    ``probs`` is either the signal probability ``(N,)`` or the softmax output ``(N, 2)`` (column 1 =
    signal); accuracy is the fraction of jets whose argmax class is the true one.
    """
    probs = np.asarray(probs, dtype=np.float64)
    score = probs[:, 1] if probs.ndim == 2 else probs
    labels = np.asarray(labels).ravel()
    pred = (probs.argmax(axis=1) if probs.ndim == 2 else (score > 0.5)).astype(labels.dtype)
    fpr, tpr, _ = roc_curve(labels, score)  # once for all three figures
    return {
        "acc": float(np.mean(pred == labels)),
        "auc": roc_area(fpr, tpr),
        "rej50": rejection_at(fpr, tpr, 0.5),
        "rej30": rejection_at(fpr, tpr, 0.3),
    }


def background_index(classes: Sequence[str]) -> int:
    """The background class of a multi-class dataset: the one called QCD (JetClass), else class 0."""
    for i, name in enumerate(classes):
        stripped = name.lower().removeprefix("label_")
        if stripped in BACKGROUND_NAMES:
            return i
    return 0


def working_point(name: str) -> float:
    """Signal efficiency of the standard working point of a class (``label_`` prefix ignored)."""
    return JETCLASS_WORKING_POINTS.get(name.removeprefix("label_"), 0.5)


def multiclass_metrics(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], background: int | None = None
) -> dict[str, float]:
    """accuracy, macro one-vs-rest AUC, and per class ``rej{WP}_{name}`` against the background.

    Each class X is compared with the background B on the jets of those two classes only, with the
    score ``p_X / (p_X + p_B)`` (the JetClass convention); the working point is the class's
    standard one (``working_point``). Classes without test jets are skipped.
    """
    labels = np.asarray(labels).ravel().astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(labels), len(classes)):
        raise ValueError(f"probs shape {probs.shape} != (n_jets={len(labels)}, n_classes={len(classes)})")
    bkg = background_index(classes) if background is None else background
    out: dict[str, float] = {"acc": float(np.mean(probs.argmax(axis=1) == labels))}
    present = [k for k in range(len(classes)) if 0 < np.sum(labels == k) < len(labels)]
    aucs = [auc(labels == k, probs[:, k]) for k in present]
    out["auc"] = float(np.mean(aucs)) if aucs else math.nan
    for k, name in enumerate(classes):
        if k == bkg or not (labels == k).any() or not (labels == bkg).any():
            continue
        is_signal, score = signal_vs_background(labels, probs, k, bkg)
        wp = working_point(name)
        out[f"rej{_wp_tag(wp)}_{name.removeprefix('label_')}"] = rejection(is_signal, score, wp)
    return out


def signal_vs_background(labels: np.ndarray, probs: np.ndarray, signal: int, background: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The jets of classes ``signal`` and ``background`` only: (is_signal, score p_S / (p_S + p_B)).

    The JetClass convention for a one-class working point of a multi-class tagger; a jet with
    p_S + p_B = 0 scores 0.5.
    """
    sel = (labels == signal) | (labels == background)
    ps, pb = probs[sel, signal], probs[sel, background]
    denom = ps + pb
    score = np.divide(ps, denom, out=np.full_like(ps, 0.5), where=denom > 0)
    return labels[sel] == signal, score


def summary_rejection(labels: np.ndarray, probs: np.ndarray, classes: list[str], efficiency: float) -> float:
    """One background rejection of a multi-class model: the geometric mean over the signal classes
    of Rej at ``efficiency`` of class X against the background B (score p_X / (p_X + p_B), on jets
    of X and B, as ``multiclass_metrics``). The geometric mean weighs each class's
    relative gain equally (rejections of JetClass classes span four orders of magnitude). Classes
    without validation jets are skipped; NaN when none is left."""
    bkg = background_index(classes)
    logs = []
    for k in range(len(classes)):
        if k == bkg or not (labels == k).any() or not (labels == bkg).any():
            continue
        is_signal, score = signal_vs_background(labels, probs, k, bkg)
        logs.append(math.log(rejection(is_signal, score, efficiency)))
    return math.exp(sum(logs) / len(logs)) if logs else math.nan


def _wp_tag(wp: float) -> str:
    """0.5 -> '50', 0.995 -> '99.5'."""
    return f"{wp * 100:g}"


def evaluate_scores(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """The standard metrics of a run: binary set for two classes, JetClass set for more."""
    if len(classes) == 2:
        return binary_metrics(labels, probs)
    return multiclass_metrics(labels, probs, classes)


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``C[true, predicted]`` (int64)."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    pred = np.asarray(pred, dtype=np.int64).ravel()
    flat = np.bincount(labels * n_classes + pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def normalise_confusion(counts: np.ndarray, by: str) -> np.ndarray:
    """Row-normalised (``by="true"``: efficiency, rows sum to 1) or column-normalised (``"pred"``:
    purity, columns sum to 1) confusion matrix; seed 001 shows both because with unequal class
    sizes one alone hides either the mistags or the contamination. Empty rows/columns stay 0."""
    counts = np.asarray(counts, dtype=np.float64)
    axis = {"true": 1, "pred": 0}[by]
    total = counts.sum(axis=axis, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)


def mean_std(results: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and sample standard deviation (ddof=1; 0 for one run) of each metric over runs."""
    keys = [k for k in results[0] if all(k in r for r in results)]
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in results], dtype=np.float64)
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        out[k] = (float(np.mean(vals)), std)
    return out
