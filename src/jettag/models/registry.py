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

from jettag.models.layers import traced

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

    #: inference on CPU runs in sub-batches of about this many padded particles (None: whole batch);
    #: particle-kind models whose every operation acts on one jet at a time in eval mode opt in
    inference_particles: ClassVar[int | None] = None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self._split_inference(inputs):
            return self._forward_sub_batches(*inputs)
        return self.forward_head(self.forward_features(*inputs))

    def _split_inference(self, inputs: tuple[torch.Tensor, ...]) -> bool:
        """Eval mode, no autograd, eager CPU, no attention capture, and more than one sub-batch."""
        if (self.inference_particles is None or self.training or torch.is_grad_enabled() or traced()
                or getattr(self, "capturing_attention", False)):
            return False
        if len(inputs) != 4 or inputs[1].ndim != 3:
            return False  # the usual path reports the bad input
        b, _, p = inputs[1].shape
        return inputs[1].device.type == "cpu" and b * p > self.inference_particles

    def _forward_sub_batches(self, points: torch.Tensor, features: torch.Tensor, vectors: torch.Tensor,
                             mask: torch.Tensor) -> torch.Tensor:
        """Logits of a batch computed in sub-batches of similar multiplicity, each cut to its own
        longest jet: in eval mode every jet is computed alone (BN uses running statistics, padding is
        masked), so this is the same function, with each sub-batch's activations small enough to stay
        in the CPU cache and less padding. The jets go back to their input order."""
        keep = self.check_inputs(points, features, vectors, mask)[:, 0]
        positions = torch.arange(1, keep.shape[-1] + 1, device=keep.device)
        extent = (keep * positions).amax(dim=-1)  # one past each jet's last real particle
        order = torch.argsort(extent, stable=True)
        sorted_len = extent[order].tolist()
        out: torch.Tensor | None = None
        budget, n = self.inference_particles or 1, len(sorted_len)
        start = 0
        while start < n:
            stop = start + 1  # grow while (jets x longest jet) stays within the budget
            while stop < n and (stop + 1 - start) * max(sorted_len[stop], 1) <= budget:
                stop += 1
            idx = order[start:stop]
            p = max(sorted_len[stop - 1], 1)
            logits = self.forward_head(self.forward_features(
                *(t[idx, :, :p] if t is not None else None for t in (points, features, vectors, mask))))
            if out is None:
                out = logits.new_empty(n, logits.shape[-1])
            out[idx] = logits
            start = stop
        assert out is not None
        return out

    def forward_features(self, *inputs: torch.Tensor) -> torch.Tensor:
        """One feature vector per jet (B, D), the input of the head."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from ``forward_features``' output (default: the classifier alone)."""
        return self.get_classifier()(x)

    def check_inputs(self, points: torch.Tensor | None, features: torch.Tensor, vectors: torch.Tensor | None,
                     mask: torch.Tensor) -> torch.Tensor:
        """Validate shapes once per call (skipped while tracing/compiling); returns the bool mask."""
        if not traced():
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
