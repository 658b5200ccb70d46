"""``jettag models``: the registered models with parameter count and FLOPs per jet."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list the models with parameters and FLOPs per jet")
    p.add_argument("--features", default="kin", help="feature set (kin, kinpid, full) or an input width")
    p.add_argument("--classes", type=int, default=2, help="number of classes (default 2)")
    p.add_argument("--length", type=int, default=128, help="jet length for the FLOP count (default 128)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (faster)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from jettag.models import create_model, feature_dim, list_models
    from jettag.models.profile import count_parameters, flops_per_jet

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    features: str | int = int(args.features) if str(args.features).isdigit() else args.features
    dim = feature_dim(features)
    width = max(len(n) for n in list_models())
    print(f"{'model':<{width}} {'parameters':>12} {'MFLOPs/jet':>12}   ({dim} input features, "
          f"{args.classes} classes, FLOPs at {args.length} particles)")
    for name in list_models():
        model = create_model(name, num_classes=args.classes, features=features)
        flops = "-" if args.no_flops else f"{flops_per_jet(model, args.length) / 1e6:.1f}"
        print(f"{name:<{width}} {count_parameters(model):>12,} {flops:>12}")
    return 0
