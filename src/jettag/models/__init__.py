"""Jet tagging models: MIParT, MIParT-L, ParT, ParticleNet, PFN; see ``registry`` and docs/models.md."""

from jettag.models.registry import JetModel, create_model, feature_dim, list_models, register_model

__all__ = ["JetModel", "create_model", "feature_dim", "list_models", "register_model"]
