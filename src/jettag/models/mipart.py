"""More-Interaction Particle Transformer (MIParT, arXiv:2407.08682), after the authors' code.

Architecture (USST-HEP/MIParT ``MIParticleTransformer``):

- particle embedding 128, 512, D_embed (LN -> Linear -> GELU each, after an input BN);
- one pair MLP in two stages: BN + pointwise 4 -> p1 -> p2 -> D1 gives U1 (D1 channels), one more
  pointwise layer D1 -> 8 gives U2; every pair layer is Linear -> BN -> GELU (the last ones keep
  their activation);
- K = 5 MI blocks: softmax(U1) with padded keys masked is computed once per forward, stored in the
  compute dtype and shared; each block mixes tokens as softmax(U1) V with one head per U1 channel
  (value projection only, no output projection), inside the NormFormer block of ParT;
- L = 5 particle-attention blocks with U2 (8 heads) as additive bias; 2 class-attention blocks
  (dropout 0); final LayerNorm and a Linear head.

The authors' particle and class blocks write the per-head-scaled output back in (head_dim, head)
order; ``head_order="dh"`` reproduces that (it is a fixed channel permutation, the MI blocks with
a head width of 1 are unaffected).

``drop_path`` (default 0, as the authors' code) adds stochastic depth to the K + L + 2 residual
blocks, with a rate rising linearly over depth (``layers.drop_path_rates``: block l of all L_total
drops with drop_path * l / L_total; MI blocks first, then particle blocks, class blocks last).

Named configurations: ``mipart`` (D_embed = D1 = 64, pair MLP 64, 64, 64) and ``mipart_l``
(D_embed = D1 = 128, pair MLP 128, 128, 128).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from jettag.models.layers import (
    NEG_INF,
    ClassAttentionHead,
    NormFormerBlock,
    PairEmbed,
    ParticleEmbed,
    SharedProbabilities,
    compute_dtype,
    drop_path_rates,
    init_linear,
    key_padding_bias,
    sparse_dropout_ok,
    traced,
)
from jettag.models.registry import JetModel, register_model


class MIParticleTransformer(JetModel):
    inference_particles = 2048  # eval sub-batch (JetModel.forward), the fastest of 512-4096 on 2 cores
    classifier_path = "head.fc"

    def __init__(self, input_dim: int, num_classes: int, embed_dims: Sequence[int] = (128, 512, 64),
                 pair_embed_dims: Sequence[int] = (64, 64, 64), num_heads: int = 8, num_mi_layers: int = 5,
                 num_layers: int = 5, num_cls_layers: int = 2, dropout: float = 0.1,
                 head_order: str = "dh", drop_path: float = 0.0) -> None:
        super().__init__(input_dim, num_classes)
        self.embed = ParticleEmbed(input_dim, embed_dims)
        d = self.embed.out_dim
        n_mi = pair_embed_dims[-1]
        if d % n_mi:
            raise ValueError(f"MIParT needs D_embed ({d}) divisible by the U1 channels D1 ({n_mi})")
        # U1 after the last of pair_embed_dims, U2 after the extra D1 -> num_heads layer.
        self.pair_embed = PairEmbed(4, (*pair_embed_dims, num_heads),
                                    outputs=(len(pair_embed_dims) - 1, len(pair_embed_dims)))
        kw = dict(dropout=dropout, attn_dropout=dropout, activation_dropout=dropout, head_order=head_order)
        rates = drop_path_rates(drop_path, num_mi_layers + num_layers + num_cls_layers)
        self.mi_blocks = nn.ModuleList(
            NormFormerBlock(d, n_mi, mixer="value", drop_path=rate, **kw) for rate in rates[:num_mi_layers])
        self.blocks = nn.ModuleList(
            NormFormerBlock(d, num_heads, drop_path=rate, **kw)
            for rate in rates[num_mi_layers:num_mi_layers + num_layers])
        self.head = ClassAttentionHead(d, num_heads, num_cls_layers, num_classes, head_order=head_order,
                                       drop_path=rates[num_mi_layers + num_layers:])
        init_linear(self)

    def mi_probabilities(self, u1: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """softmax over keys of U1 (B, D1, P, P) with padded keys at -inf, in float32, stored as dtype.
        Without autograd (inference) the mask and the softmax are written into U1's own buffer."""
        keys = ~mask[:, 0][:, None, None, :]
        if torch.is_grad_enabled() or u1.dtype != torch.float32 or traced():
            return torch.softmax(u1.float().masked_fill(keys, NEG_INF), dim=-1).to(dtype)
        u1.masked_fill_(keys, NEG_INF)
        return torch.ops.aten._softmax.out(u1, -1, False, out=u1).to(dtype)  # row by row: in place is exact

    def forward_features(self, points: torch.Tensor | None, features: torch.Tensor, vectors: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
        mask = self.check_inputs(None, features, vectors, mask)
        x = self.embed(features, mask)
        dtype = compute_dtype(x)
        probs: torch.Tensor | SharedProbabilities
        if self.training and torch.is_grad_enabled() and sparse_dropout_ok(x) and dtype == torch.float32:
            u1_pairs, (u2,) = self.pair_embed.forward_unscattered(vectors, mask, 0)
            probs = SharedProbabilities(u1_pairs, mask[:, 0])  # U1's square holds the probabilities
        else:
            u1, u2 = self.pair_embed(vectors, mask)
            probs = self.mi_probabilities(u1, mask, dtype)
            del u1
        for block in self.mi_blocks:
            x = block(x, probs=probs)
        bias = key_padding_bias(u2, mask[:, 0], dtype)
        for block in self.blocks:
            x = block(x, attn_mask=bias)
        return self.head.pool(x, mask)


@register_model
def mipart(input_dim: int, num_classes: int, **overrides) -> MIParticleTransformer:
    """MIParT: D_embed = D1 = 64."""
    cfg = dict(embed_dims=(128, 512, 64), pair_embed_dims=(64, 64, 64))
    return MIParticleTransformer(input_dim, num_classes, **{**cfg, **overrides})


@register_model
def mipart_l(input_dim: int, num_classes: int, **overrides) -> MIParticleTransformer:
    """MIParT-L: D_embed = D1 = 128 (pair MLP 128, 128, 128)."""
    cfg = dict(embed_dims=(128, 512, 128), pair_embed_dims=(128, 128, 128))
    return MIParticleTransformer(input_dim, num_classes, **{**cfg, **overrides})
