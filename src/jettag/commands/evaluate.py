"""``jettag evaluate RUN [RUN ...]``: metrics, predictions and a report for trained runs.

Without ``--data`` each run is evaluated on its own held-out test split (rebuilt from its
config); with ``--data`` on that dataset (any supported format). Runs of the same model are
aggregated as mean ± std. Works under ``torchrun`` too (each rank scores a shard).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate trained runs: accuracy, AUC, rejections, report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--data", help="test dataset (default: each run's own test split)")
    p.add_argument("--which", default="best", choices=["best", "last"], help="checkpoint to evaluate")
    p.add_argument("--out", default=None, help="report directory (default <first run>/report)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run, drop_invalid_advice="set data: {drop_invalid: true} in the run's config.yaml")


def evaluate_run(run_dir: str | Path, data: str | None = None, which: str = "best", batch_size: int = 1024,
                 info: Any = None) -> dict[str, Any]:
    """Score one run on its test split (or ``data``): labels, probs, metrics, classes, model name."""
    from jettag.data.kinds import get_kind
    from jettag.data.store import JetDataError
    from jettag.evaluate.metrics import evaluate_scores
    from jettag.train import distributed as D
    from jettag.train.checkpoint import load_run_model
    from jettag.train.datasets import load_splits, read_dataset
    from jettag.train.trainer import predict_tensors

    info = info or D.DistInfo()
    model, cfg = load_run_model(run_dir, which)
    model.to(info.device)
    d = cfg["data"]
    if data is None:
        splits, classes = load_splits(cfg, ("test",))
        jets, source = splits["test"], f"{d['path']} (test split of {run_dir})"
    else:
        jets, classes = read_dataset(data, d.get("drop_invalid", False))
        source = str(data)
    if list(classes) != list(cfg["classes"]):
        raise JetDataError(f"{source}: classes {classes} differ from the run's {cfg['classes']} ({run_dir})")
    tensors = get_kind(model.input_kind).build(jets, d, model, info.device, source=source)
    probs, labels = predict_tensors(model, tensors, batch_size, info, cfg["train"].get("bf16", "auto"))
    metrics = evaluate_scores(labels, probs, classes)
    n_params = sum(p.numel() for p in model.parameters())
    return {"name": Path(run_dir).name, "model": cfg["model"]["name"], "labels": labels, "probs": probs,
            "metrics": {**metrics, "params": float(n_params)}, "classes": list(classes), "config": cfg}


def run(args: argparse.Namespace) -> int:
    from jettag.errors import UsageError
    from jettag.evaluate.report import write_predictions, write_report
    from jettag.train import distributed as D

    info = D.setup(args.device)
    results = [evaluate_run(r, args.data, args.which, args.batch_size, info) for r in args.runs]
    classes = results[0]["classes"]
    if any(r["classes"] != classes for r in results):
        raise UsageError(f"the runs have different classes: {[r['classes'] for r in results]}")
    if info.is_main:
        out = Path(args.out or Path(args.runs[0]) / "report")
        for r in results:
            write_predictions(out / "predictions" / f"{r['name']}.parquet", r["labels"], r["probs"], classes)
        files = write_report(out, results, classes, extra_columns=["params"])
        print(files["md"].read_text())
        print(json.dumps({r["name"]: r["metrics"] for r in results}, indent=1, default=float))
        print(f"report: {out}")
    D.cleanup()
    return 0
