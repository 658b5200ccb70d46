"""Metrics layer: bad scores and labels are refused naming the jet, the shape or the value."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jettag.evaluate import metrics
from jettag.evaluate.report import read_predictions

LABELS = np.array([0, 1, 0, 1, 1])
SCORES = np.array([0.1, 0.9, 0.2, 0.8, 0.7])


@pytest.mark.parametrize(("labels", "scores", "pattern"), [
    (LABELS, SCORES[:4], r"^labels \(\(5,\)\) and scores \(\(4,\)\) differ in length$"),
    (LABELS, np.array([0.1, 0.9, np.nan, 0.8, np.inf]), r"^scores contain NaN/inf \(first at jet 2\)$"),
    (np.array([0, 1, 2, 1, 0]), SCORES, r"^binary labels must be 0/1, got values \[0, 1, 2\]$"),
    (np.ones(5, dtype=int), SCORES, r"^ROC needs both signal \(1\) and background \(0\) jets; only one"),
])
def test_binary_inputs_refused_naming_the_problem(labels: np.ndarray, scores: np.ndarray,
                                                  pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        metrics.roc_curve(labels, scores)


@pytest.mark.parametrize("target", [0.0, 1.5, -0.2])
def test_efficiency_outside_unit_interval_refused(target: float) -> None:
    fpr, tpr, _ = metrics.roc_curve(LABELS, SCORES)
    with pytest.raises(ValueError, match=rf"^signal efficiency must be in \(0, 1\], got {target}$"):
        metrics.fpr_at_tpr(fpr, tpr, target)


@pytest.mark.parametrize("shape", [(5, 3), (4, 2), (10,)])
def test_multiclass_probs_shape_refused(shape: tuple[int, ...]) -> None:
    probs = np.full(shape, 0.5)
    pattern = rf"^probs shape {re.escape(str(shape))} != \(n_jets=5, n_classes=2\)$"
    with pytest.raises(ValueError, match=pattern):
        metrics.multiclass_metrics(LABELS, probs, ["QCD", "top"])


def test_predictions_file_without_metadata_named(tmp_path) -> None:
    path = tmp_path / "pred.parquet"
    pq.write_table(pa.table({"label": [0, 1]}), path)
    with pytest.raises(ValueError, match=r"pred\.parquet: not a jettag predictions file \(no 'jettag' class"):
        read_predictions(path)
