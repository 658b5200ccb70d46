"""Model registry (timm style): each model file registers its named configurations here.

``create_model("part", num_classes=10, features="kinpid")`` builds a model by name; a named
configuration is a function decorated with ``@register_model`` that takes ``input_dim``,
``num_classes`` and keyword overrides. Every model subclasses ``JetModel`` and names the input kind
it consumes (``input_kind``, see ``jettag.data.kinds``); its ``forward`` takes that kind's inputs.
Particle models (the default kind, ``particles``) share weaver's signature and channel-first
layout, ``forward(points, features, vectors, mask) -> logits`` with points (B, 2, P), features
(B, C, P), vectors (B, 4, P) = (px, py, pz, E), mask (B, 1, P) bool, and ignore what they do not use.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from jettag.models.layers import exporting

_REGISTRY: dict[str, Callable[..., JetModel]] = {}


class JetModel(nn.Module):
    """Base class of every tagger, as timm's models: ``forward(*inputs)`` is
    ``forward_head(forward_features(*inputs))``, where ``forward_features`` gives one vector per
    jet (B, D) and ``forward_head`` the logits; the classifier (the Linear replaced when
    fine-tuning) sits at ``classifier_path``. Also: the input kind, input checks, probabilities."""

    input_kind: ClassVar[str] = "particles"
    #: dotted module path of the classifier, the model's last Linear (e.g. ``head.fc``, ``fc.1``)
    classifier_path: str = "fc"

    def __init__(self, input_dim: int, num_classes: int) -> None:
        super().__init__()
        self.input_dim, self.num_classes = input_dim, num_classes

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(*inputs))

    def forward_features(self, *inputs: torch.Tensor) -> torch.Tensor:
        """One feature vector per jet (B, D), the input of the head."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from ``forward_features``' output (default: the classifier alone)."""
        return self.get_classifier()(x)

    def check_inputs(self, points: torch.Tensor | None, features: torch.Tensor, vectors: torch.Tensor | None,
                     mask: torch.Tensor) -> torch.Tensor:
        """Validate shapes once per call (skipped while tracing/compiling); returns the bool mask."""
        if not (exporting() or torch.compiler.is_compiling()):
            name = type(self).__name__
            if features.ndim != 3 or features.shape[1] != self.input_dim:
                raise ValueError(f"{name}: features must be (batch, {self.input_dim}, particles), "
                                 f"got {tuple(features.shape)}")
            b, _, p = features.shape
            if mask.shape != (b, 1, p):
                raise ValueError(f"{name}: mask must be (batch, 1, particles) = {(b, 1, p)}, "
                                 f"got {tuple(mask.shape)}")
            if vectors is not None and vectors.shape != (b, 4, p):
                raise ValueError(f"{name}: vectors must be (batch, 4, particles) = {(b, 4, p)}, "
                                 f"got {tuple(vectors.shape)}")
            if points is not None and points.shape != (b, 2, p):
                raise ValueError(f"{name}: points must be (batch, 2, particles) = {(b, 2, p)}, "
                                 f"got {tuple(points.shape)}")
        return mask if mask.dtype == torch.bool else mask != 0

    @torch.no_grad()
    def predict_proba(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities (softmax of the logits) of the model's inputs in eval mode, float32."""
        was_training = self.training
        self.eval()
        try:
            return torch.softmax(self(*inputs).float(), dim=-1)
        finally:
            self.train(was_training)

    def get_classifier(self) -> nn.Linear:
        """The last Linear layer (the one replaced when fine-tuning)."""
        return self.get_submodule(self.classifier_path)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised Linear with ``num_classes`` outputs."""
        old = self.get_classifier()
        parent, _, name = self.classifier_path.rpartition(".")
        new = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
        setattr(self.get_submodule(parent) if parent else self, name, new)
        self.num_classes = num_classes


def register_model(fn: Callable[..., JetModel]) -> Callable[..., JetModel]:
    """Decorator: register a named configuration under the function's name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered configurations."""
    return sorted(_REGISTRY)


def feature_dim(features: str | int) -> int:
    """Input width for a feature-set name (``kin``/``kinpid``/``full``/...) or an explicit int."""
    if isinstance(features, int):
        if features <= 0:
            raise ValueError(f"input dimension must be positive, got {features}")
        return features
    from jettag.data.features import FEATURE_SETS

    if features not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {features!r}; use one of {sorted(FEATURE_SETS)} or an int")
    return len(FEATURE_SETS[features])


def create_model(name: str, num_classes: int = 2, features: str | int = "kin", **overrides) -> JetModel:
    """Build the registered configuration ``name`` for the given classes and input features."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    model = _REGISTRY[name](input_dim=feature_dim(features), num_classes=num_classes, **overrides)
    model.model_name = name
    return model


def model_options(name: str) -> list[str]:
    """The keyword overrides configuration ``name`` accepts (its own keyword parameters and, when it
    forwards ``**overrides``, those of the model class it returns), e.g. ``drop_path`` where the
    model has stochastic depth. Used to check a run config before any data is read."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    fn = _REGISTRY[name]
    params = inspect.signature(fn).parameters
    options = {p for p, v in params.items() if v.kind == v.KEYWORD_ONLY or
               (v.kind == v.POSITIONAL_OR_KEYWORD and v.default is not v.empty)}
    if any(v.kind == v.VAR_KEYWORD for v in params.values()):
        cls = typing.get_type_hints(fn)["return"]
        init = inspect.signature(cls.__init__).parameters
        options |= {p for p, v in init.items() if v.default is not v.empty and v.kind != v.VAR_KEYWORD}
    return sorted(options - {"input_dim", "num_classes"})
