"""The ``finetune`` and ``scaling`` studies' plans, power-law fit and verdicts on constructed numbers
(no training: fast)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from jettag.studies import finetune as FT
from jettag.studies import get_study
from jettag.studies import scaling as SC
from jettag.studies.base import select, train_overrides
from jettag.train.config import resolve


# ------------------------------------------------------------------ finetune
def test_finetune_plan_follows_seed000() -> None:
    runs = select(FT.plan("gpu", [0, 1, 2]))
    by_name = {r.name: r for r in runs}
    pre = [r for r in runs if not r.report]
    assert {(r.name, r.data) for r in pre} == {
        (f"pretrain-{m}-{f}", "jetclass") for m in ("mipart_l", "part") for f in ("kin", "kinpid")}
    study = get_study("finetune")
    for r in runs:
        if r.seed != 0:  # the other seeds differ only by train.seed
            assert r.overrides == by_name[r.name.replace(f"-s{r.seed}", "-s0")].overrides
            continue
        cfg = resolve(r.recipe, train_overrides(study, r, "gpu", "generate:top:100", Path("/runs")))
        if not r.report:
            assert cfg["train"]["epochs"] == 50
            if cfg["model"]["name"] == "mipart_l":
                assert (cfg["train"]["lr"], cfg["train"]["batch_size"]) == (8e-4, 384)
            continue
        name, finetuned, target = FT.parse_group(r.group)
        assert cfg["data"]["feature_set"] == FT.FEATURES[target]
        assert FT.PRETTY[cfg["model"]["name"]] == name
        if finetuned:
            src = by_name[r.init_from]
            assert f"data.feature_set={FT.FEATURES[target]}" in src.overrides  # kin for top, kinpid for q/g
            assert cfg["train"]["init_from"] == f"/runs/{src.name}"
            assert (cfg["train"]["epochs"], cfg["train"]["lr"], cfg["train"]["lr_head"]) == (20, 1.6e-4, 8e-3)
        else:
            assert r.init_from is None and cfg["train"]["lr_head"] is None
            assert cfg["train"]["epochs"] == {"MIParT-L": 15, "MIParT": 15, "ParT": 20}[name]
    groups = {r.group for r in runs if r.report}
    assert len(groups) == 10 and all(len([r for r in runs if r.group == g]) == 3 for g in groups)
    assert study.report_per_data


def _runs(values: list[float]) -> list[dict[str, float]]:
    return [{"rej30": v, "rej50": v / 4} for v in values]


def test_finetune_gain_and_verdict() -> None:
    # 100 (mean ft / mean ref - 1) = 30; standard errors 10 / sqrt(3) on means 130 and 100
    g, err = FT.gain([120.0, 130.0, 140.0], [90.0, 100.0, 110.0])
    assert g == pytest.approx(30.0, rel=1e-12)  # float division only
    se_a, se_b = 10 / math.sqrt(3), 10 / math.sqrt(3)
    assert err == pytest.approx(100 * 1.3 * math.sqrt((se_a / 130) ** 2 + (se_b / 100) ** 2), rel=1e-12)
    assert math.isnan(FT.gain([1.0], [2.0])[1])  # one seed: no spread
    assert math.isnan(FT.gain([math.inf], [2.0])[0])  # Rej30 inf (no background passes): not measurable
    rows = {
        "MIParT-L f.t. (top)": _runs([120.0, 130.0, 140.0]),
        "MIParT (top)": _runs([90.0, 100.0, 110.0]),
        "MIParT-L (top)": _runs([125.0, 130.0, 135.0]),
        "ParT f.t. (top)": _runs([80.0, 90.0, 100.0]),
        "ParT (top)": _runs([95.0, 100.0, 105.0]),
        "MIParT-L f.t. (qg)": _runs([10.0, 10.0, 10.0]),  # no q/g reference: no gain row
    }
    text = FT.verdict(rows)
    assert "| MIParT-L f.t. | MIParT | +30% ± 9% | +30% ± 9% | +39% |" in text
    assert "| MIParT-L f.t. | MIParT-L | +0% ± 5% | +0% ± 5% | - |" in text
    assert "| ParT f.t. | ParT | -10% ± 6% | -10% ± 6% | +73% |" in text  # seed: 2766 / 1602
    assert "MIParT-L f.t. vs MIParT +30% ± 9%: **holds**" in text  # 30 > 2 x 9.5
    assert "ParT f.t. vs ParT -10% ± 6%: **not shown**" in text  # |-10| < 2 x 6.3
    assert "quark/gluon** (100" in text and "(no fine-tuned run with its from-scratch reference)" in text
    ref = {"ParT (top)": _runs([99.0, 100.0, 101.0])}
    clear = FT.verdict({"ParT f.t. (top)": _runs([200.0, 201.0, 202.0]), **ref})
    assert "ParT f.t. vs ParT +101% ± 1%: **holds**" in clear  # 2.01 x sqrt((0.577/201)^2 + (0.577/100)^2)
    worse = FT.verdict({"ParT f.t. (top)": _runs([50.0, 51.0, 52.0]), **ref})
    assert "**does not hold**" in worse


# ------------------------------------------------------------------ scaling
def test_scaling_plan_sizes_and_test_sample() -> None:
    for scale in ("quick", "cpu", "gpu", "full"):
        runs = SC.plan(scale, [0, 1, 2])
        sizes = sorted({SC.parse_group(r.group)[1] for r in runs})
        assert len(sizes) >= 3 and all(b / a >= 4.9 for a, b in itertools.pairwise(sizes))
        assert len({o for r in runs for o in r.overrides if o.startswith("data.test=")}) == 1
        assert {SC.parse_group(r.group)[0] for r in runs} == {"ParticleNet", "ParT", "MIParT-L"}
    study = get_study("scaling")
    big = next(r for r in SC.plan("full", [0]) if r.data == "jetclass_3")
    spec = study.data["jetclass_3"].spec("full")
    cfg = resolve(big.recipe, train_overrides(study, big, "full", spec, Path(".")))
    assert cfg["data"]["path"] == "generate:jetclass:125000000" and cfg["data"]["feature_set"] == "full"
    assert cfg["data"]["streaming"] == "auto" and cfg["data"]["stream_above"] < 125_000_000  # streams


def test_power_law_fit_recovers_constructed_curve() -> None:
    d = np.array([1e3, 5e3, 2.5e4, 1.25e5])
    y = 0.12 + 3.0 * d ** -0.5
    f = SC.fit_power_law(d, y)
    # grid search over beta (600 log steps: ~1% apart), then an exact linear solve
    assert f["beta"] == pytest.approx(0.5, rel=0.01)
    assert f["L_inf"] == pytest.approx(0.12, abs=2e-3)
    assert f["dof"] == 1.0
    flat = SC.fit_power_law([1e3, 5e3, 2.5e4], [0.2, 0.21, 0.22])  # error grows with D: no decrease
    assert math.isnan(flat["beta"]) and flat["B"] == 0.0 and flat["L_inf"] == pytest.approx(0.21)
    # points that a free fit would send below zero: L_inf is held at 0, never negative
    floor = SC.fit_power_law([32, 160, 800], [0.9, 0.884, 0.832])
    assert floor["L_inf"] == 0.0 and floor["B"] > 0
    with pytest.raises(ValueError, match="at least 2 distinct sizes"):
        SC.fit_power_law([10.0, 10.0], [0.1, 0.2])


def _scaling_rows(acc: dict[str, list[list[float]]], sizes: list[int]) -> dict[str, list[dict[str, float]]]:
    return {SC.group_name(m, n): [{"acc": a, "auc": 0.9 + a / 10} for a in accs]
            for m, per_size in acc.items() for n, accs in zip(sizes, per_size)}


def test_scaling_verdict_on_constructed_numbers() -> None:
    sizes = [1000, 5000, 25000]
    rows = _scaling_rows({
        "ParticleNet": [[0.60, 0.61, 0.62], [0.700, 0.701, 0.702], [0.710, 0.711, 0.712]],
        "ParT": [[0.55, 0.56, 0.57], [0.70, 0.71, 0.72], [0.80, 0.81, 0.82]],
        "MIParT-L": [[0.55, 0.56, 0.57], [0.70, 0.71, 0.72], [0.801, 0.811, 0.821]],
    }, sizes)
    text = SC.verdict(rows)
    assert "*ParticleNet improves with data*: accuracy 0.6100 at 1000 jets -> 0.7110 at 25000 jets" in text
    assert text.count("improves with data") == 3 and "**not shown**" not in text.split("saturates")[0]
    assert "ParticleNet +0.0100" in text and "**holds** (ParticleNet's gain is the smallest" in text
    assert "MIParT-L - ParT +0.0010 ± 0.0082, less than two standard errors: **holds**" in text
    assert "*both pass ParticleNet there*" in text and text.rstrip().endswith("**holds**.")
    assert "| ParT | 1000, 5000, 25000 |" in text and "can pass through the points" in text
    assert "sits at its bound 0" not in text  # every fit here has a floor above 0
    # ParticleNet keeps gaining most: the claim fails, and is said to fail
    rows2 = _scaling_rows({
        "ParticleNet": [[0.5, 0.5, 0.5], [0.6, 0.6, 0.6], [0.9, 0.9, 0.9]],
        "ParT": [[0.5, 0.5, 0.5], [0.6, 0.6, 0.6], [0.65, 0.66, 0.67]],
    }, sizes)
    assert "**does not hold** (ParT gains least)" in SC.verdict(rows2)
    one = {g: runs[:1] for g, runs in rows2.items()}  # one seed: no verdict either way
    assert "**not shown** (one seed: no spread to judge by; ParT gains least)" in SC.verdict(one)
    # ParticleNet on top at the largest set, MIParT-L getting worse with data: both said to fail
    rows3 = _scaling_rows({
        "ParticleNet": [[0.5, 0.51, 0.52], [0.6, 0.61, 0.62], [0.9, 0.91, 0.92]],
        "ParT": [[0.5, 0.51, 0.52], [0.6, 0.61, 0.62], [0.65, 0.66, 0.67]],
        "MIParT-L": [[0.7, 0.71, 0.72], [0.6, 0.61, 0.62], [0.5, 0.51, 0.52]],
    }, sizes)
    text3 = SC.verdict(rows3)
    # ParticleNet's error falls faster at the largest size than any power law with a floor: L_inf = 0
    assert "sits at its bound 0 (ParticleNet 1-acc" in text3 and "no floor (saturation) is visible" in text3
    assert "*MIParT-L improves with data*: accuracy 0.7100 at 1000 jets -> 0.5100" in text3
    assert text3.split("*MIParT-L improves with data*")[1].split("\n")[0].endswith("**does not hold**.")
    assert text3.split("*both pass ParticleNet there*")[1].rstrip().endswith("**does not hold**.")
    assert "MIParT-L - ParT -0.1500" in text3 and "nearly equal" in text3


def test_scaling_figure(tmp_path: Path) -> None:
    rows = _scaling_rows({"ParT": [[0.5, 0.52], [0.6, 0.61], [0.65, 0.66]]}, [100, 500, 2500])
    path = SC.figures(rows, tmp_path)["scaling"]
    assert path.stat().st_size > 10_000


# ------------------------------------------------------------------ base: one report per target dataset
def test_report_per_data_splits_targets_of_different_classes(tmp_path: Path) -> None:
    from jetfactory import random_jets

    from jettag.data.store import write_store
    from jettag.studies import StudyError, run_study
    from jettag.studies.base import Data, RunSpec, Scale, Study

    a = write_store(tmp_path / "a.parquet", random_jets(120, seed=1, max_len=12), ["QCD", "Top"], "random")
    b = write_store(tmp_path / "b.parquet", random_jets(120, seed=2, max_len=12), ["gluon", "quark"],
                    "random")
    seen: list[list[str]] = []

    def verdict(rows: dict[str, list[dict[str, float]]]) -> str:
        seen.append(sorted(rows))
        return f"VERDICT {sorted(rows)}"

    def figures(rows: dict[str, list[dict[str, float]]], out: Path) -> dict[str, Path]:
        (out / "extra.txt").write_text(",".join(rows))
        return {"extra": out / "extra.txt"}

    study = Study(name="t", title="two targets", data={"a": Data(path=str(a)), "b": Data(path=str(b))},
                  scales={"quick": Scale(epochs=0.0, overrides=("train.epochs=1", "data.max_len=12",
                                                               "train.batch_size=32"))},
                  plan=lambda scale, seeds: [RunSpec("ra", "demo_pfn", "a", "pfn (a)"),
                                             RunSpec("rb", "demo_pfn", "b", "pfn (b)")],
                  verdict=verdict, figures=figures, report_per_data=True)
    done = run_study(study, tmp_path / "out", scale="quick", progress=False, log=lambda s: None)
    report = done["report"]
    assert seen == [["pfn (a)"], ["pfn (b)"]]  # one verdict per target, on its own rows
    for name, classes in (("a", "QCD, Top"), ("b", "gluon, quark")):
        text = (report / name / "results.md").read_text()
        assert f"classes: {classes}" in text and f"VERDICT ['pfn ({name})']" in text
        assert (report / name / "extra.txt").read_text() == f"pfn ({name})"
        assert done["files"][f"{name}/roc"] == report / name / "roc.png"
    joined = done["files"]["md"].read_text()
    assert joined.startswith("# ") and "## a (`a/`)" in joined and "## b (`b/`)" in joined
    assert "VERDICT ['pfn (a)']" in joined and "VERDICT ['pfn (b)']" in joined
    # without report_per_data the two class sets cannot share one table (finished runs are reused)
    mixed = Study(**{**study.__dict__, "report_per_data": False})
    with pytest.raises(StudyError, match=r"reported runs have different classes: ra \['QCD', 'Top'\], rb"):
        run_study(mixed, tmp_path / "out", scale="quick", progress=False, log=lambda s: None)
