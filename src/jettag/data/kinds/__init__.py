"""Input kinds by name (see ``base.py`` for the contract): ``get_kind(model.input_kind)``."""

from __future__ import annotations

from jettag.data.kinds.base import InputKind, KindDataset, TensorBatch
from jettag.data.kinds.event import EventKind, EventSubjetsKind
from jettag.data.kinds.lund import LundKind
from jettag.data.kinds.particles import ParticleBatch, ParticlesKind
from jettag.data.kinds.tokens import TokensKind

_KINDS: dict[str, InputKind] = {}


def register_kind(kind: InputKind) -> InputKind:
    """Make ``kind`` available as ``get_kind(kind.name)``."""
    if kind.name in _KINDS and type(_KINDS[kind.name]) is not type(kind):
        raise ValueError(f"input kind {kind.name!r} registered twice")
    _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> InputKind:
    """The registered input kind ``name``."""
    if name not in _KINDS:
        raise ValueError(f"unknown input kind {name!r}; known: {sorted(_KINDS)}")
    return _KINDS[name]


def list_kinds() -> list[str]:
    return sorted(_KINDS)


register_kind(ParticlesKind())
register_kind(LundKind())
register_kind(EventKind())
register_kind(EventSubjetsKind())
register_kind(TokensKind())

__all__ = ["InputKind", "KindDataset", "ParticleBatch", "ParticlesKind", "TensorBatch", "TokensKind",
           "get_kind", "list_kinds", "register_kind"]
