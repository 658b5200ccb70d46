"""Figures of a ``jettag study transfer`` run (seed 003): ROC curves with their ratio to from
scratch, and background rejection at 30% and 50% signal efficiency against training-set size.

Usage: ``python benchmarks/transfer_figures.py STUDY_OUT --out benchmarks/transfer_figures``

Reads ``STUDY_OUT/report/results.json`` and each finished run's ``predictions.parquet`` (test-set
scores); writes ``roc_n<size>.png`` (one per target size: rejection against signal efficiency per
group, mean over seeds on a common efficiency grid, and below it the ratio to the from-scratch
model of the same architecture) and ``rejection_vs_size.png`` (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from jettag.evaluate.metrics import background_index, roc_curve
from jettag.evaluate.report import read_predictions
from jettag.studies.transfer import parse_group

EFF = np.linspace(0.05, 0.95, 91)  # signal efficiencies of the mean curves


def rejection_curve(run_dir: Path) -> np.ndarray:
    """1 / background efficiency at ``EFF`` of a run's test predictions (signal = not background)."""
    labels, probs, classes = read_predictions(run_dir / "predictions.parquet")
    bkg = background_index(classes)
    signal = (labels != bkg).astype(int)
    fpr, tpr, _ = roc_curve(signal, 1.0 - probs[:, bkg])
    with np.errstate(divide="ignore"):
        return 1.0 / np.interp(EFF, tpr, fpr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study_out", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    results = json.loads((args.study_out / "report" / "results.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    curves: dict[str, list[np.ndarray]] = {}
    metrics: dict[str, list[dict[str, float]]] = {}
    for run in results["runs"]:
        curves.setdefault(run["model"], []).append(rejection_curve(Path(run["run_dir"])))
        metrics.setdefault(run["model"], []).append(run["metrics"])
    parsed = {g: parse_group(g) for g in curves}
    sizes = sorted({p[3] for p in parsed.values()})
    written = []
    for n in sizes:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 8), sharex=True, height_ratios=(2, 1))
        for g, (method, model, source, size) in sorted(parsed.items()):
            if size != n:
                continue
            mean = np.mean(curves[g], axis=0)
            label = f"{method} {model}" + (f" from {source}" if source else "")
            style = {"scratch": "-", "finetune": "--", "frozen": ":"}[method]
            (line,) = top.plot(EFF, mean, style, label=label)
            ref = next((h for h, p in parsed.items() if p == ("scratch", model, None, n)), None)
            if ref is not None and method != "scratch":
                with np.errstate(divide="ignore", invalid="ignore"):
                    bottom.plot(EFF, mean / np.mean(curves[ref], axis=0), style, color=line.get_color())
        top.set_yscale("log")
        top.set_ylabel("background rejection (mean over seeds)")
        top.set_title(f"top500 target, {n} training jets")
        top.legend(fontsize=7)
        bottom.axhline(1.0, color="k", lw=0.8)
        bottom.set_ylabel("ratio to from scratch")
        bottom.set_xlabel("signal efficiency")
        fig.tight_layout()
        path = args.out / f"roc_n{n}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    keys = sorted({(p[0], p[1], p[2]) for p in parsed.values()})
    for ax, metric, eff in zip(axes, ("rej30", "rej50"), ("30%", "50%")):
        for method, model, source in keys:
            xs, ys, es = [], [], []
            for n in sizes:
                g = next((h for h, p in parsed.items() if p == (method, model, source, n)), None)
                vals = np.array([m[metric] for m in metrics.get(g, [])], dtype=float)
                vals = vals[np.isfinite(vals)]
                if len(vals):
                    xs.append(n)
                    ys.append(vals.mean())
                    es.append(vals.std(ddof=1) if len(vals) > 1 else 0.0)
            style = {"scratch": "o-", "finetune": "s--", "frozen": "^:"}[method]
            ax.errorbar(xs, ys, yerr=es, fmt=style, capsize=3,
                        label=f"{method} {model}" + (f" from {source}" if source else ""))
        ax.set_xscale("log")
        ax.set_xlabel("target training jets")
        ax.set_ylabel(f"background rejection at {eff} signal efficiency")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = args.out / "rejection_vs_size.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    print("\n".join(str(p) for p in written))


if __name__ == "__main__":
    main()
