"""``jettag evaluate RUN [RUN ...]``: metrics, predictions and a report for trained runs.

Without ``--data`` each run is evaluated on its own held-out test split (rebuilt from its
config); with ``--data`` on that dataset (any supported format). Runs of the same model are
aggregated as mean ± std. Works under ``torchrun`` too (each rank scores a shard).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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


def run(args: argparse.Namespace) -> int:
    from jettag.errors import UsageError
    from jettag.evaluate.report import write_predictions, write_report
    from jettag.evaluate.scoring import evaluate_run
    from jettag.train import distributed as D

    info = D.setup(args.device)
    try:
        results = [evaluate_run(r, args.data, args.which, args.batch_size, info) for r in args.runs]
        classes = results[0]["classes"]
        if any(r["classes"] != classes for r in results):
            raise UsageError(f"the runs have different classes: {[r['classes'] for r in results]}")
        if info.is_main:
            out = Path(args.out or Path(args.runs[0]) / "report")
            for r in results:
                path = out / "predictions" / f"{r['name']}.parquet"
                write_predictions(path, r["labels"], r["probs"], classes)
            files = write_report(out, results, classes, extra_columns=["params"])
            print(files["md"].read_text())
            print(json.dumps({r["name"]: r["metrics"] for r in results}, indent=1, default=float))
            print(f"report: {out}")
    finally:
        D.cleanup()  # the backend's threads joined before interpreter exit
    return 0
