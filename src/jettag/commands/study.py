"""``jettag study NAME``: run a named study (models x seeds x data sizes x options), then report it.

A study trains its runs into ``<out>/runs/<run>`` (in dependency order: a fine-tuning run after
the run it starts from), scores each on its test split and writes ``<out>/report/``: the table
with mean ± std over seeds (``results.md``, ``results.tex``), ROC curves, score plots,
``summary.png``, ``results.json`` (per-run metrics and per-row mean/std) and ``commands.sh`` (the
exact ``jettag train`` command of every run). Rerunning the same command reuses finished runs
and resumes a killed one. ``--quick`` is a smoke test of the whole study; ``--scale`` grows it.
``jettag study --list`` lists the studies; docs/studies.md describes them.
"""

from __future__ import annotations

import argparse
import shlex

from jettag.studies.base import SCALES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run a named study (models x seeds x data) and write its report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="study name (see --list)")
    p.add_argument("--list", action="store_true", help="list the studies and exit")
    p.add_argument("--scale", choices=SCALES, default="cpu", help="sample size / epochs / seeds preset")
    p.add_argument("--quick", action="store_true", help="same as --scale quick (a smoke test)")
    p.add_argument("--seeds", type=int, default=None, help="train seeds 0..N-1 (default: the scale's)")
    p.add_argument("--only", default=None, metavar="GROUP,...",
                   help="comma-separated table rows to run (for top: models)")
    p.add_argument("--n-jets", type=int, default=None, help="override the number of generated jets")
    p.add_argument("--data", action="append", default=[], metavar="NAME=PATH",
                   help="use this dataset instead of generating the study's dataset NAME (repeatable)")
    p.add_argument("--out", default=None, help="runs and report directory (default runs/<name>-<scale>)")
    p.add_argument("--workers", type=int, default=2, help="generation processes")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jettag.studies import get_study, list_studies, run_study

    if args.list:
        for study in list_studies():
            print(f"{study.name:<12} {study.title} (scales: {', '.join(study.scales)})")
        return 0
    if not args.name:
        raise SystemExit("jettag study: give a study NAME (jettag study --list shows them)")
    scale = "quick" if args.quick else args.scale
    if args.seeds is not None and args.seeds < 1:
        raise SystemExit(f"jettag study: --seeds must be >= 1, got {args.seeds}")
    data_paths = {}
    for item in args.data:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"jettag study: --data {item!r} is not NAME=PATH")
        data_paths[name] = path
    out = args.out or f"runs/{args.name}-{scale}"
    only = [g.strip() for g in args.only.split(",") if g.strip()] if args.only is not None else None
    invocation = ["jettag", "study", args.name, "--scale", scale, "--out", out]
    if args.seeds is not None:
        invocation += ["--seeds", str(args.seeds)]
    if only is not None:
        invocation += ["--only", ",".join(only)]
    if args.n_jets:
        invocation += ["--n-jets", str(args.n_jets)]
    for name, path in data_paths.items():
        invocation += ["--data", f"{name}={path}"]
    if args.set:
        invocation += ["--set", *args.set]
    study = get_study(args.name)
    seeds = range(args.seeds) if args.seeds is not None else None
    done = run_study(study, out, scale=scale, seeds=seeds, only=only, n_jets=args.n_jets,
                     data_paths=data_paths, extra=args.set, workers=args.workers,
                     progress=not args.no_progress, invocation=shlex.join(invocation))
    print()
    print(done["files"]["md"].read_text())
    t = done["timings"]
    print(f"total time {t['total_s'] / 60:.1f} min (generation {t['generation_s']:.0f} s)")
    print(f"report: {done['report']}/ (results.md, results.json, commands.sh, roc.png, summary.png); "
          f"runs: {out}/runs/<run>/")
    return 0
