"""The report of evaluated runs: tables (Markdown + LaTeX) in the seed tables' layout, plots, JSON.

Runs are grouped by model: several runs of one model (different seeds) give one table row with
mean +- std, as in the seed tables. Binary tables have the columns accuracy, AUC, Rej50, Rej30;
multi-class tables accuracy, AUC and each class's working-point rejection against the background.
Predictions of every run are written to ``predictions/<run>.parquet`` (label + one probability
column per class) so that any other figure can be made later without re-running the models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jettag.evaluate import metrics as M

PRETTY = {"acc": "Accuracy", "auc": "AUC", "rej50": "Rej50%", "rej30": "Rej30%", "params": "Params",
          "jets_per_s": "train jets/s", "epochs": "epochs"}


def write_predictions(path: Path, labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> Path:
    """``label`` and ``score_<class>`` columns (float32), one row per jet in test-set order."""
    cols = {"label": pa.array(np.asarray(labels, dtype=np.int32))}
    for k, name in enumerate(classes):
        cols[f"score_{name}"] = pa.array(np.asarray(probs[:, k], dtype=np.float32))
    table = pa.table(cols).replace_schema_metadata({"jettag": json.dumps({"classes": list(classes)})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labels, probs, classes) of a file written by ``write_predictions``."""
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(b"jettag", b"{}"))
    if "classes" not in meta:
        raise ValueError(f"{path}: not a jettag predictions file (no 'jettag' classes metadata)")
    classes = list(meta["classes"])
    labels = table.column("label").to_numpy().astype(np.int64)
    probs = np.stack([table.column(f"score_{c}").to_numpy() for c in classes], axis=1).astype(np.float64)
    return labels, probs, classes


def _fmt(key: str, mean: float, std: float | None) -> tuple[str, str]:
    """(markdown, latex) text of one cell, with a precision that suits the metric."""
    if math.isinf(mean):
        return "inf", r"$\infty$"
    if key in ("acc",):
        m, s = f"{mean:.3f}", (f"{std:.3f}" if std is not None else None)
    elif key == "auc":
        m, s = f"{mean:.4f}", (f"{std:.4f}" if std is not None else None)
    elif key == "params":
        m, s = (f"{mean / 1e6:.2f}M" if mean >= 1e6 else f"{mean / 1e3:.1f}k"), None
    elif key in ("jets_per_s", "epochs"):
        m, s = f"{mean:.0f}", None
    else:
        digits = 1 if mean < 100 else 0
        m, s = f"{mean:.{digits}f}", (f"{std:.{digits}f}" if std is not None else None)
    if s is None:
        return m, m
    return f"{m} ± {s}", f"${m} \\pm {s}$"


def make_tables(rows: dict[str, list[dict[str, float]]], columns: Sequence[str]) -> tuple[str, str]:
    """Markdown and LaTeX tables; ``rows[model] = [metrics of each run]`` -> mean ± std (n > 1)."""
    header = ["model", *(PRETTY.get(c, c) for c in columns)]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    tex = [r"\begin{tabular}{l" + "c" * len(columns) + "}", r"\hline",
           " & ".join(h.replace("%", r"\%") for h in header) + r" \\", r"\hline"]
    for model, runs in rows.items():
        agg = M.mean_std(runs)
        label = model if len(runs) == 1 else f"{model} (n={len(runs)})"
        md_cells, tex_cells = [label], [label.replace("_", r"\_")]
        for c in columns:
            if c not in agg:
                md_cells.append("-")
                tex_cells.append("-")
                continue
            mean, std = agg[c]
            a, b = _fmt(c, mean, std if len(runs) > 1 else None)
            md_cells.append(a)
            tex_cells.append(b)
        md.append("| " + " | ".join(md_cells) + " |")
        tex.append(" & ".join(tex_cells) + r" \\")
    tex += [r"\hline", r"\end{tabular}"]
    return "\n".join(md) + "\n", "\n".join(tex) + "\n"


def metric_columns(classes: Sequence[str], example: dict[str, float]) -> list[str]:
    """Table columns in the seed layout."""
    if len(classes) == 2:
        return ["acc", "auc", "rej50", "rej30"]
    return ["acc", "auc", *[k for k in example if k.startswith("rej")]]


def write_report(
    out_dir: Path,
    results: list[dict[str, Any]],
    classes: Sequence[str],
    extra_columns: Sequence[str] = (),
    title: str = "",
    meta: dict[str, Any] | None = None,
    notes: str = "",
) -> dict[str, Path]:
    """Report directory: ``results.md``, ``results.tex``, ``results.json``, ``roc.png``,
    ``summary.png`` (AUC and rejection per row, mean ± std), ``scores_<run>.png`` and for
    multi-class ``confusion_<run>_{true,pred}.png``.

    ``results`` items: ``{"name", "model", "labels", "probs", "metrics"}`` (+ extra metric keys such
    as ``params``/``jets_per_s`` inside ``metrics``); ``model`` is the table row, so runs that share
    it are aggregated. An optional ``record`` dict of an item is copied into its ``results.json``
    entry, ``meta`` into the top level of ``results.json``; ``notes`` (Markdown) follow the table.
    """
    from jettag.evaluate import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict[str, float]]] = {}
    for r in results:
        rows.setdefault(r["model"], []).append(r["metrics"])
    columns = [*metric_columns(classes, results[0]["metrics"]), *extra_columns]
    md, tex = make_tables(rows, columns)
    n_test = len(results[0]["labels"])
    head = f"# {title or 'Evaluation'}\n\nclasses: {', '.join(classes)}; test jets: {n_test}\n\n"
    files = {"md": out_dir / "results.md", "tex": out_dir / "results.tex", "json": out_dir / "results.json"}
    files["md"].write_text(head + md + (f"\n{notes.strip()}\n" if notes.strip() else ""))
    files["tex"].write_text(tex)
    aggregate = {m: M.mean_std(runs) for m, runs in rows.items()}
    summary = {
        **(meta or {}),
        "classes": list(classes),
        "n_test": n_test,
        "runs": [{"name": r["name"], "model": r["model"], "metrics": r["metrics"], **r.get("record", {})}
                 for r in results],
        "aggregate": {m: {k: list(v) for k, v in agg.items()} for m, agg in aggregate.items()},
        "n_runs": {m: len(runs) for m, runs in rows.items()},
    }
    files["json"].write_text(json.dumps(summary, indent=1, default=float))

    bkg = M.background_index(classes)
    sig = 1 if len(classes) == 2 else next(k for k in range(len(classes)) if k != bkg)
    curves = {}
    for r in results:
        labels, probs = np.asarray(r["labels"]), np.asarray(r["probs"])
        is_signal, score = M.signal_vs_background(labels, probs, sig, bkg)
        curves[r["name"]] = (is_signal.astype(int), score)
        safe = r["name"].replace("/", "_")
        files[f"scores_{safe}"] = plots.plot_scores(labels, probs, classes, out_dir / f"scores_{safe}.png",
                                                    r["name"])
        if len(classes) > 2:
            counts = M.confusion_matrix(labels, probs.argmax(1), len(classes))
            for by, what in (("true", "rows: efficiency"), ("pred", "columns: purity")):
                files[f"confusion_{safe}_{by}"] = plots.plot_confusion(
                    M.normalise_confusion(counts, by), classes, out_dir / f"confusion_{safe}_{by}.png",
                    f"{r['name']} ({what})")
    files["roc"] = plots.plot_rejection(curves, out_dir / "roc.png", f"{classes[sig]} vs {classes[bkg]}")
    shown = [c for c in columns if c == "auc" or c.startswith("rej")]
    files["summary"] = plots.plot_group_metrics(aggregate, shown, out_dir / "summary.png",
                                                {m: len(runs) for m, runs in rows.items()})
    return files
