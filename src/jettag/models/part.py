"""Particle Transformer (ParT, arXiv:2202.03772), as weaver-core's ``ParticleTransformer``.

Configured as particle_transformer's ``ParT`` recipe uses it: particle embedding (128, 512, 128),
pair embedding (64, 64, 64) -> 8 (one channel per head, activation kept after the last layer:
``use_pre_activation_pair=False``), 8 particle-attention blocks with the pair bias, 2 class-
attention blocks, final LayerNorm and one Linear. Weights map one-to-one onto weaver's
(``jettag.models.weaver``). Differences are computational only: pair MLP on the lower triangle,
SDPA with the bias as float mask, channel-last layers, padding-independent BN statistics.

``drop_path`` (default 0, as weaver) adds stochastic depth to the 8 + 2 residual blocks, with a rate
rising linearly over depth (``layers.drop_path_rates``: block l of L drops with drop_path * l / L,
the particle blocks first, the class-attention blocks last).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from jettag.models.layers import (
    ClassAttentionHead,
    NormFormerBlock,
    PairEmbed,
    ParticleEmbed,
    compute_dtype,
    drop_path_rates,
    init_linear,
)
from jettag.models.registry import JetModel, register_model


class ParticleTransformer(JetModel):
    inference_particles = 4096  # eval sub-batch (JetModel.forward), the fastest of 512-4096 on 2 cores

    def __init__(self, input_dim: int, num_classes: int, embed_dims: Sequence[int] = (128, 512, 128),
                 pair_embed_dims: Sequence[int] = (64, 64, 64), num_heads: int = 8, num_layers: int = 8,
                 num_cls_layers: int = 2, dropout: float = 0.1, drop_path: float = 0.0) -> None:
        super().__init__(input_dim, num_classes)
        self.embed = ParticleEmbed(input_dim, embed_dims)
        d = self.embed.out_dim
        self.pair_embed = PairEmbed(4, (*pair_embed_dims, num_heads), last_activation=True)
        rates = drop_path_rates(drop_path, num_layers + num_cls_layers)
        self.blocks = nn.ModuleList(
            NormFormerBlock(d, num_heads, dropout=dropout, attn_dropout=dropout, activation_dropout=dropout,
                            drop_path=rate)
            for rate in rates[:num_layers]
        )
        self.head = ClassAttentionHead(d, num_heads, num_cls_layers, num_classes,
                                       drop_path=rates[num_layers:])
        init_linear(self)

    classifier_path = "head.fc"

    def forward_features(self, points: torch.Tensor | None, features: torch.Tensor, vectors: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
        mask = self.check_inputs(None, features, vectors, mask)
        x = self.embed(features, mask)
        (bias,) = self.pair_embed.attention_biases(vectors, mask, compute_dtype(x))
        for block in self.blocks:
            x = block(x, attn_mask=bias)
        return self.head.pool(x, mask)


@register_model
def part(input_dim: int, num_classes: int, **overrides) -> ParticleTransformer:
    """ParT as in arXiv:2202.03772 (2.14M parameters for 7 inputs, 2 classes)."""
    return ParticleTransformer(input_dim, num_classes, **overrides)
