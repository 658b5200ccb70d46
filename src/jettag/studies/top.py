"""The ``top`` study (``jettag demo``): top vs QCD, MIParT, ParT, ParticleNet and a PFN side by side.

Every model trains on the same generated sample (``generate:top:<n>``, Pythia 8 + FastJet, cached)
with its ``demo_<model>`` recipe and is scored on the same held-out test split. Scales: ``cpu``
(12k jets, the recipes' 1 to 10 epochs) finishes in < 15 min on a 2-core laptop from an empty
cache; ``gpu`` and ``full`` (100k and 500k jets, 3x and 5x the epochs, 128 particles, 3 and 5
seeds) are for a GPU; ``quick`` (200 jets, 1 epoch) is a smoke test of the whole chain. The verdict compares
MIParT's background rejection at 30% signal efficiency with ParT's, the claim of seed 000.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from jettag.studies.base import Data, RunSpec, Scale, Study

MODELS = ("mipart", "part", "particlenet", "pfn")
_BIG = ("train.batch_size=256", "data.split=[0.6,0.2,0.2]", "data.max_len=128")


def plan(scale: str, seeds: Sequence[int]) -> list[RunSpec]:
    """Each model with each seed; the runs of a model form one table row."""
    return [RunSpec(name=f"{m}-s{s}", recipe=f"demo_{m}", data="top", group=m, seed=s)
            for m in MODELS for s in seeds]


def verdict(rows: dict[str, list[dict[str, float]]]) -> str:
    """MIParT / ParT Rej30 beside seed 000's ratio, and whether the gap exceeds the seed spread."""
    if "mipart" not in rows or "part" not in rows:
        return ""
    mi = [r["rej30"] for r in rows["mipart"]]
    pa = [r["rej30"] for r in rows["part"]]
    m_mi, m_pa = statistics.fmean(mi), statistics.fmean(pa)
    if not (math.isfinite(m_mi) and math.isfinite(m_pa)) or m_pa <= 0:
        return ("MIParT vs ParT: Rej30 is not finite on this test set (too few background jets "
                "at 30% signal efficiency); use a larger scale.")
    text = (f"MIParT / ParT background rejection at 30% signal efficiency: {m_mi / m_pa:.2f} "
            "(seed 000 on TopLandscape, 1.2M training jets: 2010 / 1602 = 1.25).")
    if min(len(mi), len(pa)) < 2:
        return text + " One seed each: no spread to judge the gap by (`--seeds 3` gives mean ± std)."
    err = math.sqrt(sum(statistics.variance(x) / len(x) for x in (mi, pa)))
    beyond = abs(m_mi - m_pa) > 2 * err
    return text + (f" Gap {m_mi - m_pa:+.1f} ± {err:.1f} (standard error over {len(mi)} and {len(pa)} "
                   f"seeds): {'more' if beyond else 'less'} than two standard errors.")


STUDY = Study(
    name="top",
    title="top vs QCD, MIParT, ParT, ParticleNet and PFN side by side",
    data={"top": Data(recipe="top", jets={"quick": 200, "cpu": 12000, "gpu": 100000, "full": 500000})},
    scales={
        "quick": Scale(epochs=0.0, overrides=("train.epochs=1", "data.max_len=20", "train.batch_size=32")),
        "cpu": Scale(),
        "gpu": Scale(epochs=3.0, overrides=_BIG, seeds=3),
        "full": Scale(epochs=5.0, overrides=_BIG, seeds=5),
    },
    plan=plan,
    verdict=verdict,
)
