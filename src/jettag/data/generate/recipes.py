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


ANY = 1_000  # no upper limit on a hadron count


@dataclass(frozen=True)
class Flavour:
    """Truth flavour of a jet, from the parton that started it and the heavy hadrons inside it.

    ``partons``: allowed |PDG id| of the outgoing hard-process parton nearest to the jet axis, which
    must lie within R (empty: no parton requirement, e.g. pair classes whose two quarks a ``Match``
    already places in the jet). ``b_hadrons`` / ``c_hadrons``: allowed (min, max) number of weakly
    decaying b / c hadrons within R of the axis (the hadron label of ATLAS and CMS, counted as
    hadrons, not ghosts). The two together make the label robust where either alone is not: a gluon
    jet that split to b b-bar has b hadrons, and a b quark whose hadron left the cone has none.
    """

    partons: tuple[int, ...] = ()
    b_hadrons: tuple[int, int] = (0, 0)
    c_hadrons: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class ClassSpec:
    """One class of a recipe: its Pythia process settings and, for signal, its truth requirement.

    ``hard_partons``: for process-labelled classes (quark/gluon), the allowed |PDG id| of the
    outgoing hard-process parton; events with another flavour are vetoed (e.g. c and b quarks for
    the light-quark sample). ``flavour``: a per-jet flavour label (see ``Flavour``).
    ``chunk_settings``: settings that vary from chunk to chunk, cycled (e.g. a mass scan: Pythia
    takes one resonance mass per initialisation, and a chunk is one initialisation).
    """

    name: str
    settings: tuple[str, ...]
    match: Match | None = None
    hard_partons: tuple[int, ...] | None = None
    flavour: Flavour | None = None
    chunk_settings: tuple[tuple[str, ...], ...] = ()

    def varying_settings(self, variant: int) -> tuple[str, ...]:
        """The ``chunk_settings`` entry of chunk variant ``variant`` (cycled; empty when none)."""
        return self.chunk_settings[variant % len(self.chunk_settings)] if self.chunk_settings else ()


@dataclass(frozen=True)
class EventSelection:
    """An event recipe: each event's leading jets in |eta| < abs_eta_max must all pass.

    ``pt_min`` lists the thresholds of the leading, subleading, ... jets; their number is the jets
    stored per event (rows ``n*k .. n*k + n-1`` of the store, leading first, with ``event_*``
    columns for the system of those jets). A class's ``--jets`` count is then a count of events.
    """

    pt_min: tuple[float, ...]
    mass_min: float = 0.0
    mass_max: float = math.inf

    @property
    def n_jets(self) -> int:
        return len(self.pt_min)


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
    event: EventSelection | None = None

    def __post_init__(self) -> None:
        if self.event is not None:  # an event recipe selects events, not single jets
            per_jet = [c.name for c in self.classes if c.match is not None or c.flavour is not None]
            if per_jet:
                raise ValueError(
                    f"recipe {self.name!r}: classes {per_jet} have a per-jet truth requirement, which an "
                    "event recipe (event=...) does not apply"
                )

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]


# Seed 003 (LundNet transfer learning): target top500, sources top2tev and wtag, all anti-kT R=0.8
# jets in |y| < 2.5 (what differs from the paper's samples: docs/generation.md).
_SEED003 = "Dreyer, Grabarczyk, Monni, arXiv:2203.06210 (seed 003); Dreyer, Qu, JHEP 03 (2021) 052"


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
    # Seed 001's all-in-one flavour tagger. Single-flavour jets from QCD 2->2 scattering with one
    # topology for every quark flavour (quark pair creation, g g -> q q-bar and q q-bar -> q' q-bar',
    # so a class differs from another by its flavour, not its production process; both jets of an
    # event are of the same kind, so every event counts) and gluon-pair production for g; two-quark
    # jets from a boosted H -> q q-bar recoiling against an invisible Z.
    none = (0, 0)
    light_pairs = ("HardQCD:gg2qqbar = on", "HardQCD:qqbar2qqbarNew = on", "HardQCD:nQuarkNew = 3")
    gluon_pairs = ("HardQCD:gg2gg = on", "HardQCD:qqbar2gg = on")
    flavour = Recipe(
        name="flavour",
        description="All-in-one flavour classes (ud, s, c, b, g jets; ss, cc, bb pairs in one jet), R=0.8",
        classes=(
            ClassSpec("ud", light_pairs, flavour=Flavour((1, 2), none, none)),
            ClassSpec("s", light_pairs, flavour=Flavour((3,), none, none)),
            ClassSpec("c", ("HardQCD:hardccbar = on",), flavour=Flavour((4,), none, (1, ANY))),
            ClassSpec("b", ("HardQCD:hardbbbar = on",), flavour=Flavour((5,), (1, ANY), (0, ANY))),
            ClassSpec("g", gluon_pairs, flavour=Flavour((21,), none, none)),
            ClassSpec(
                "ss",
                (*_ZH_INVISIBLE, "25:onMode = off", "25:onIfMatch = 3 -3"),
                Match((25,), quarks=2),
                flavour=Flavour((), none, none),
            ),
            ClassSpec(
                "cc",
                (*_ZH_INVISIBLE, "25:onMode = off", "25:onIfMatch = 4 -4"),
                Match((25,), quarks=2),
                flavour=Flavour((), none, (2, ANY)),
            ),
            ClassSpec(
                "bb",
                (*_ZH_INVISIBLE, "25:onMode = off", "25:onIfMatch = 5 -5"),
                Match((25,), quarks=2),
                flavour=Flavour((), (2, ANY), (0, ANY)),
            ),
        ),
        radius=0.8,
        pt_min=250.0,
        pt_max=math.inf,
        abs_eta_max=2.0,
        pthat_min=150.0,
        mpi=True,
        ecm=13000.0,
        reference="Morinaga, Boost 2023 (seed 001): transformer all-in-one flavour tagger",
    )
    # Seed 002's event classification: a heavy H (600-2000 GeV, one mass per chunk, cycled) -> h h ->
    # b b-bar b b-bar against QCD multi-jet and t t-bar, two R=1.0 jets per event (ATLAS
    # PRD 105 (2022) 092002 selection, no b-tagging at generator level). The width is forced to 1% of
    # the mass (a narrow 2HDM-like state): with Pythia's default H2 couplings it would be ~140 GeV at
    # 600 GeV, and the falling gluon luminosity would drag the generated masses far below the nominal.
    heavy_h = ClassSpec(
        "H_hh4b",
        (
            "Higgs:useBSM = on",
            "HiggsBSM:gg2H2 = on",
            "35:doForceWidth = on",
            "35:onMode = off",
            "35:onIfMatch = 25 25",
            "25:onMode = off",
            "25:onIfMatch = 5 -5",
        ),
        chunk_settings=tuple(
            (f"35:m0 = {m}", f"35:mWidth = {m / 100:g}") for m in (600, 800, 1000, 1250, 1500, 2000)
        ),
    )
    hh4b = Recipe(
        name="hh4b",
        description="Events: heavy H -> hh -> 4b vs QCD multi-jet and ttbar, two R=1.0 jets (450/250 GeV)",
        classes=(ClassSpec("QCD", _DIJETS), ClassSpec("ttbar", _TTBAR), heavy_h),
        radius=1.0,
        pt_min=250.0,
        pt_max=math.inf,
        abs_eta_max=2.0,
        pthat_min=300.0,
        mpi=True,
        ecm=13000.0,
        reference="Hammad, Moretti, Nojiri, arXiv:2401.00452 (seed 002)",
        event=EventSelection(pt_min=(450.0, 250.0), mass_min=50.0, mass_max=250.0),
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
            abs_eta_max=2.5,
            pthat_min=400.0,
            use_rapidity=True,
            mpi=False,
            reference=_SEED003,
        ),
        "top2tev": Recipe(
            name="top2tev",
            description="Hadronic tops vs QCD dijets at jet pT > 2 TeV, R=0.8",
            classes=(ClassSpec("QCD", _DIJETS), ClassSpec("Top", (*_TTBAR, *_W_HADRONIC), _top_match())),
            radius=0.8,
            pt_min=2000.0,
            pt_max=math.inf,
            abs_eta_max=2.5,
            pthat_min=1850.0,
            use_rapidity=True,
            mpi=False,
            reference=_SEED003,
        ),
        "top500": Recipe(
            name="top500",
            description="Hadronic tops vs QCD dijets at jet pT > 500 GeV, |y| < 2.5, R=0.8 (seed 003 target)",
            classes=top_classes,
            radius=0.8,
            pt_min=500.0,
            pt_max=math.inf,
            abs_eta_max=2.5,
            pthat_min=400.0,
            use_rapidity=True,
            mpi=False,
            reference=_SEED003,
        ),
        "flavour": flavour,
        "hh4b": hh4b,
    }


RECIPES: dict[str, Recipe] = _recipes()


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; an unknown name is an error listing the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known recipes: {sorted(RECIPES)}") from None


def pythia_settings(
    recipe: Recipe, spec: ClassSpec, seed: int, mpi: bool | None = None, variant: int = 0
) -> list[str]:
    """Every Pythia setting of one class, in the order they are read (recorded in the manifest).

    K0S and Lambda stay undecayed (``tau0Max = 10`` mm), as a detector sees them; everything with a
    shorter lifetime (b and c hadrons) decays in Pythia, so production vertices carry their flight.
    ``variant`` picks the class's ``chunk_settings`` entry (cycled).
    """
    use_mpi = recipe.mpi if mpi is None else mpi
    return [
        "Print:quiet = on",
        f"Beams:eCM = {recipe.ecm:g}",
        *spec.settings,
        *spec.varying_settings(variant),
        f"PhaseSpace:pTHatMin = {recipe.pthat_min:g}",
        f"PartonLevel:MPI = {'on' if use_mpi else 'off'}",
        "ParticleDecays:limitTau0 = on",
        "ParticleDecays:tau0Max = 10",
        *recipe.common_settings,
        "Random:setSeed = on",
        f"Random:seed = {seed}",
    ]
