"""``jettag info RUN``: model, classes, parameters, FLOPs per jet, training state and best metrics.

FLOPs are counted with ``torch.utils.flop_counter`` on one jet padded to ``--length`` particles
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


def count_flops(model, num_features: int, length: int) -> int:
    """FLOPs of one forward pass on a single jet with ``length`` real particles."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    g = torch.Generator().manual_seed(0)
    pt = torch.rand(1, length, generator=g) * 50 + 1
    eta, phi = torch.randn(1, length, generator=g) * 0.3, torch.randn(1, length, generator=g) * 0.3
    vectors = torch.stack(
        [pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta), pt * torch.cosh(eta)], 1
    )
    features = torch.randn(1, num_features, length, generator=g)
    points = torch.stack([eta, phi], 1)
    mask = torch.ones(1, 1, length, dtype=torch.bool)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(points, features, vectors, mask)
    return int(counter.get_total_flops())


def run(args: argparse.Namespace) -> int:
    from jettag.data.features import feature_names
    from jettag.train.checkpoint import load_run_model, read_meta

    model, cfg = load_run_model(args.run)
    n_params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, len(feature_names(cfg["data"]["feature_set"])), args.length)
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
