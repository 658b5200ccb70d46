"""Studies: named sets of runs on named data that end in one report (``jettag study NAME``).

Each study is a module here defining ``STUDY`` (a ``jettag.studies.base.Study``); ``STUDIES`` maps
its name to the module, imported when used. ``docs/studies.md`` explains how to add one.
"""

from __future__ import annotations

import importlib

from jettag.studies.base import Data, RunSpec, Scale, Study, StudyError, run_study

STUDIES = {name: f"jettag.studies.{name}"
           for name in ("finetune", "flavour", "hh4b", "scaling", "top", "transfer")}

__all__ = ["STUDIES", "Data", "RunSpec", "Scale", "Study", "StudyError", "get_study", "list_studies",
           "run_study"]


def get_study(name: str) -> Study:
    """The study registered under ``name``."""
    if name not in STUDIES:
        raise StudyError(f"unknown study {name!r}; known studies: {sorted(STUDIES)}")
    return importlib.import_module(STUDIES[name]).STUDY


def list_studies() -> list[Study]:
    """Every registered study, by name."""
    return [get_study(name) for name in sorted(STUDIES)]
