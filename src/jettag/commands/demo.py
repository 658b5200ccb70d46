"""``jettag demo``: generate top vs QCD jets, train MIParT, ParT, ParticleNet and a PFN side by side.

No user data is needed: the sample comes from ``cached_dataset("top", ...)`` (Pythia 8 + FastJet,
reused from the cache on later runs; needs the ``generate`` extra unless the sample is cached).
Every model trains on the same train split with its ``demo_<model>`` recipe (shipped in
``jettag/configs/``) and is evaluated on the same held-out test split; the table
(accuracy, AUC, Rej50, Rej30, parameters, training jets/s) is printed and written with ROC curves
and score plots to ``<out>/report``.

Scales: ``cpu`` (default) finishes in < 15 min on a 2-core laptop from an empty cache; ``gpu``
and ``full`` (300k train / 100k test jets, the seed papers' order of magnitude) are for a GPU;
``--quick`` is a smoke test of the whole chain in about a minute.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

#: scale -> (total jets generated, epochs multiplier, extra overrides)
SCALES: dict[str, tuple[int, float, list[str]]] = {
    "quick": (200, 0.0, ["train.epochs=1", "data.max_len=20", "train.batch_size=32"]),
    "cpu": (12000, 1.0, []),
    "gpu": (100000, 3.0, ["train.batch_size=256", "data.split=[0.6,0.2,0.2]", "data.max_len=128"]),
    "full": (500000, 5.0, ["train.batch_size=256", "data.split=[0.6,0.2,0.2]", "data.max_len=128"]),
}
DEMO_MODELS = ("mipart", "part", "particlenet", "pfn")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="top vs QCD: train MIParT, ParT, ParticleNet, PFN side by side",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="sample size / epochs preset")
    p.add_argument("--quick", action="store_true", help="same as --scale quick (a smoke test)")
    p.add_argument("--n-jets", type=int, default=None, help="override the number of generated jets")
    p.add_argument("--models", default=",".join(DEMO_MODELS), help="comma-separated models to train")
    p.add_argument("--out", default="runs/demo", help="directory for the runs and the report")
    p.add_argument("--workers", type=int, default=2, help="generation processes")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every model")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jettag.commands.evaluate import evaluate_run
    from jettag.errors import UsageError
    from jettag.evaluate.report import write_report
    from jettag.train.config import load_recipe, resolve
    from jettag.train.datasets import resolve_data_path
    from jettag.train.trainer import train

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise UsageError("no models selected (--models)")
    for name in models:  # an unknown model fails now, not after the generation
        load_recipe(f"demo_{name}")
    t_start = time.perf_counter()
    scale = "quick" if args.quick else args.scale
    n_jets, epoch_mult, scale_overrides = SCALES[scale]
    n_jets = args.n_jets or n_jets
    out = Path(args.out)
    spec = f"generate:top:{n_jets}"
    print(f"[demo] top vs QCD sample: {n_jets} jets (Pythia 8 + FastJet, {args.workers} workers; "
          "cached after the first run)")
    t0 = time.perf_counter()
    data_path = resolve_data_path(spec, {"generate_workers": args.workers, "detector": "none"})
    t_gen = time.perf_counter() - t0
    print(f"[demo] sample ready in {t_gen:.0f} s: {data_path}")

    results, timings = [], {"generation_s": t_gen}
    for name in models:
        cfg = resolve(f"demo_{name}", [f"data.path={data_path}", f"train.seed={args.seed}",
                                       f"train.progress={not args.no_progress}", *scale_overrides, *args.set])
        if epoch_mult > 0 and not any(s.startswith(("train.epochs=", "epochs=")) for s in args.set):
            cfg["train"]["epochs"] = max(1, round(cfg["train"]["epochs"] * epoch_mult))
        cfg["data"]["path"] = spec  # record the reproducible spec, not the machine's cache path
        run_dir = out / name
        print(f"[demo] training {name} ({cfg['train']['epochs']} epochs) -> {run_dir}")
        t0 = time.perf_counter()
        summary = train(cfg, run_dir, overwrite=True)  # a demo rerun replaces its previous runs
        timings[f"train_{name}_s"] = time.perf_counter() - t0
        res = evaluate_run(run_dir)
        res["metrics"]["jets_per_s"] = summary["jets_per_s"]
        res["metrics"]["epochs"] = cfg["train"]["epochs"]
        res["name"] = name
        results.append(res)
        m = res["metrics"]
        print(f"[demo] {name}: acc {m['acc']:.4f} AUC {m['auc']:.4f} Rej50 {m['rej50']:.1f} "
              f"Rej30 {m['rej30']:.1f}")
    report = out / "report"
    files = write_report(report, results, results[0]["classes"],
                         extra_columns=["params", "epochs", "jets_per_s"],
                         title=f"jettag demo ({scale} scale): top vs QCD, {n_jets} generated jets")
    timings["total_s"] = time.perf_counter() - t_start
    (report / "timings.json").write_text(json.dumps(timings, indent=1))
    print()
    print(files["md"].read_text())
    print(f"total time {timings['total_s'] / 60:.1f} min (generation {t_gen:.0f} s)")
    print(f"report, ROC curves and score plots: {report}/ (results.md, results.tex, roc.png); "
          f"runs: {out}/<model>/")
    return 0
