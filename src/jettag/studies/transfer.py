"""The ``transfer`` study: seed 003's transfer learning to top tagging at pT > 500 GeV (``top500``).

Sources (each pre-trained once per seed, ``report=False``): LundNet-5 on ``top2tev``, LundNet-5 on
``wtag``, LundNet-3 on ``top2tev``, ParticleNet on ``top2tev``, all with the ``top500_<model>``
recipe (Adam, step schedule) on their own data. Targets: ``top500`` at several training-set sizes
(``data.max_jets`` of one generated pool, split 0.8/0.1/0.1), each size and seed trained

* from scratch (``scratch``), for each model,
* fine-tuned from each source: all weights, lr / 10 (lr / 3 from the W source),
* frozen from each source: the feature extractor frozen, the dense head retrained
  (``jettag.train.transfer`` says which modules per model),

and all scored on one separate test sample (``data.test``: top500 generated with seed 1), so that
every size and method sees the same test jets. Groups are named ``<method> <model>[@<source>]
n=<training jets>``; the verdict tabulates rejection against size, the timing table
(ms per sample per epoch from each run's logged training jets/s) and a verdict on each claim of
seed 003. ``benchmarks/transfer_figures.py`` draws the ROC ratios and rejection-vs-size figures.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence

from jettag.studies.base import Data, RunSpec, Scale, Study, judge, mean_se
from jettag.train.transfer import FINETUNE_LR_FACTOR, transfer_overrides

#: (source name, model, source dataset, fine-tuning lr factor): seed 003's four sources
SOURCES = (
    ("lundnet5@top2tev", "lundnet5", "top2tev", FINETUNE_LR_FACTOR),
    ("lundnet5@wtag", "lundnet5", "wtag", 3.0),
    ("lundnet3@top2tev", "lundnet3", "top2tev", FINETUNE_LR_FACTOR),
    ("particlenet@top2tev", "particlenet", "top2tev", FINETUNE_LR_FACTOR),
)
MODELS = tuple(dict.fromkeys(m for _, m, _, _ in SOURCES))
#: the target recipes' lr (all ``top500_<model>`` recipes train with Adam at 1e-3)
TARGET_LR = 1.0e-3
#: fraction of ``data.max_jets`` that trains (``data.split`` = 0.8/0.1/0.1)
TRAIN_FRACTION = 0.8

#: per scale: target training-set sizes, and the separate test sample
SIZES = {"quick": (100, 400), "cpu": (200, 600, 2000), "gpu": (50_000, 200_000, 1_000_000),
         "full": (10_000, 100_000, 1_000_000)}
TEST = {"quick": "generate:top500:400:1", "cpu": "generate:top500:2000:1", "gpu": "generate:top500:100000:1",
        "full": "generate:top500:100000:1"}

GROUP = re.compile(r"^(?P<method>scratch|finetune|frozen) (?P<model>\w+)(@(?P<source>\w+))? n=(?P<n>\d+)$")


def group_name(method: str, model: str, source: str | None, n: int) -> str:
    """``<method> <model>[@<source data>] n=<training jets>``, e.g. ``frozen lundnet5@wtag n=500``."""
    return f"{method} {model}{'@' + source if source else ''} n={n}"


def parse_group(group: str) -> tuple[str, str, str | None, int]:
    """(method, model, source data or None, training jets) of a group name."""
    m = GROUP.match(group)
    if m is None:
        raise ValueError(f"not a transfer group name: {group!r}")
    return m["method"], m["model"], m["source"], int(m["n"])


def plan_sizes(sizes: Sequence[int], test: str, seeds: Sequence[int]) -> list[RunSpec]:
    """Sources, then per size and seed: from scratch per model, fine-tuned and frozen per source."""
    runs: list[RunSpec] = []
    test_ov = (f"data.test={test}",)
    for s in seeds:
        for src, model, data, _ in SOURCES:
            runs.append(RunSpec(name=f"source-{src.replace('@', '-')}-s{s}", recipe=f"top500_{model}",
                                data=data, group=f"source {src}", seed=s, report=False))
    for n in sizes:
        size_ov = (f"data.max_jets={round(n / TRAIN_FRACTION)}", *test_ov)
        for s in seeds:
            for model in MODELS:
                g = group_name("scratch", model, None, n)
                runs.append(RunSpec(name=f"scratch-{model}-n{n}-s{s}", recipe=f"top500_{model}",
                                    data="top500", group=g, seed=s, overrides=size_ov))
            for src, model, data, factor in SOURCES:
                for method in ("finetune", "frozen"):
                    runs.append(RunSpec(
                        name=f"{method}-{src.replace('@', '-')}-n{n}-s{s}", recipe=f"top500_{model}",
                        data="top500", group=group_name(method, model, data, n), seed=s,
                        overrides=(*size_ov, *transfer_overrides(method, TARGET_LR, factor)),
                        init_from=f"source-{src.replace('@', '-')}-s{s}"))
    return runs


def plan(scale: str, seeds: Sequence[int]) -> list[RunSpec]:
    """The scale's sizes and test sample (``plan_sizes``)."""
    return plan_sizes(SIZES[scale], TEST[scale], seeds)


def _stats(values: list[float]) -> tuple[float, float, int]:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan, math.nan, 0
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else math.nan, len(vals)


def _fmt(values: list[float], digits: int = 1) -> str:
    mean, std, n = _stats(values)
    if n == 0:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")


def timing_rows(rows: dict[str, list[dict[str, float]]]) -> dict[tuple[str, str], list[float]]:
    """ms per training sample per epoch (1000 / the run's training jets/s), per (model, method)."""
    out: dict[tuple[str, str], list[float]] = {}
    for group, runs in rows.items():
        method, model, _, _ = parse_group(group)
        for r in runs:
            jps = r.get("jets_per_s", math.nan)
            if math.isfinite(jps) and jps > 0:
                out.setdefault((model, method), []).append(1000.0 / jps)
    return out


#: "nearly full performance": at least this fraction of the from-scratch rejection on the large set
NEARLY_FULL = 0.9


def _ratio(a: tuple[float, float, int], b: tuple[float, float, int]) -> tuple[float, float]:
    """a / b of two ``mean_se`` results, with its propagated standard error."""
    r = a[0] / b[0]
    return r, abs(r) * math.sqrt((a[1] / a[0]) ** 2 + (b[1] / b[0]) ** 2)


def _claim_lines(rows: dict[str, list[dict[str, float]]], sizes: list[int], metric: str
                 ) -> list[str]:
    """One line per claim of seed 003 with its verdict, from the numbers only (differences against
    two standard errors of the mean over seeds)."""
    mean = {g: mean_se([r[metric] for r in runs]) for g, runs in rows.items()}

    def m(method: str, model: str, source: str | None, n: int) -> tuple[float, float, int]:
        return mean.get(group_name(method, model, source, n), (math.nan, math.nan, 0))

    def ok(*stats: tuple[float, float, int]) -> bool:
        return all(math.isfinite(x[0]) and x[0] > 0 for x in stats)

    lines = []
    small, large = sizes[0], sizes[-1]
    lbl = metric.replace("rej", "Rej")
    full = m("scratch", "lundnet5", None, large)
    ft = m("finetune", "lundnet5", "top2tev", small)
    if ok(full, ft):
        err = math.hypot(ft[1], NEARLY_FULL * full[1])
        lines.append(f"- *Fine-tuning reaches nearly full performance with {large // small}x less data*: "
                     f"LundNet-5 fine-tuned from top2tev on {small} jets reaches {lbl} {ft[0]:.1f}, "
                     f"{ft[0] / full[0]:.2f} of from scratch on {large} jets ({full[0]:.1f}); 'nearly full' "
                     f"read as at least {NEARLY_FULL:.0%} of it: "
                     f"{judge(ft[0] - NEARLY_FULL * full[0], err)}.")
    fz = {mod: (m("frozen", mod, "top2tev", small), m("scratch", mod, None, small))
          for mod in ("lundnet5", "particlenet")}
    if all(ok(a, b) for a, b in fz.values()):
        (l5f, l5s), (pnf, pns) = fz["lundnet5"], fz["particlenet"]
        r5, rp = _ratio(l5f, l5s), _ratio(pnf, pns)
        lines.append(f"- *LundNet-frozen holds up better than ParticleNet-frozen*: frozen / from scratch "
                     f"{lbl} on {small} jets: LundNet-5 {r5[0]:.2f} ± {r5[1]:.2f} "
                     f"({l5f[0]:.1f} / {l5s[0]:.1f}), "
                     f"ParticleNet {rp[0]:.2f} ± {rp[1]:.2f} ({pnf[0]:.1f} / {pns[0]:.1f}): "
                     f"{judge(r5[0] - rp[0], math.hypot(r5[1], rp[1]))}.")
    w, scratch = m("finetune", "lundnet5", "wtag", small), m("scratch", "lundnet5", None, small)
    if ok(w, scratch):
        lines.append(f"- *Transfer from W to top works*: LundNet-5 fine-tuned from wtag on {small} jets "
                     f"{lbl} {w[0]:.1f} vs from scratch {scratch[0]:.1f} (gain {w[0] - scratch[0]:+.1f} ± "
                     f"{math.hypot(w[1], scratch[1]):.1f}): "
                     f"{judge(w[0] - scratch[0], math.hypot(w[1], scratch[1]))}.")
    return lines


def verdict(rows: dict[str, list[dict[str, float]]]) -> str:
    """Rejection against training-set size, the timing table, and the claims of seed 003."""
    parsed = {g: parse_group(g) for g in rows}
    sizes = sorted({p[3] for p in parsed.values()})
    lines = []
    for metric, eff in (("rej30", "30%"), ("rej50", "50%")):
        lines += [f"**Background rejection at {eff} signal efficiency against training-set size** "
                  "(mean ± std over seeds)", "",
                  "| method | model | source | " + " | ".join(f"n={n}" for n in sizes) + " |",
                  "|---|---|---|" + "---|" * len(sizes)]
        keys = dict.fromkeys((p[0], p[1], p[2]) for p in parsed.values())
        for method, model, source in keys:
            cells = [_fmt([r[metric] for r in rows.get(group_name(method, model, source, n), [])])
                     for n in sizes]
            lines.append(f"| {method} | {model} | {source or '-'} | " + " | ".join(cells) + " |")
        lines.append("")
    timing = timing_rows(rows)
    lines += ["**Training time** (1000 / the logged training jets/s of each run, mean ± std over all its "
              "runs; totals for 30 epochs as seed 003)", "",
              "| model | method | ms / sample / epoch | 30 epochs on 1e5 samples | 30 epochs on 1e6 "
              "samples |",
              "|---|---|---|---|---|"]
    for (model, method), ms in sorted(timing.items()):
        mean = statistics.fmean(ms)
        lines.append(f"| {model} | {method} | {_fmt(ms, 2)} | {mean * 30 * 1e5 / 3.6e6:.2f} h | "
                     f"{mean * 30 * 1e6 / 3.6e6:.1f} h |")
    lines.append("")
    lines += ["**Claims of seed 003**", "", *_claim_lines(rows, sizes, "rej30")]
    ft = timing.get(("lundnet5", "finetune"), [])
    fr = timing.get(("lundnet5", "frozen"), [])
    if ft and fr:
        a, b = mean_se(ft), mean_se(fr)
        lines.append(f"- *Frozen models are cheaper still*: LundNet-5 {b[0]:.2f} ms/sample/epoch frozen vs "
                     f"{a[0]:.2f} fine-tuned (per run, over every size and seed): "
                     f"{judge(a[0] - b[0], math.hypot(a[1], b[1]))}.")
    return "\n".join(lines)


_BIG = ("train.batch_size=256",)
#: seed 003: 500k + 500k training jets = 80% of 1.25M
_GPU_JETS = {"gpu": 1_250_000, "full": 1_250_000}

STUDY = Study(
    name="transfer",
    title="seed 003: transfer of LundNet-5/3 and ParticleNet from top2tev and W to top500",
    data={
        "top2tev": Data(recipe="top2tev", jets={"quick": 300, "cpu": 2000, **_GPU_JETS}),
        "wtag": Data(recipe="wtag", jets={"quick": 300, "cpu": 2000, **_GPU_JETS}),
        "top500": Data(recipe="top500", jets={"quick": 500, "cpu": 2500, **_GPU_JETS}),
    },
    scales={
        "quick": Scale(epochs=0.0, overrides=("train.epochs=1", "data.max_len=32", "train.batch_size=32")),
        # batch 32, not the recipes' 256: a few hundred training jets must still make optimizer steps
        "cpu": Scale(epochs=0.0, overrides=("train.epochs=3", "data.max_len=48", "train.batch_size=32"),
                     seeds=3),
        "gpu": Scale(epochs=1.0, overrides=_BIG, seeds=3),
        "full": Scale(epochs=1.0, overrides=_BIG, seeds=3),
    },
    plan=plan,
    columns=("params", "epochs", "jets_per_s"),
    verdict=verdict,
)
