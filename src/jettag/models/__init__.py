"""Jet tagging models: MIParT, MIParT-L, ParT, ParticleNet, PFN; see ``registry`` and docs/models.md.

Importing the package imports every model file, so that their ``@register_model`` entries exist.
"""

from jettag.models import event, lundnet, mipart, part, particlenet, pfn  # noqa: F401  (registers the models)
from jettag.models.registry import JetModel, create_model, feature_dim, list_models, register_model

__all__ = ["JetModel", "create_model", "feature_dim", "list_models", "register_model"]
