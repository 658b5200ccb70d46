"""``jettag generate RECIPE --jets N --out DIR``: make a labelled jet sample with Pythia 8 + FastJet."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from jettag.data.generate.recipes import RECIPES

    lines = [f"  {name:9s} {r.description}" for name, r in RECIPES.items()]
    p = subparsers.add_parser(
        "generate",
        help="generate labelled jets with Pythia 8 + FastJet (canonical parquet + manifest.json)",
        description="Generate a jet sample balanced over the recipe's classes. Recipes:\n"
        + "\n".join(lines)
        + "\n\nA run interrupted for any reason is finished by running the same command again. Needs the "
        "'generate' extra: pip install 'jettag[generate]' (checked before anything is written).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", choices=sorted(RECIPES), metavar="RECIPE", help="one of: " + ", ".join(RECIPES))
    p.add_argument(
        "--jets",
        type=int,
        required=True,
        help="total jets over all classes and shards (events for event recipes such as hh4b)",
    )
    p.add_argument("--out", required=True, help="output directory (created; resumed if it holds this run)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (does not change the jets)")
    p.add_argument(
        "--seed", type=int, default=0, help="run seed; Pythia seeds derive from (seed, shard, class, chunk)"
    )
    p.add_argument(
        "--detector",
        choices=("none", "simple"),
        default="none",
        help="none = particle level; simple = parametrised tracker + calorimeter (docs/generation.md)",
    )
    p.add_argument("--shard", type=int, default=None, help="make only shard K (e.g. $SLURM_ARRAY_TASK_ID)")
    p.add_argument("--num-shards", type=int, default=1, help="number of shards M the sample is split into")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="jets (events for hh4b) per class per chunk file: the unit of resuming and of the hh4b mass "
        "scan (default 1000)",
    )
    mpi = p.add_mutually_exclusive_group()
    mpi.add_argument(
        "--mpi", dest="mpi", action="store_true", default=None, help="multi-parton interactions on"
    )
    mpi.add_argument("--no-mpi", dest="mpi", action="store_false", help="multi-parton interactions off")
    p.add_argument("--quiet", action="store_true",
                   help="no progress report (a bar on a terminal, otherwise a line every 10 s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from jettag.data.generate.runner import DEFAULT_CHUNK_SIZE, generate
    from jettag.errors import UsageError

    if args.jets <= 0 or args.workers <= 0 or args.num_shards <= 0:
        raise UsageError("--jets, --workers and --num-shards must be positive")
    manifest = generate(
        args.recipe,
        args.jets,
        args.out,
        workers=args.workers,
        seed=args.seed,
        detector=args.detector,
        shard=args.shard,
        num_shards=args.num_shards,
        chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE,
        mpi=args.mpi,
        progress=not args.quiet,
    )
    summary = {
        name: {"jets": c["jets"], "events": c["generated_events"], "sigma_mb": c["cross_section_mb"]}
        for name, c in manifest["per_class"].items()
    }
    print(
        json.dumps(
            {
                "out": str(args.out),
                "complete": manifest["complete"],
                "wall_time_s": round(manifest["wall_time_s"], 1),
                "classes": summary,
            },
            indent=1,
        )
    )
    return 0
