"""The ``hh4b`` study (seed 002, arXiv:2401.00452): heavy H -> hh -> 4b events against QCD and ttbar.

Six table rows, each over the seeds: ``xattn_event`` (the seed's cross-attention network),
``concat_event`` (simple concatenation) and ``mixer_event`` (subjets + MLP-mixer + cross-attention),
each with the rotation angle theta in the kinematics tokens and without it (``-notheta``:
``model.overrides.use_theta=false``). All train 3-class (QCD, ttbar, H_hh4b) on the same generated
events (``jettag generate hh4b``) and are scored on the same held-out events.

Besides the standard table, ``annotate`` adds the seed's signal-vs-background view from each run's
test predictions: ``sig_auc_pct`` (AUC x 100 of the H score, H against QCD + ttbar together),
``sig_rej50``/``sig_rej30`` (1 / background efficiency at 50% / 30% signal efficiency),
``eff_m<mass>`` (signal efficiency in % per heavy-H mass point at the cut that keeps 10% of the
background) and ``s_per_epoch`` (training seconds per epoch: train events / train events per s).
The verdict judges the seed's three claims from those numbers.

Scales: ``quick`` (300 events, 1 epoch, 16 constituents, one seed: a smoke test of the chain),
``cpu`` (2400 events, 6 epochs, 50 constituents, 3 seeds). The mass scan cycles one mass point per
generated chunk, so a sample generated with the default 1000 events per chunk holds only the first
points; generate the cpu sample with small chunks and pass it in:
``jettag generate hh4b 2400 --chunk-size 100 --out DIR`` then ``jettag study hh4b --data hh4b=DIR``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from jettag.studies.base import Data, RunSpec, Scale, Study

MODELS = ("xattn_event", "concat_event", "mixer_event")
MASSES = (600, 800, 1000, 1250, 1500, 2000)  # the hh4b recipe's heavy-H mass points (GeV)
SIGNAL = "H_hh4b"
BACKGROUND_EFF = 0.10  # working point of the per-mass signal efficiencies


def _group(model: str, theta: bool) -> str:
    return model.removesuffix("_event") + ("" if theta else "-notheta")


def plan(scale: str, seeds: Sequence[int]) -> list[RunSpec]:
    """Every model with and without theta, each seed; one table row per (model, theta)."""
    runs = []
    for m in MODELS:
        for theta in (True, False):
            g = _group(m, theta)
            ov = () if theta else ("model.overrides.use_theta=false",)
            runs += [RunSpec(name=f"{g}-s{s}", recipe=f"hh4b_{m}", data="hh4b", group=g, seed=s, overrides=ov)
                     for s in seeds]
    return runs


def signal_metrics(labels: np.ndarray, probs: np.ndarray, signal: int, mass: np.ndarray) -> dict[str, float]:
    """Signal (class ``signal``) against every other class, from the signal probability."""
    from sklearn.metrics import roc_auc_score

    score = probs[:, signal]
    sig = labels == signal
    out: dict[str, float] = {"sig_auc_pct": math.nan}
    if sig.any() and (~sig).any():
        out["sig_auc_pct"] = 100.0 * float(roc_auc_score(sig, score))
        for eff in (0.5, 0.3):
            cut = np.quantile(score[sig], 1.0 - eff)
            bkg = float(np.mean(score[~sig] >= cut))
            out[f"sig_rej{round(eff * 100)}"] = 1.0 / bkg if bkg > 0 else math.inf
        cut = np.quantile(score[~sig], 1.0 - BACKGROUND_EFF)
        nearest = np.asarray(MASSES)[np.abs(mass[:, None] - np.asarray(MASSES)[None, :]).argmin(1)]
        for m in MASSES:
            at = sig & (nearest == m)
            if at.any():
                out[f"eff_m{m}"] = 100.0 * float(np.mean(score[at] > cut))
    return out


def annotate(results: list[dict[str, Any]]) -> None:
    """Add the signal-vs-background metrics, the per-mass efficiencies and seconds per epoch."""
    import yaml

    from jettag.data.dataset import load_splits
    from jettag.data.kinds.event import double_b_tag

    for res in results:
        run_dir = Path(res["record"]["run_dir"])
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        splits, _ = load_splits(cfg, ("train", "test"))
        test = splits["test"]
        eff = cfg["data"].get("event_btag")
        if eff is not None:  # the events the kind kept
            keep = double_b_tag(ak.to_numpy(test.jet_nbhadrons).reshape(-1, 2),
                                ak.to_numpy(test.event_index).reshape(-1, 2)[:, 0], float(eff),
                                int(cfg["data"].get("split_seed", 0)))
            test = test[np.repeat(keep, 2)]
        mass = ak.to_numpy(test.event_truth_mass)[::2].astype(np.float64)
        if len(mass) != len(res["labels"]):
            raise RuntimeError(f"{run_dir}: {len(res['labels'])} predictions for {len(mass)} test events")
        res["metrics"].update(signal_metrics(res["labels"], res["probs"], res["classes"].index(SIGNAL), mass))
        jps = res["metrics"].get("jets_per_s", math.nan)
        n_train = len(splits["train"]) // 2
        res["metrics"]["s_per_epoch"] = n_train / jps if jps and jps > 0 else math.nan


def _mean_err(rows: dict[str, list[dict[str, float]]], group: str, key: str) -> tuple[float, float, int]:
    vals = [r[key] for r in rows.get(group, []) if key in r and math.isfinite(r[key])]
    if not vals:
        return math.nan, math.nan, 0
    err = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else math.nan
    return statistics.fmean(vals), err, len(vals)


def _compare(rows: dict[str, list[dict[str, float]]], a: str, b: str, key: str = "sig_auc_pct") -> str:
    """'a vs b' on ``key``: the gap and whether it exceeds two standard errors."""
    ma, ea, na = _mean_err(rows, a, key)
    mb, eb, nb = _mean_err(rows, b, key)
    if not (na and nb):
        return f"{a} vs {b}: not run"
    gap = ma - mb
    if min(na, nb) < 2:
        return f"{a} {ma:.2f} vs {b} {mb:.2f} (gap {gap:+.2f}; one seed: no spread to judge it by)"
    err = math.sqrt(ea**2 + eb**2)
    sig = abs(gap) > 2 * err
    word = ("higher" if gap > 0 else "lower") if sig else "not distinguishable from"
    return (f"{a} {ma:.2f} vs {b} {mb:.2f}: gap {gap:+.2f} ± {err:.2f} (standard error over {na} and {nb} "
            f"seeds): {a} is {word}{'' if sig else ' ' + b}")


def verdict(rows: dict[str, list[dict[str, float]]]) -> str:
    """The seed's three claims judged on signal AUC x 100 (H vs QCD + ttbar), params and time."""
    lines = ["Seed 002's claims, judged on the signal AUC x 100 (H against QCD + ttbar) of this table:", ""]
    cross = _compare(rows, "xattn", "concat")
    lines.append(f"1. Cross-attention beats concatenation (seed: yes): {cross}.")
    theta = _compare(rows, "xattn", "xattn-notheta")
    theta_c = _compare(rows, "concat", "concat-notheta")
    lines.append(f"2. Theta improves the classifier when substructure and kinematics are both used (seed: "
                 f"97.23-98.16 -> 98.68-99.28): {theta}; for concatenation: {theta_c}.")
    if _mean_err(rows, "mixer", "sig_auc_pct")[2] and _mean_err(rows, "xattn", "sig_auc_pct")[2]:
        p_m, _, _ = _mean_err(rows, "mixer", "params")
        p_x, _, _ = _mean_err(rows, "xattn", "params")
        t_m, _, _ = _mean_err(rows, "mixer", "s_per_epoch")
        t_x, _, _ = _mean_err(rows, "xattn", "s_per_epoch")
        lines.append(
            f"3. The mixer comes close to the transformer at a fraction of the parameters and time (seed: "
            f"AUC 98.50 vs 98.59 with 94k vs 1.7M parameters, 70 s vs 4.2k s per epoch on a GPU): "
            f"{_compare(rows, 'mixer', 'xattn')}; parameters {p_m / 1e3:.0f}k vs {p_x / 1e3:.0f}k "
            f"({p_m / p_x:.1%}), CPU time per epoch {t_m:.1f} s vs {t_x:.1f} s ({t_m / t_x:.1%}).")
    else:
        lines.append("3. Mixer vs transformer: not run.")
    lines += ["", "A claim holds here only where the gap exceeds two standard errors; small samples and "
              "few epochs leave most gaps inside the seed spread (see the scale in the title)."]
    return "\n".join(lines)


STUDY = Study(
    name="hh4b",
    title="seed 002: H -> hh -> 4b events vs QCD and ttbar, cross-attention vs concatenation vs mixer, "
          "with and without theta",
    data={"hh4b": Data(recipe="hh4b", jets={"quick": 300, "cpu": 2400, "gpu": 30000, "full": 100000})},
    scales={
        "quick": Scale(epochs=0.0, overrides=("train.epochs=1", "data.max_len=16", "train.batch_size=32")),
        "cpu": Scale(epochs=0.0, overrides=("train.epochs=6",), seeds=3),
        "gpu": Scale(epochs=2.0, overrides=("train.batch_size=256",), seeds=3),
        "full": Scale(epochs=5.0, overrides=("train.batch_size=256",), seeds=5),
    },
    plan=plan,
    columns=("sig_auc_pct", "sig_rej50", "sig_rej30", *(f"eff_m{m}" for m in MASSES), "params", "s_per_epoch",
             "epochs"),
    verdict=verdict,
    annotate=annotate,
)
