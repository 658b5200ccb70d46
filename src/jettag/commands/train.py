"""``jettag train RECIPE [key=value ...]``: train a model from a recipe plus ``key=value`` overrides.

RECIPE is the name of a recipe shipped in the package (``jettag/configs/<RECIPE>.yaml``, listed
under ``recipe`` below; ``$JETTAG_CONFIGS`` points to another directory of recipes) or the path of
a YAML file. A data error (e.g. NaN momenta) names the file and row; ``data.drop_invalid=true``
drops such jets instead.

The whole config is checked before any data is read or generated. A run directory that already
holds a run is refused: ``--resume RUN_DIR`` continues a killed run exactly where its ``last``
checkpoint left it (overrides given then, e.g. ``epochs=30`` or ``max_steps=null``, are applied on
top of the run's config and checked again); ``--overwrite`` deletes the old run's config.yaml,
log.csv, checkpoints/, tensorboard/ and report/ first and starts afresh.
Under ``torchrun`` every rank runs this command; rank 0 writes the run directory.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a tagger from a shipped recipe with key=value overrides",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", nargs="?",
                   help=f"recipe name ({', '.join(_recipe_names())}) or a YAML path; omit with --resume")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lr=5e-4 data.path=train.parquet")
    p.add_argument("--run-dir", help="run directory (default runs/<recipe>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="resume this run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="if --run-dir already holds a run, delete its config.yaml, log.csv, checkpoints/, "
                        "tensorboard/ and report/ first (without it such a directory is refused)")
    p.set_defaults(func=run, drop_invalid_advice="pass data.drop_invalid=true")


def _recipe_names() -> list[str]:
    from jettag.train.config import config_dir

    return sorted(p.stem for p in config_dir().glob("*.yaml"))


def run(args: argparse.Namespace) -> int:
    from jettag.data.generate.cache import require_generation
    from jettag.errors import UsageError
    from jettag.train.config import apply_overrides, read_config, resolve
    from jettag.train.trainer import train

    if args.resume and args.overwrite:
        raise UsageError("--resume continues a run, --overwrite replaces one: give one of them")
    if args.resume:
        overrides = ([args.recipe] if args.recipe and "=" in args.recipe else []) + list(args.overrides)
        cfg = apply_overrides(read_config(args.resume), overrides)  # checked by train()
        run_dir = Path(args.resume)
    else:
        if not args.recipe:
            raise UsageError("give a RECIPE (or --resume RUN_DIR)")
        cfg = resolve(args.recipe, args.overrides)
        run_dir = Path(args.run_dir or f"runs/{cfg['recipe']}-{time.strftime('%Y%m%d-%H%M%S')}")
    require_generation(cfg["data"])  # a missing extra: one line before the run directory exists
    from jettag.train import distributed as D

    try:
        summary = train(cfg, run_dir, resume=bool(args.resume), overwrite=args.overwrite)
    finally:
        D.cleanup()  # leave the process group cleanly: gloo threads alive at exit abort the process
    print(json.dumps({k: v for k, v in summary.items() if k != "val"}, default=str))
    print(f"run directory: {run_dir}")
    return 0
