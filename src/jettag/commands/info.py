"""``jettag info RUN``: model, classes, parameters, FLOPs per jet, training state and best metrics.

FLOPs are counted by ``jettag.models.profile.flops_per_jet`` on one jet of ``--length`` real particles
(128 by default, the length at which the seed papers quote FLOPs); a multiply-add counts 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters, FLOPs/jet and status of a trained run",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory")
    p.add_argument("--length", type=int, default=128, help="particles per jet for the FLOP count")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jettag.models.profile import count_parameters, flops_per_jet
    from jettag.train.checkpoint import load_run_model, read_meta

    model, cfg = load_run_model(args.run)
    n_params = count_parameters(model)
    flops = flops_per_jet(model, args.length, batch_size=1)
    ck = Path(args.run) / "checkpoints"
    out = {
        "run": str(args.run),
        "model": cfg["model"]["name"],
        "classes": cfg["classes"],
        "feature_set": cfg["data"]["feature_set"],
        "params": n_params,
        f"flops_per_jet_at_{args.length}": flops,
        "recipe": cfg.get("recipe"),
    }
    for which in ("last", "best"):
        if (ck / f"{which}.json").is_file():
            meta = read_meta(ck, which)
            out[which] = {k: meta[k] for k in ("epoch", "step", "val") if k in meta}
    print(json.dumps(out, indent=1, default=float))
    return 0
