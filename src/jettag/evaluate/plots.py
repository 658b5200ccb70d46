"""Figures of an evaluation report: ROC curves, score distributions, confusion matrices, metrics per row.

ROC curves are drawn as the seed papers draw them: background rejection (1/FPR, log scale) against
signal efficiency, one line per run group. Figures are ``matplotlib.figure.Figure`` objects saved
directly (no pyplot state, no global backend switch), so reports are made on headless machines
and importing jettag never changes a user's matplotlib backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from jettag.evaluate.metrics import roc_curve


def plot_rejection(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "") -> Path:
    """``curves[name] = (labels, scores)``: background rejection vs signal efficiency, log y."""
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        ok = fpr > 0
        ax.plot(tpr[ok], 1.0 / fpr[ok], label=name)
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel("signal efficiency (TPR)")
    ax.set_ylabel("background rejection 1/FPR")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_scores(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], path: Path, title: str = ""
) -> Path:
    """Distribution of each class's score for jets of each true class (binary: the signal score)."""
    probs = np.asarray(probs)
    cols = [1] if probs.shape[1] == 2 else list(range(probs.shape[1]))
    fig = Figure(figsize=(4.5 * len(cols), 3.8))
    axes = fig.subplots(1, len(cols), squeeze=False)
    bins = np.linspace(0, 1, 41)
    for ax, c in zip(axes[0], cols):
        for k, name in enumerate(classes):
            sel = labels == k
            if sel.any():
                ax.hist(probs[sel, c], bins=bins, histtype="step", density=True, label=f"true {name}")
        ax.set_yscale("log")
        ax.set_xlabel(f"p({classes[c]})")
        ax.legend(fontsize="x-small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str) -> Path:
    """A normalised confusion matrix with the values written in the cells."""
    n = len(classes)
    fig = Figure(figsize=(1.0 + 0.6 * n, 0.8 + 0.6 * n))
    ax = fig.subplots()
    im = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(n), classes, fontsize="small")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize="x-small",
                    color="white" if matrix[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize="small")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_group_metrics(
    aggregate: Mapping[str, Mapping[str, tuple[float, float]]],
    keys: Sequence[str],
    path: Path,
    n_runs: Mapping[str, int],
) -> Path:
    """One panel per metric: each table row's mean with its std over runs as an error bar."""
    names = list(aggregate)
    width = (1.5 + 0.7 * len(names)) * len(keys)
    fig = Figure(figsize=(width, 3.8))
    axes = fig.subplots(1, len(keys), squeeze=False)
    x = np.arange(len(names))
    for ax, key in zip(axes[0], keys):
        mean = np.array([aggregate[n][key][0] if key in aggregate[n] else np.nan for n in names])
        std = np.array([aggregate[n][key][1] if key in aggregate[n] else np.nan for n in names])
        ax.errorbar(x, mean, yerr=std, fmt="o", capsize=4)
        ax.set_xticks(x, [f"{n}\n(n={n_runs[n]})" for n in names], fontsize="x-small")
        ax.set_ylabel(key)
        ax.grid(True, axis="y", alpha=0.3)
        if key.startswith("rej") and np.all(np.isfinite(mean)) and np.all(mean > 0):
            ax.set_yscale("log")
    fig.suptitle("mean ± std over runs (seeds)", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
