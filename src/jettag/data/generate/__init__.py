"""Jets made on the user's machine: Pythia 8 events, FastJet anti-kT jets, truth matching, detector.

``generate(recipe, n_jets, out, ...)`` writes canonical parquet chunks plus ``manifest.json``;
``cached_dataset(recipe, n_jets, ...)`` does so once per machine and returns the directory. The
recipes (``top``, ``qg``, ``qg_bc``, ``jetclass``, ``wtag``, ``top2tev``, ``flavour``, ``hh4b``) are
in ``recipes``; see ``docs/generation.md``. Pythia and FastJet are imported only when jets are
actually generated.
"""

from jettag.data.generate.cache import cache_root, cached_dataset
from jettag.data.generate.recipes import RECIPES, get_recipe
from jettag.data.generate.runner import GENERATOR_VERSION, generate, pythia_seed

__all__ = [
    "GENERATOR_VERSION",
    "RECIPES",
    "cache_root",
    "cached_dataset",
    "generate",
    "get_recipe",
    "pythia_seed",
]
