"""The ``scaling`` study: seed 000's "performance on different sizes of JetClass" on generated jets.

ParticleNet, ParT and MIParT-L (their ``top_<model>`` recipes, ``full`` features: kinematics, PID
and track impact parameters, as JetClass) each train on three (or more) generated ``jetclass``
sets about 5x apart in size (``jetclass_1``, ``jetclass_2``, ... : one generated set per size, split
0.8/0.1/0.1 with the test part unused) and are all scored on one separate test sample
(``data.test=generate:jetclass:<n>:1``, another generator seed), so every size and model sees the
same test jets. Sets above ``data.stream_above`` jets (2M) stream into training (``data.streaming``
"auto"), so the gpu and full scales never hold the larger sets in memory.

The table has the seed's columns (accuracy, macro AUC, Rej50 for Hbb, Hcc, Hgg, H4q, Tbqq, Wqq, Zqq,
Rej99 for Hqql, Rej99.5 for Tbl; ``evaluate.metrics.multiclass_metrics``); groups are named
``<model> n=<training jets>``. ``fit_power_law`` fits L(D) = L_inf + B / D^beta to the error
(1 - accuracy, 1 - AUC) of each model against its training size; ``figures`` draws the scaling plot
(metric against training size, per model, log x, with the fit) and ``verdict`` judges seed 000's
claims from the numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jettag.studies.base import Data, RunSpec, Scale, Study, judge, mean_se

#: (model, pretty name, recipe)
MODELS = (("particlenet", "ParticleNet", "top_particlenet"), ("part", "ParT", "top_part"),
          ("mipart_l", "MIParT-L", "top_mipart_l"))
TRAIN_FRACTION = 0.8
#: generated jets per size (training jets = 0.8 x), per scale; then the separate test sample
SIZES = {"quick": (40, 200, 1000), "cpu": (200, 1000, 5000),
         "gpu": (500_000, 2_500_000, 12_500_000), "full": (2_500_000, 12_500_000, 125_000_000)}
TEST = {"quick": 250, "cpu": 2500, "gpu": 500_000, "full": 2_000_000}
#: epochs of every run per scale (the recipes' 15-20 epochs at gpu/full)
EPOCHS = {"quick": 1, "cpu": 3}

GROUP = re.compile(r"^(?P<model>[\w-]+) n=(?P<n>\d+)$")


def group_name(pretty: str, n_train: int) -> str:
    """``ParT n=10000``: the model and its number of training jets."""
    return f"{pretty} n={n_train}"


def parse_group(group: str) -> tuple[str, int]:
    """(pretty model name, training jets) of a group name."""
    m = GROUP.match(group)
    if m is None:
        raise ValueError(f"not a scaling group name: {group!r}")
    return m["model"], int(m["n"])


def plan(scale: str, seeds: Sequence[int]) -> list[RunSpec]:
    """Every model at every size with every seed, scored on one test sample."""
    runs = []
    test = f"data.test=generate:jetclass:{TEST[scale]}:1"
    for i, n in enumerate(SIZES[scale], start=1):
        n_train = round(n * TRAIN_FRACTION)
        for s in seeds:
            for model, pretty, rec in MODELS:
                ov = ("data.feature_set=full", test)
                if scale in EPOCHS:
                    ov += (f"train.epochs={EPOCHS[scale]}",)
                runs.append(RunSpec(name=f"{model}-n{n_train}-s{s}", recipe=rec, data=f"jetclass_{i}",
                                    group=group_name(pretty, n_train), seed=s, overrides=ov))
    return runs


def fit_power_law(sizes: Sequence[float], losses: Sequence[float], betas: np.ndarray | None = None
                  ) -> dict[str, float]:
    """Least-squares fit of ``L(D) = L_inf + B / D^beta`` with ``L_inf >= 0``, ``B >= 0``, ``beta > 0``.

    For each ``beta`` of a log grid (0.01 to 3) the model is linear in (L_inf, B), solved exactly;
    the ``beta`` of least squared residual wins. ``B = 0`` (no decrease with D) gives ``beta`` NaN.
    Returns ``{"L_inf", "B", "beta", "rss", "dof"}`` (dof = points - 3; with three sizes the curve
    passes through the points and L_inf is an extrapolation with no check). Needs >= 2 sizes.
    """
    d = np.asarray(sizes, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    ok = np.isfinite(d) & np.isfinite(y) & (d > 0)
    d, y = d[ok], y[ok]
    if len(np.unique(d)) < 2:
        raise ValueError(f"a power-law fit needs at least 2 distinct sizes, got {d.tolist()}")
    betas = np.geomspace(0.01, 3.0, 600) if betas is None else betas
    best = {"L_inf": float(np.mean(y)), "B": 0.0, "beta": math.nan,
            "rss": float(np.sum((y - np.mean(y)) ** 2))}
    for beta in betas:
        x = d ** -beta
        a = np.stack([np.ones_like(x), x], axis=1)
        (l_inf, b), *_ = np.linalg.lstsq(a, y, rcond=None)
        if l_inf < 0:  # an error rate is never negative: the best fit with L_inf = 0
            l_inf, b = 0.0, float(x @ y / (x @ x))
        if b <= 0:
            continue
        rss = float(np.sum((l_inf + b * x - y) ** 2))
        if rss < best["rss"] - 1e-18:
            best = {"L_inf": float(l_inf), "B": float(b), "beta": float(beta), "rss": rss}
    best["dof"] = float(len(d) - 3)
    return best


Curve = list[tuple[int, float, float, int]]


def curves(rows: dict[str, list[dict[str, float]]], metric: str) -> dict[str, Curve]:
    """Per model: (training jets, mean, standard error, n seeds) of ``metric``, by increasing size."""
    out: dict[str, Curve] = {}
    for group, runs in rows.items():
        model, n = parse_group(group)
        out.setdefault(model, []).append((n, *mean_se([r.get(metric, math.nan) for r in runs])))
    return {m: sorted(v) for m, v in out.items()}


def _diff(a: tuple[float, float, int], b: tuple[float, float, int]) -> tuple[float, float]:
    """(a - b, standard error of the difference); error NaN with fewer than two seeds."""
    err = math.sqrt(a[1] ** 2 + b[1] ** 2) if a[2] > 1 and b[2] > 1 else math.nan
    return a[0] - b[0], err


def _sig(d: tuple[float, float]) -> str:
    if not math.isfinite(d[1]):
        return "one seed: no spread to judge by"
    return f"{d[0]:+.4f} ± {d[1]:.4f}, {'more' if abs(d[0]) > 2 * d[1] else 'less'} than two standard errors"


def verdict(rows: dict[str, list[dict[str, float]]]) -> str:
    """The fits per model, and seed 000's three scaling claims judged from the numbers."""
    acc, auc = curves(rows, "acc"), curves(rows, "auc")
    lines = ["**Fit of the error L(D) = L_inf + B / D^beta per model** (D = training jets; "
             "L = 1 - accuracy and 1 - macro AUC, seed means)", "",
             "| model | sizes | 1-acc: L_inf | B | beta | 1-AUC: L_inf | B | beta |",
             "|---|---|---|---|---|---|---|---|"]
    floor_at_zero = []  # (model, metric) whose fitted L_inf sits at its bound 0
    for model in acc:
        d = [p[0] for p in acc[model]]
        row = [model, ", ".join(str(n) for n in d)]
        for name, cur in (("1-acc", acc), ("1-AUC", auc)):
            pts = [(p[0], 1.0 - p[1]) for p in cur[model] if math.isfinite(p[1])]
            if len({p[0] for p in pts}) < 2:
                row += ["-", "-", "-"]
                continue
            f = fit_power_law([p[0] for p in pts], [p[1] for p in pts])
            beta = "no decrease" if math.isnan(f["beta"]) else f"{f['beta']:.2f}"
            row += [f"{f['L_inf']:.4f}", f"{f['B']:.3g}", beta]
            if f["L_inf"] == 0.0 and f["B"] > 0.0:
                floor_at_zero.append(f"{model} {name}")
        lines.append("| " + " | ".join(row) + " |")
    n_sizes = {len(v) for v in acc.values()}
    if n_sizes and max(n_sizes) <= 3:
        lines.append("\nWith three sizes a three-parameter curve can pass through the points, and L_inf is "
                     "then an extrapolation that nothing here checks.")
    if floor_at_zero:
        lines.append(f"Where L_inf sits at its bound 0 ({', '.join(floor_at_zero)}), the best curve with "
                     "L_inf >= 0 is the pure power law B / D^beta and it misses the points: the error falls "
                     "faster at the largest size than a power law continues, so no floor (saturation) is "
                     "visible at these sizes.")
    lines += ["", "**Claims of seed 000** (accuracy; differences ± their standard error over seeds)", ""]
    # every model improves with data
    for model, pts in acc.items():
        if len(pts) < 2:
            continue
        d = _diff(pts[-1][1:], pts[0][1:])
        lines.append(f"- *{model} improves with data*: accuracy {pts[0][1]:.4f} at {pts[0][0]} jets -> "
                     f"{pts[-1][1]:.4f} at {pts[-1][0]} jets ({_sig(d)}): {judge(*d)}.")
    # ParticleNet saturates first: the smallest gain over the last size step
    last = {m: _diff(p[-1][1:], p[-2][1:]) for m, p in acc.items() if len(p) >= 2}
    if "ParticleNet" in last and len(last) > 1:
        order = sorted(last, key=lambda m: last[m][0])
        pn = last["ParticleNet"]
        others = [m for m in last if m != "ParticleNet"]
        beyond = all(math.isfinite(last[m][1]) and math.isfinite(pn[1])
                     and last[m][0] - pn[0] > 2 * math.sqrt(last[m][1] ** 2 + pn[1] ** 2) for m in others)
        if beyond:
            judged = "**holds** (ParticleNet's gain is the smallest, by more than two standard errors)"
        elif not all(math.isfinite(d[1]) for d in last.values()):
            judged = f"**not shown** (one seed: no spread to judge by; {order[0]} gains least)"
        elif order[0] == "ParticleNet":
            judged = "**not shown** (ParticleNet's gain is the smallest, within two standard errors)"
        else:
            judged = f"**does not hold** ({order[0]} gains least)"
        lines.append("- *ParticleNet saturates first* (smallest accuracy gain over the last size step): "
                     "gains " + ", ".join(f"{m} {last[m][0]:+.4f}" for m in order) + f": {judged}.")
    # MIParT-L ~ ParT on the largest set, both above ParticleNet
    big = {m: p[-1] for m, p in acc.items()}
    if {"MIParT-L", "ParT", "ParticleNet"} <= set(big):
        n = big["ParT"][0]
        eq = _diff(big["MIParT-L"][1:], big["ParT"][1:])
        vs = {m: _diff(big[m][1:], big["ParticleNet"][1:]) for m in ("MIParT-L", "ParT")}
        near = math.isfinite(eq[1]) and abs(eq[0]) <= 2 * eq[1]
        judged = [judge(*v) for v in vs.values()]
        both = ("**holds**" if all(j == "**holds**" for j in judged) else
                "**does not hold**" if "**does not hold**" in judged else "**not shown**")
        equal = ("**not shown** (one seed: no spread)" if not math.isfinite(eq[1]) else
                 "**holds** (within two standard errors)" if near else "**does not hold**")
        lines.append(f"- *MIParT-L and ParT nearly equal on the largest set ({n} jets)*: MIParT-L - ParT "
                     f"{_sig(eq)}: {equal}.")
        lines.append("- *both pass ParticleNet there*: "
                     + "; ".join(f"{m} - ParticleNet {_sig(v)}" for m, v in vs.items()) + f": {both}.")
    return "\n".join(lines)


def figures(rows: dict[str, list[dict[str, float]]], out: Path) -> dict[str, Path]:
    """``scaling.png``: accuracy and macro AUC against training jets (log x), per model, mean ± std
    error over seeds, with the fitted power law."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, metric, label in zip(axes, ("acc", "auc"), ("accuracy", "macro AUC")):
        for model, pts in curves(rows, metric).items():
            n = np.array([p[0] for p in pts], dtype=float)
            mean = np.array([p[1] for p in pts])
            se = np.array([p[2] if math.isfinite(p[2]) else 0.0 for p in pts])
            line = ax.errorbar(n, mean, yerr=se, fmt="o", capsize=3, label=model)
            ok = np.isfinite(mean)
            if len(np.unique(n[ok])) >= 2:
                f = fit_power_law(n[ok], 1.0 - mean[ok])
                grid = np.geomspace(n.min(), n.max(), 100)
                beta = f["beta"] if math.isfinite(f["beta"]) else 0.0
                fitted = 1.0 - (f["L_inf"] + f["B"] * grid ** -beta)
                ax.plot(grid, fitted, color=line[0].get_color(), alpha=0.6)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: minor ones overlap
        ax.set_xlabel("training jets")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("generated jetclass: metric against training size (mean ± standard error over seeds; "
                 "lines: L_inf + B / D^beta fit of 1 - metric)", fontsize="small")
    fig.tight_layout()
    path = out / "scaling.png"
    fig.savefig(path, dpi=110)
    return {"scaling": path}


_BIG = ("train.batch_size=512", "data.max_len=128")

STUDY = Study(
    name="scaling",
    title="seed 000: ParticleNet, ParT and MIParT-L on generated jetclass sets of growing size",
    data={f"jetclass_{i + 1}": Data(recipe="jetclass", jets={s: SIZES[s][i] for s in SIZES})
          for i in range(3)},
    scales={
        "quick": Scale(epochs=0.0, overrides=("data.max_len=16", "train.batch_size=32")),
        "cpu": Scale(epochs=0.0, overrides=("data.max_len=32", "train.batch_size=64"), seeds=3),
        "gpu": Scale(epochs=1.0, overrides=_BIG, seeds=3),
        "full": Scale(epochs=1.0, overrides=_BIG, seeds=3),
    },
    plan=plan,
    columns=("params", "epochs", "jets_per_s"),
    verdict=verdict,
    figures=figures,
)
