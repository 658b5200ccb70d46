"""Seed 001's plain transformer tagger (Morinaga, Boost 2023): typed tokens, no jet physics inside.

Tokenizer: ``Linear(token features) + Linear(delta eta, delta phi)``, summed (not concatenated),
over the ``tokens`` input kind (``jettag.data.kinds.tokens``: tracks and calorimeter clusters with a
one-hot kind and zeros where a kind lacks a feature). Then ``depth`` pre-LN blocks
``x + DropPath(Dropout(MHSA(LN(x))))`` and ``x + DropPath(Dropout(FFN(LN(x))))`` with the FFN
``Linear(d, 4d) -> GELU -> Dropout -> Linear(4d, d)``, a final LayerNorm, global average pooling
over the real tokens (padding masked out of attention and pooling) and one Linear head.

``head_dim``: the width of each attention head. Haiku's ``MultiHeadAttention(num_heads, key_size)``,
which the seed used, projects q, k, v to ``num_heads * key_size`` and back; with ``key_size`` equal
to the model width (32) that is 4 x 32 = 128 per projection, and it gives the seed's parameter count
(docs/models.md: 101,634 here for 2 classes vs the seed's 101,794). ``head_dim=None`` splits the
width among the heads (PyTorch's convention, 32 / 4 = 8 per head, about half the parameters).

Stochastic depth rises linearly over the blocks to ``drop_path`` (``layers.drop_path_rates``), as
for ParT here; in eval mode it and dropout are off. ``clusters=False`` is the tracks-only variant:
the ``tokens`` kind then passes tracks alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jettag.data.kinds.tokens import TOKEN_FEATURES
from jettag.models.layers import NEG_INF, Attention, DropPath, compute_dtype, drop_path_rates, init_linear
from jettag.models.registry import JetModel, register_model


class KeySizeAttention(Attention):
    """``layers.Attention`` with heads of ``head_dim`` channels each (Haiku's ``key_size``), so the
    q/k/v width ``num_heads * head_dim`` need not equal ``embed_dim``; attention capture
    (``capture_attention``) works as for ``Attention``."""

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, dropout: float = 0.0) -> None:
        super().__init__(num_heads * head_dim, num_heads, dropout)
        self.head_dim = head_dim
        inner = num_heads * head_dim
        self.in_proj = nn.Linear(embed_dim, 3 * inner)
        self.out_proj = nn.Linear(inner, embed_dim)

    def forward(self, query: torch.Tensor, kv: torch.Tensor | None, attn_mask: torch.Tensor | None
                ) -> torch.Tensor:
        if kv is not None:
            raise ValueError("KeySizeAttention does self-attention only")
        b, t, _ = query.shape
        inner = self.num_heads * self.head_dim
        q, k, v = (x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
                   for x in self.in_proj(query).split(inner, dim=-1))
        if attn_mask is not None and attn_mask.dtype != q.dtype:
            attn_mask = attn_mask.to(q.dtype)
        if self.record is not None:
            out = self._explicit(q, k, v, attn_mask, self.record)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                                 dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, inner))


class PreLNBlock(nn.Module):
    """``x + DropPath(Dropout(MHSA(LN(x))))``, then ``x + DropPath(Dropout(FFN(LN(x))))``."""

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, ffn_ratio: int, dropout: float,
                 drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = KeySizeAttention(embed_dim, num_heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_ratio * embed_dim)
        self.fc2 = nn.Linear(ffn_ratio * embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.dropout(self.attn(self.norm1(x), None, attn_mask)))
        h = self.fc2(self.dropout(F.gelu(self.fc1(self.norm2(x)))))
        return x + self.drop_path(self.dropout(h))


class TokenTransformer(JetModel):
    input_kind = "tokens"
    classifier_path = "fc"

    def __init__(self, num_classes: int, embed_dim: int = 32, depth: int = 4, num_heads: int = 4,
                 head_dim: int | None = 32, ffn_ratio: int = 4, dropout: float = 0.1, drop_path: float = 0.1,
                 clusters: bool = True) -> None:
        super().__init__(len(TOKEN_FEATURES), num_classes)
        if head_dim is None:
            if embed_dim % num_heads:
                raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
            head_dim = embed_dim // num_heads
        self.clusters = bool(clusters)  # read by the ``tokens`` kind
        self.tokenizer = nn.Linear(self.input_dim, embed_dim)
        self.position = nn.Linear(2, embed_dim)
        self.blocks = nn.ModuleList(
            PreLNBlock(embed_dim, num_heads, head_dim, ffn_ratio, dropout, rate)
            for rate in drop_path_rates(drop_path, depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.fc = nn.Linear(embed_dim, num_classes)
        init_linear(self)

    def tokens(self, points: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The tokenizer: Linear(features) + Linear(deta, dphi), summed; (B, P, D)."""
        return self.tokenizer(features.transpose(1, 2)) + self.position(points.transpose(1, 2))

    def forward_features(self, points: torch.Tensor, features: torch.Tensor, vectors: torch.Tensor | None,
                         mask: torch.Tensor) -> torch.Tensor:
        mask = self.check_inputs(points, features, None, mask)[:, 0]  # (B, P)
        x = self.tokens(points, features)
        # a jet without tokens (tracks-only, no track) lets its first padded slot be attended, so no
        # softmax row is all -inf; its pooled vector is then 0 (the pooling counts real tokens only)
        keys = mask.clone()
        keys[:, 0] |= ~mask.any(dim=1)
        bias = torch.zeros(keys.shape, dtype=compute_dtype(x), device=x.device).masked_fill(~keys, NEG_INF)
        bias = bias[:, None, None, :]
        for block in self.blocks:
            x = block(x, bias)
        x = self.norm(x)
        m = mask.unsqueeze(-1).to(x.dtype)
        return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


@register_model
def transformer(input_dim: int, num_classes: int, **overrides) -> TokenTransformer:
    """Seed 001's transformer on tracks + clusters: depth 4, width 32, 4 heads of 32 (Haiku key_size),
    FFN x4, dropout 0.1, stochastic depth 0.1. ``input_dim`` (the feature set's width) does not apply:
    the token features are the ``tokens`` kind's."""
    return TokenTransformer(num_classes, **overrides)


@register_model
def transformer_tracks(input_dim: int, num_classes: int, **overrides) -> TokenTransformer:
    """The seed-001 transformer on tracks only (the same network; clusters are not passed)."""
    return TokenTransformer(num_classes, **{"clusters": False, **overrides})
