"""The ``finetune`` study: seed 000's pre-training on JetClass then fine-tuning to top and quark/gluon.

Pre-training (``report=False``, once per model and feature set, seed 0): MIParT-L and ParT on the
generated ``jetclass`` set (10 classes), with ``kin`` features for the top-tagging target and
``kinpid`` for quark/gluon, as the ParT and MIParT papers did (MIParT-L: lr 8e-4, batch 384, 50
epochs at the gpu/full scale; ParT: its top recipe, lr 1e-3, batch 512).

Per target (``top``: ``top_<model>`` recipes, ``kin``; ``qg``: ``qg_<model>``, ``kinpid``) and seed:

* **fine-tuned** (``f.t.``): ``train.init_from=<pre-training>``, the head replaced by a fresh 2-class
  Linear, every weight trained, 20 epochs (times the scale's factor), lr 1.6e-4 for the pre-trained
  weights and 8e-3 for the new head (``train.lr``, ``train.lr_head``);
* **from scratch**: MIParT-L, ParT and MIParT (the seed's +39% / +6% compare MIParT-L f.t. with
  MIParT) with their recipes' budget (MIParT(-L) 15 epochs, ParT 20, times the same factor).

The report has one table per target (``report/top/``, ``report/qg/``) in the seed's layout (accuracy,
AUC, Rej50, Rej30, mean ± std over seeds) and the gains from pre-training in percent beside the
seed's (``verdict``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from jettag.studies.base import Data, RunSpec, Scale, Study, mean_se

#: (model, pretty name); pre-trained and fine-tuned
FT_MODELS = (("mipart_l", "MIParT-L"), ("part", "ParT"))
#: from-scratch references
SCRATCH_MODELS = (("mipart_l", "MIParT-L"), ("part", "ParT"), ("mipart", "MIParT"))
PRETTY = dict((*FT_MODELS, *SCRATCH_MODELS))
#: target -> feature set of the target and of its pre-training
FEATURES = {"top": "kin", "qg": "kinpid"}
#: seed 000's fine-tuning
FT_EPOCHS, FT_LR, FT_LR_HEAD = 20, 1.6e-4, 8e-3
#: seed 000's from-scratch budget per model (the recipes': MIParT 15 epochs, ParT 20)
SCRATCH_EPOCHS = {"mipart_l": 15, "mipart": 15, "part": 20}
#: pre-training: MIParT-L 50 epochs lr 8e-4 batch 384 (seed 000); ParT 50 epochs at its recipe's lr/batch
PRETRAIN = {"mipart_l": ("train.lr=0.0008", "train.batch_size=384"), "part": ("train.batch_size=512",)}
#: pre-training epochs per scale (seed 000: 50)
PRETRAIN_EPOCHS = {"quick": 1, "cpu": 2, "gpu": 50, "full": 50}
#: per scale, the targets' separate test samples (generation seed 1), shared by every run of a target;
#: quick scores on the pool's own 10% test split
TEST = {"quick": 0, "cpu": 2000, "gpu": 200_000, "full": 200_000}
#: per scale, the factor on the fine-tuning and from-scratch epochs (at least 1 epoch)
EPOCH_FACTOR = {"quick": 0.0, "cpu": 0.2, "gpu": 1.0, "full": 1.0}

#: seed 000's published figures (TopLandscape, EnergyFlow q/g; JetClass 100M pre-training), Rej30
SEED = {
    "top": {"MIParT-L f.t.": 2789.0, "ParT f.t.": 2766.0, "MIParT": 2010.0, "ParT": 1602.0},
    "qg": {"MIParT-L f.t.": 141.4, "ParT f.t.": 138.7, "MIParT": 133.9, "ParT": 129.5},
}
TARGET_NAME = {"top": "top tagging", "qg": "quark/gluon"}

GROUP = re.compile(r"^(?P<name>[\w-]+)(?P<ft> f\.t\.)? \((?P<target>top|qg)\)$")


def group_name(model: str, finetuned: bool, target: str) -> str:
    """``MIParT-L f.t. (top)``, ``ParT (qg)``: the seed's row names, with the target."""
    return f"{PRETTY[model]}{' f.t.' if finetuned else ''} ({target})"


def parse_group(group: str) -> tuple[str, bool, str]:
    """(pretty model name, fine-tuned, target) of a group name."""
    m = GROUP.match(group)
    if m is None:
        raise ValueError(f"not a finetune group name: {group!r}")
    return m["name"], m["ft"] is not None, m["target"]


def epochs(n: int, scale: str) -> int:
    """``n`` epochs times the scale's factor, at least 1 (quick: 1)."""
    return max(1, round(n * EPOCH_FACTOR[scale]))


def recipe(model: str, target: str) -> tuple[str, tuple[str, ...]]:
    """(recipe, overrides) of a model on a target: ``top_<model>`` / ``qg_<model>`` (MIParT-L on q/g:
    ``qg_mipart`` with ``model.name=mipart_l``)."""
    if target == "qg" and model == "mipart_l":
        return "qg_mipart", ("model.name=mipart_l",)
    return f"{target}_{model}", ()


def plan(scale: str, seeds: Sequence[int]) -> list[RunSpec]:
    """Pre-trainings (per model and feature set), then per target and seed the fine-tuned and the
    from-scratch runs."""
    runs = []
    for model, _ in FT_MODELS:
        for feat in dict.fromkeys(FEATURES.values()):
            runs.append(RunSpec(
                name=f"pretrain-{model}-{feat}", recipe=f"top_{model}", data="jetclass",
                group=f"pretrain {model} {feat}", seed=0, report=False,
                overrides=(f"data.feature_set={feat}", f"train.epochs={PRETRAIN_EPOCHS[scale]}",
                           *(PRETRAIN[model] if scale in ("gpu", "full") else ()))))
    for target, feat in FEATURES.items():
        test = (f"data.test=generate:{target}:{TEST[scale]}:1",) if TEST[scale] else ()
        for s in seeds:
            for model, _ in FT_MODELS:
                rec, ov = recipe(model, target)
                runs.append(RunSpec(
                    name=f"ft-{model}-{target}-s{s}", recipe=rec, data=target, seed=s,
                    group=group_name(model, True, target), init_from=f"pretrain-{model}-{feat}",
                    overrides=(*ov, *test, f"train.epochs={epochs(FT_EPOCHS, scale)}", f"train.lr={FT_LR}",
                               f"train.lr_head={FT_LR_HEAD}")))
            for model, _ in SCRATCH_MODELS:
                rec, ov = recipe(model, target)
                runs.append(RunSpec(
                    name=f"scratch-{model}-{target}-s{s}", recipe=rec, data=target, seed=s,
                    group=group_name(model, False, target),
                    overrides=(*ov, *test, f"train.epochs={epochs(SCRATCH_EPOCHS[model], scale)}")))
    return runs


def gain(ft: Sequence[float], ref: Sequence[float]) -> tuple[float, float]:
    """Gain of ``ft`` over ``ref`` in percent, ``100 (mean ft / mean ref - 1)``, and its standard error
    from the two standard errors of the mean (first order); (NaN, NaN) when either has no finite value."""
    a, sa, na = mean_se(ft)
    b, sb, nb = mean_se(ref)
    if na == 0 or nb == 0 or b <= 0:
        return math.nan, math.nan
    g = a / b
    err = g * math.sqrt((sa / a) ** 2 + (sb / b) ** 2) if na > 1 and nb > 1 and a > 0 else math.nan
    return 100.0 * (g - 1.0), 100.0 * err


def _pct(g: tuple[float, float]) -> str:
    if not math.isfinite(g[0]):
        return "n/a"
    return f"{g[0]:+.0f}%" + (f" ± {g[1]:.0f}%" if math.isfinite(g[1]) else "")


def _judge(g: tuple[float, float]) -> str:
    if not math.isfinite(g[0]):
        return "not measurable (Rej30 not finite on this test set)"
    if not math.isfinite(g[1]):
        return "one seed: no spread to judge by"
    if g[0] > 2 * g[1]:
        return "**holds** (more than two standard errors above 0)"
    if g[0] < -2 * g[1]:
        return "**does not hold**: pre-training is worse, by more than two standard errors"
    return "**not shown**: within two standard errors of 0"


def verdict(rows: dict[str, list[dict[str, float]]]) -> str:
    """Gains from pre-training at Rej30 and Rej50 per target beside seed 000's, and the claim's verdict."""
    targets = sorted({parse_group(g)[2] for g in rows})
    out = []
    for target in targets:
        def vals(name: str, ft: bool, metric: str, target: str = target) -> list[float]:
            return [r[metric] for r in rows.get(f"{name}{' f.t.' if ft else ''} ({target})", [])]

        seed = SEED[target]
        out += [f"**Gain from pre-training, {TARGET_NAME[target]}** (100 (f.t. / from scratch - 1), "
                "± its standard error over seeds)", "",
                "| fine-tuned | vs from scratch | Rej50 gain | Rej30 gain | seed 000 Rej30 gain |",
                "|---|---|---|---|---|"]
        pairs = (("MIParT-L", "MIParT"), ("MIParT-L", "MIParT-L"), ("ParT", "ParT"))
        gains = {}
        for ft, ref in pairs:
            if not vals(ft, True, "rej30") or not vals(ref, False, "rej30"):
                continue  # a group not run (``--only``)
            g50 = gain(vals(ft, True, "rej50"), vals(ref, False, "rej50"))
            g30 = gain(vals(ft, True, "rej30"), vals(ref, False, "rej30"))
            gains[(ft, ref)] = g30
            s = seed.get(f"{ft} f.t."), seed.get(ref)
            seed_text = f"{100 * (s[0] / s[1] - 1):+.0f}%" if s[0] and s[1] else "-"
            out.append(f"| {ft} f.t. | {ref} | {_pct(g50)} | {_pct(g30)} | {seed_text} |")
        if not gains:
            out += ["(no fine-tuned run with its from-scratch reference)", ""]
            continue
        out += ["", f"- *Pre-training then fine-tuning improves rejection on {TARGET_NAME[target]}* "
                f"(seed 000: MIParT-L f.t. vs MIParT "
                f"{100 * (seed['MIParT-L f.t.'] / seed['MIParT'] - 1):+.0f}% at Rej30): "
                + "; ".join(f"{ft} f.t. vs {ref} {_pct(g)}: {_judge(g)}" for (ft, ref), g in gains.items())
                + ".", ""]
    return "\n".join(out)


_BIG = ("train.batch_size=256", "data.max_len=128")

STUDY = Study(
    name="finetune",
    title="seed 000: MIParT-L and ParT pre-trained on jetclass, fine-tuned to top and quark/gluon",
    data={
        "jetclass": Data(recipe="jetclass", jets={"quick": 400, "cpu": 5000, "gpu": 2_000_000,
                                                  "full": 10_000_000}),
        "top": Data(recipe="top", jets={"quick": 200, "cpu": 1000, "gpu": 200_000, "full": 2_000_000}),
        "qg": Data(recipe="qg", jets={"quick": 200, "cpu": 1000, "gpu": 200_000, "full": 2_000_000}),
    },
    scales={
        "quick": Scale(epochs=0.0, overrides=("data.max_len=16", "train.batch_size=32")),
        "cpu": Scale(epochs=0.0, overrides=("data.max_len=32", "train.batch_size=64"), seeds=3),
        "gpu": Scale(epochs=0.0, overrides=_BIG, seeds=3),
        "full": Scale(epochs=0.0, overrides=_BIG, seeds=3),
    },
    plan=plan,
    columns=("params", "epochs", "jets_per_s"),
    verdict=verdict,
    report_per_data=True,
)
