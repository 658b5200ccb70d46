"""``jettag interpret RUN [--data PATH] --out DIR``: what a trained run looks at.

Attention models (ParT, MIParT, ...): the attention of every block and head captured in eval mode
(padded particles excluded), per-class mean heat maps, the largest weight per query against an
untrained model of the same architecture ("binary attention"), single jets drawn on the eta-phi
plane with a line for every pair above ``--threshold``, and the attention within and between
exclusive kT subjets (FastJet). Every model, attention or not: gradient x input and integrated
gradients per particle (or Lund node), averaged per class. Writes PNG figures, the npz arrays behind
them, ``stats.json`` and ``report.md`` (see ``jettag.interpret.run``). Without ``--data`` the run's
own test split is used.
"""

from __future__ import annotations

import argparse


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("interpret", help="attention maps, binary attention, subjets and saliency of a run",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory")
    p.add_argument("--data", help="dataset to interpret (default: the run's test split)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--jets", type=int, default=200,
                   help="jets per class (the first N of each class; events for an event model)")
    p.add_argument("--classes", nargs="+", help="classes to interpret (default: all)")
    p.add_argument("--threshold", type=float, default=0.5, help="attention above which a pair gets a line")
    p.add_argument("--draw", type=int, default=2, help="jets drawn on the eta-phi plane per class")
    p.add_argument("--blocks", type=_ints, help="blocks to draw, e.g. 0,4,7 (default first, middle, last)")
    p.add_argument("--heads", type=_ints, help="heads to draw (default the first 8)")
    p.add_argument("--subjets", type=int,
                   help="exclusive kT subjets for every class (default 3 for top, else 2)")
    p.add_argument("--ig-steps", type=int, default=32,
                   help="integrated gradients: quadrature nodes to start with (doubled until complete)")
    p.add_argument("--ig-max-steps", type=int, default=256, help="integrated gradients: most nodes")
    p.add_argument("--ig-tolerance", type=float, default=0.02,
                   help="integrated gradients: completeness error allowed / max(|logit - baseline|, 1)")
    p.add_argument("--ig-rule", default="gauss", choices=["gauss", "midpoint"],
                   help="integrated gradients: quadrature (Gauss-Legendre or midpoint)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--which", default="best", choices=["best", "last"], help="checkpoint")
    p.set_defaults(func=run, drop_invalid_advice="set data: {drop_invalid: true} in the run's config.yaml")


def run(args: argparse.Namespace) -> int:
    from jettag.errors import UsageError
    from jettag.interpret.run import interpret_run

    if args.jets < 1 or args.draw < 0 or args.ig_steps < 1 or not 0.0 <= args.threshold < 1.0:
        raise UsageError("--jets and --ig-steps must be >= 1, --draw >= 0, --threshold in [0, 1)")
    if args.ig_tolerance <= 0 or args.ig_max_steps < args.ig_steps:
        raise UsageError("--ig-tolerance must be > 0 and --ig-max-steps >= --ig-steps")
    stats = interpret_run(args.run, args.out, args.data, args.jets, args.classes, args.threshold, args.draw,
                          args.blocks, args.heads, args.subjets, args.ig_steps, args.batch_size,
                          which=args.which, ig_tolerance=args.ig_tolerance, ig_max_steps=args.ig_max_steps,
                          ig_rule=args.ig_rule)
    if stats.get("no_attention_reason"):
        print(f"no attention maps: {stats['no_attention_reason']}")
    if stats["saliency"].get("completeness_warning"):
        print(f"warning: {stats['saliency']['completeness_warning']}")
    print(f"interpret: {len(stats['figures'])} figures, stats.json and report.md in {args.out}")
    return 0
