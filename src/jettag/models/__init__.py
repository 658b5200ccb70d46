"""Jet tagging models: MIParT, MIParT-L, ParT, ParticleNet, PFN, seed 001's transformer; see ``registry``
and docs/models.md.

Importing the package imports every model file, so that their ``@register_model`` entries exist.
"""

from jettag.models import (  # noqa: F401  (registers the models)
    event,
    lundnet,
    mipart,
    part,
    particlenet,
    pfn,
    transformer,
)
from jettag.models.registry import JetModel, create_model, feature_dim, list_models, register_model

__all__ = ["JetModel", "create_model", "feature_dim", "list_models", "register_model"]
