"""Generation recipes: which Pythia processes make each class, and which jets count as that class.

A recipe is data, not code: the process switches and decay modes for each class, the jet
definition, the kinematic window and the truth requirement. Keeping it declarative means the
manifest can record every setting that made a sample, and a new benchmark is a new entry here.

Truth matching follows the public datasets: a signal jet is kept only when its resonance (top, W,
Z, H) and all of the resonance's visible decay products (quarks, gluons, charged leptons; the
hard-process partons, status 23) lie within ``dR < R`` of the jet axis. Neutrinos are never
required (they leave no trace in the jet).

pT-hat windows: initial-state radiation lets events with a generator pT-hat below the jet window
produce jets inside it (``shared/reference/datasets.md``: 25% of accepted top jets had pT-hat below
500 GeV for a [550, 650] window), so ``pthat_min`` sits below the window (150 GeV for the
TopLandscape-like recipes, 100 GeV elsewhere). A higher ``pthat_min`` would be faster but would sculpt
the jet-pT spectrum near the lower edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

# |PDG id| of the resonances whose decay products define a signal jet.
RESONANCES = (6, 23, 24, 25)
QUARKS = (1, 2, 3, 4, 5)
CHARGED_LEPTONS = (11, 13, 15)
NEUTRINOS = (12, 14, 16)

_W_HADRONIC = ("24:onMode = off", "24:onIfAny = 1 2 3 4 5")
_W_LEPTONIC = ("24:onMode = off", "24:onIfAny = 11 13 15")
_Z_INVISIBLE = ("WeakZ0:gmZmode = 2", "23:onMode = off", "23:onIfAny = 12 14 16")
_Z_HADRONIC = ("WeakZ0:gmZmode = 2", "23:onMode = off", "23:onIfAny = 1 2 3 4 5")
_TTBAR = ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on")
_DIJETS = ("HardQCD:all = on",)
_Z_PLUS_JET = ("WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on")
_W_PLUS_JET = ("WeakBosonAndParton:qqbar2Wg = on", "WeakBosonAndParton:qg2Wq = on")
# Higgs boosted by recoiling against an invisible Z: the only visible hard object is the Higgs, so
# almost every event with pT-hat in range yields a matched jet.
_ZH_INVISIBLE = ("HiggsSM:ffbar2HZ = on", "25:mMin = 50", *_Z_INVISIBLE)


@dataclass(frozen=True)
class Match:
    """Truth requirement of a signal class: one resonance and its visible decay products in the jet.

    ``quarks``, ``gluons`` and ``leptons`` count the resonance's visible decay products (through
    intermediate W bosons) that must all lie inside the jet; they also guard against a recipe whose
    decay-mode settings do not do what they say.
    """

    resonance: tuple[int, ...]
    quarks: int = 0
    gluons: int = 0
    leptons: int = 0


@dataclass(frozen=True)
class ClassSpec:
    """One class of a recipe: its Pythia process settings and, for signal, its truth requirement.

    ``hard_partons``: for process-labelled classes (quark/gluon), the allowed |PDG id| of the
    outgoing hard-process parton; events with another flavour are vetoed (e.g. c and b quarks for
    the light-quark sample).
    """

    name: str
    settings: tuple[str, ...]
    match: Match | None = None
    hard_partons: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Recipe:
    """A benchmark-like sample: classes, jet definition and kinematic window."""

    name: str
    description: str
    classes: tuple[ClassSpec, ...]
    radius: float
    pt_min: float
    pt_max: float
    abs_eta_max: float
    pthat_min: float
    use_rapidity: bool = False  # cut on |y| (EnergyFlow) instead of |eta|
    leading_only: bool = False  # keep only the hardest jet of an event (process-labelled classes)
    mpi: bool = True
    ecm: float = 14000.0
    reference: str = ""
    common_settings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]


def _top_match() -> Match:
    return Match(resonance=(6,), quarks=3)


def _recipes() -> dict[str, Recipe]:
    top_classes = (
        ClassSpec("QCD", _DIJETS),
        ClassSpec("Top", (*_TTBAR, *_W_HADRONIC), _top_match()),
    )
    qg = Recipe(
        name="qg",
        description="EnergyFlow-like quark/gluon jets: Z(->nu nu) + g vs Z(->nu nu) + (u, d, s), R=0.4",
        classes=(
            ClassSpec("gluon", ("WeakBosonAndParton:qqbar2gmZg = on", *_Z_INVISIBLE), hard_partons=(21,)),
            ClassSpec("quark", ("WeakBosonAndParton:qg2gmZq = on", *_Z_INVISIBLE), hard_partons=(1, 2, 3)),
        ),
        radius=0.4,
        pt_min=500.0,
        pt_max=550.0,
        abs_eta_max=1.7,
        pthat_min=400.0,
        use_rapidity=True,
        leading_only=True,
        mpi=True,
        reference="Komiske, Metodiev, Thaler, JHEP 01 (2019) 121; EnergyFlow 'Pythia8 Quark and Gluon Jets'",
    )
    qg_bc = replace(
        qg,
        name="qg_bc",
        description="EnergyFlow-like quark/gluon jets including c and b quarks, R=0.4",
        classes=(qg.classes[0], ClassSpec("quark", qg.classes[1].settings, hard_partons=(1, 2, 3, 4, 5))),
    )
    jetclass = Recipe(
        name="jetclass",
        description="JetClass-like ten classes (QCD from Z(->nu nu)+jets), R=0.8, 13 TeV",
        classes=(
            ClassSpec("QCD", (*_Z_PLUS_JET, *_Z_INVISIBLE)),
            ClassSpec(
                "Hbb", (*_ZH_INVISIBLE, "25:onMode = off", "25:onIfMatch = 5 -5"), Match((25,), quarks=2)
            ),
            ClassSpec(
                "Hcc", (*_ZH_INVISIBLE, "25:onMode = off", "25:onIfMatch = 4 -4"), Match((25,), quarks=2)
            ),
            ClassSpec(
                "Hgg", (*_ZH_INVISIBLE, "25:onMode = off", "25:onIfMatch = 21 21"), Match((25,), gluons=2)
            ),
            ClassSpec(
                "H4q",
                (*_ZH_INVISIBLE, "25:onMode = off", "25:onIfMatch = 24 -24", *_W_HADRONIC),
                Match((25,), quarks=4),
            ),
            ClassSpec(
                "Hqql",
                (
                    *_ZH_INVISIBLE,
                    "25:onMode = off",
                    "25:onIfMatch = 24 -24",
                    "24:onMode = off",
                    "24:onPosIfAny = 11 13 15",
                    "24:onNegIfAny = 1 2 3 4 5",
                ),
                Match((25,), quarks=2, leptons=1),
            ),
            ClassSpec("Zqq", (*_Z_PLUS_JET, *_Z_HADRONIC), Match((23,), quarks=2)),
            ClassSpec("Wqq", (*_W_PLUS_JET, *_W_HADRONIC), Match((24,), quarks=2)),
            ClassSpec("Tbqq", (*_TTBAR, *_W_HADRONIC), _top_match()),
            ClassSpec("Tbl", (*_TTBAR, *_W_LEPTONIC), Match((6,), quarks=1, leptons=1)),
        ),
        radius=0.8,
        pt_min=500.0,
        pt_max=1000.0,
        abs_eta_max=2.0,
        pthat_min=400.0,
        mpi=True,
        ecm=13000.0,
        reference="Qu, Li, Qian, arXiv:2202.03772 (JetClass)",
    )
    return {
        "top": Recipe(
            name="top",
            description="TopLandscape-like hadronic tops (all-hadronic ttbar) vs QCD dijets, R=0.8",
            classes=top_classes,
            radius=0.8,
            pt_min=550.0,
            pt_max=650.0,
            abs_eta_max=2.0,
            pthat_min=400.0,
            mpi=False,
            reference="Kasieczka et al., SciPost Phys. 7, 014 (2019) (Top Tagging Landscape)",
        ),
        "qg": qg,
        "qg_bc": qg_bc,
        "jetclass": jetclass,
        "wtag": Recipe(
            name="wtag",
            description="Hadronic W (W(->qq)+jet) vs QCD dijets, jet pT > 500 GeV, R=0.8",
            classes=(
                ClassSpec("QCD", _DIJETS),
                ClassSpec("W", (*_W_PLUS_JET, *_W_HADRONIC), Match((24,), quarks=2)),
            ),
            radius=0.8,
            pt_min=500.0,
            pt_max=math.inf,
            abs_eta_max=2.0,
            pthat_min=400.0,
            mpi=False,
        ),
        "top2tev": Recipe(
            name="top2tev",
            description="Hadronic tops vs QCD dijets at jet pT > 2 TeV, R=0.8",
            classes=(ClassSpec("QCD", _DIJETS), ClassSpec("Top", (*_TTBAR, *_W_HADRONIC), _top_match())),
            radius=0.8,
            pt_min=2000.0,
            pt_max=math.inf,
            abs_eta_max=2.0,
            pthat_min=1850.0,
            mpi=False,
        ),
    }


RECIPES: dict[str, Recipe] = _recipes()


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; an unknown name is an error listing the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known recipes: {sorted(RECIPES)}") from None


def pythia_settings(recipe: Recipe, spec: ClassSpec, seed: int, mpi: bool | None = None) -> list[str]:
    """Every Pythia setting of one class, in the order they are read (recorded in the manifest).

    K0S and Lambda stay undecayed (``tau0Max = 10`` mm), as a detector sees them; everything with a
    shorter lifetime (b and c hadrons) decays in Pythia, so production vertices carry their flight.
    """
    use_mpi = recipe.mpi if mpi is None else mpi
    return [
        "Print:quiet = on",
        f"Beams:eCM = {recipe.ecm:g}",
        *spec.settings,
        f"PhaseSpace:pTHatMin = {recipe.pthat_min:g}",
        f"PartonLevel:MPI = {'on' if use_mpi else 'off'}",
        "ParticleDecays:limitTau0 = on",
        "ParticleDecays:tau0Max = 10",
        *recipe.common_settings,
        "Random:setSeed = on",
        f"Random:seed = {seed}",
    ]
