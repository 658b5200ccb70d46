"""``jettag predict RUN INPUT --out scores.parquet``: class probabilities for every jet of a file.

INPUT is any format ``jettag.data.formats`` reads. The output parquet has one row per jet in input
order: ``label`` (the file's label, copied for convenience) and ``score_<class>`` (softmax
probabilities), with the class names in the ``jettag`` metadata key.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="score the jets of a file with a trained run",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory")
    p.add_argument("input", nargs="+", help="input file(s)")
    p.add_argument("--out", required=True, help="output parquet file")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--drop-invalid", action="store_true", help="drop empty / NaN jets instead of failing")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run, drop_invalid_advice="pass --drop-invalid")


def run(args: argparse.Namespace) -> int:
    from jettag.data.dataset import read_dataset
    from jettag.data.kinds import get_kind
    from jettag.evaluate.report import write_predictions
    from jettag.evaluate.scoring import predict_tensors
    from jettag.train import distributed as D
    from jettag.train.checkpoint import load_run_model

    info = D.DistInfo(device=D.pick_device(args.device))
    model, cfg = load_run_model(args.run, args.which)
    model.to(info.device)
    jets, _ = read_dataset(args.input, args.drop_invalid)
    d = cfg["data"]
    tensors = get_kind(model.input_kind).build(jets, d, model, info.device, source=str(args.input))
    probs, labels = predict_tensors(model, tensors, args.batch_size, info, cfg["train"].get("bf16", "auto"),
                                    progress=True)
    out = write_predictions(Path(args.out), labels, probs, cfg["classes"])
    print(f"{len(labels)} jets scored -> {out}")
    return 0
