"""``jettag demo``: generate top vs QCD jets, train MIParT, ParT, ParticleNet and a PFN side by side.

No user data is needed: the sample comes from ``cached_dataset("top", ...)`` (Pythia 8 + FastJet,
reused from the cache on later runs; needs the ``generate`` extra unless the sample is cached).
Every model trains on the same train split with its ``demo_<model>`` recipe (shipped in
``jettag/configs/``) and is evaluated on the same held-out test split; the table
(accuracy, AUC, Rej50, Rej30, parameters, training jets/s) is printed and written with ROC curves
and score plots to ``<out>/report``.

This is the ``top`` study (``jettag study top``) with one seed and the runs in ``<out>/<model>``:
a rerun reuses the finished runs, resumes a killed one, and trains anew a run whose options
changed. Scales: ``cpu`` (default) finishes in < 15 min on a 2-core laptop from an empty cache;
``gpu`` and ``full`` (300k train / 100k test jets, the seed papers' order of magnitude) are for a
GPU; ``--quick`` is a smoke test of the whole chain in under a minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex

from jettag.studies.base import SCALES
from jettag.studies.top import MODELS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="top vs QCD: train MIParT, ParT, ParticleNet, PFN side by side",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=SCALES, default="cpu", help="sample size / epochs preset")
    p.add_argument("--quick", action="store_true", help="same as --scale quick (a smoke test)")
    p.add_argument("--n-jets", type=int, default=None, help="override the number of generated jets")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated models to train")
    p.add_argument("--out", default="runs/demo", help="directory for the runs and the report")
    p.add_argument("--workers", type=int, default=2, help="generation processes")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every model")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jettag.studies import get_study, run_study

    study = get_study("top")
    scale = "quick" if args.quick else args.scale
    n_jets = args.n_jets or study.data["top"].jets[scale]
    # one seed: one run per model, named by the model, directly under --out (the demo's layout)
    runs = [dataclasses.replace(r, name=r.group) for r in study.plan(scale, [args.seed])]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    invocation = ["jettag", "demo", "--scale", scale, "--n-jets", str(n_jets), "--models", ",".join(models),
                  "--seed", str(args.seed), "--out", args.out, *(["--set", *args.set] if args.set else [])]
    done = run_study(study, args.out, scale=scale, seeds=[args.seed], only=models, runs=runs,
                     runs_dir=args.out, n_jets=n_jets, extra=args.set, workers=args.workers,
                     progress=not args.no_progress, tag="demo", retrain_changed=True,
                     invocation=shlex.join(invocation),
                     title=f"jettag demo ({scale} scale): top vs QCD, {n_jets} generated jets")
    t = done["timings"]
    print()
    print(done["files"]["md"].read_text())
    print(f"total time {t['total_s'] / 60:.1f} min (generation {t['generation_s']:.0f} s)")
    print(f"report, ROC curves and score plots: {done['report']}/ (results.md, results.tex, roc.png); "
          f"runs: {args.out}/<model>/")
    return 0
