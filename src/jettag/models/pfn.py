"""Particle Flow Network (Deep Sets, arXiv:1810.05165): the fast baseline.

Phi: a per-particle MLP (128, 128, 128, ReLU) on the input features; the outputs of the real
particles are summed (permutation invariant, padding invariant by construction); F: an MLP
(128, 128, 128, ReLU) and a Linear to the classes. No input normalisation, as in EnergyFlow's PFN
(83,842 parameters for 7 inputs, 2 classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from jettag.models.registry import JetModel, register_model


def _mlp(in_dim: int, dims: Sequence[int]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for dim in dims:
        layers += [nn.Linear(in_dim, dim), nn.ReLU()]
        in_dim = dim
    return nn.Sequential(*layers), in_dim


class PFN(JetModel):
    def __init__(self, input_dim: int, num_classes: int, phi_sizes: Sequence[int] = (128, 128, 128),
                 f_sizes: Sequence[int] = (128, 128, 128), dropout: float = 0.0) -> None:
        super().__init__(input_dim, num_classes)
        self.phi, width = _mlp(input_dim, phi_sizes)
        self.f, width = _mlp(width, f_sizes)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward_features(self, points: torch.Tensor | None, features: torch.Tensor,
                         vectors: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        mask = self.check_inputs(None, features, None, mask)
        per_particle = self.phi(features.transpose(1, 2))  # (B, P, C)
        latent = (per_particle * mask.transpose(1, 2).to(per_particle.dtype)).sum(dim=1)
        return self.dropout(self.f(latent))


@register_model
def pfn(input_dim: int, num_classes: int, **overrides) -> PFN:
    """PFN: Phi (128, 128, 128), sum, F (128, 128, 128)."""
    return PFN(input_dim, num_classes, **overrides)
