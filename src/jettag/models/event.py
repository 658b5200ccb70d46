"""Seed 002's event classifiers (arXiv:2401.00452) of two-jet events (the ``event`` kinds).

Inputs (``jettag.data.kinds.event``): per jet up to 50 preprocessed constituents (B, 2, P, 4) or
up to 10 subjets (B, 2, S, 5), their mask, and three kinematics tokens (B, 3, 6): jet 1, jet 2 and
their sum, each (m, eta, phi, pT, E, theta). ``use_theta=False`` zeroes the theta channel.

- ``xattn_event`` (the seed's network): the constituents of each jet through self-attention blocks
  (5 heads, weights shared by the two jets, padding masked); the 3 kinematics tokens through their
  own self-attention blocks; then **cross-attention** with queries and values from the kinematics
  stream and keys from the substructure stream. Shapes, as resolved here: a (3 x P_sub) attention
  matrix cannot weight 3 kinematics values, so the substructure stream is first reduced to three
  tokens aligned with the kinematics tokens (masked mean of jet 1's constituents, of jet 2's, and of
  both jets'), giving a 3 x 3 matrix softmax(Q_kin K_sub^T / sqrt(d)) that weights V_kin. A joint
  attention over [kin; sub] would also hold kin x kin and sub x sub terms; here there are none
  (the logits are Q_kin . K_sub only, the values are the kinematics only, the outputs are the 3
  kinematics rows). Skip connection (kinematics + cross-attention), feed-forward, mean pooling of the
  3 tokens, concatenated with the pooled substructure (a second skip to the substructure stream),
  MLP head.
- ``concat_event`` (the "simple concatenation" baseline): the same two encoders, the pooled
  substructure concatenated with the pooled kinematics, the same head; no cross-attention.
- ``mixer_event`` (the light variant): each jet's exclusive-kT subjets through an MLP-mixer (token
  and channel mixing, padding zeroed before and after every block), then the same kinematics
  encoder, cross-attention and head, at a smaller width.

Every model keeps the last forward's attention matrices in ``attention_maps`` when
``keep_attention`` is set (``jettag.interpret.event``).
"""

from __future__ import annotations

import torch
from torch import nn

from jettag.models.registry import JetModel, register_model


class SelfAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + MHA(LN x), then x + FFN(LN x); padded keys masked."""

    def __init__(self, dim: int, heads: int, ff: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ff * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff * dim, dim)
        )
        self.weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None, keep: bool = False) -> torch.Tensor:
        h = self.norm1(x)
        out, w = self.attn(h, h, h, key_padding_mask=pad, need_weights=keep, average_attn_weights=False)
        self.weights = w.detach() if keep else None
        x = x + out
        return x + self.ffn(self.norm2(x))


class KinSubCrossAttention(nn.Module):
    """Cross-attention of seed 002: queries and values from the kinematics tokens (B, 3, D), keys
    from the substructure tokens (B, 3, D); logits Q_kin K_sub^T / sqrt(d) per head, output (B, 3, D)
    and the weights (B, H, 3, 3). No kin x kin and no sub x sub term."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, kin: torch.Tensor, sub: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, d = kin.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, -1, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q(kin)), split(self.k(sub)), split(self.v(kin))
        w = torch.softmax(q @ k.transpose(-1, -2) / self.head_dim**0.5, dim=-1)
        return self.out((w @ v).transpose(1, 2).reshape(b, n, d)), w


def _masked_mean(x: torch.Tensor, mask: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(dims) / m.sum(dims).clamp(min=1.0)


def substructure_tokens(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Three tokens (B, 3, D) from per-jet entries x (B, 2, L, D): jet 1's masked mean, jet 2's,
    and both jets' (the substructure counterparts of the kinematics tokens)."""
    per_jet = _masked_mean(x, mask, (2,))  # (B, 2, D)
    both = _masked_mean(x, mask, (1, 2))  # (B, D)
    return torch.cat([per_jet, both.unsqueeze(1)], dim=1)


class EventModel(JetModel):
    """Shared parts: kinematics encoder, substructure encoder (subclass), fusion, head."""

    input_kind = "event"
    classifier_path = "fc"
    channels = 4

    def __init__(
        self,
        num_classes: int,
        dim: int,
        heads: int,
        kin_blocks: int,
        fusion: str,
        use_theta: bool = True,
        head_dim: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(self.channels, num_classes)
        if fusion not in ("cross", "concat"):
            raise ValueError(f"fusion must be 'cross' or 'concat', got {fusion!r}")
        self.fusion, self.use_theta, self.keep_attention = fusion, use_theta, False
        self.attention_maps: dict[str, torch.Tensor] = {}
        self.kin_embed = nn.Linear(6, dim)
        self.kin_blocks = nn.ModuleList(
            SelfAttentionBlock(dim, heads, dropout=dropout) for _ in range(kin_blocks)
        )
        self.cross = KinSubCrossAttention(dim, heads) if fusion == "cross" else None
        self.cross_norm_k = nn.LayerNorm(dim)
        self.cross_norm_s = nn.LayerNorm(dim)
        self.cross_ffn = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
        )
        self.head = nn.Sequential(nn.Linear(2 * dim, head_dim), nn.GELU(), nn.Dropout(dropout))
        self.fc = nn.Linear(head_dim, num_classes)

    def encode_substructure(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-entry outputs (B, 2, L, D)."""
        raise NotImplementedError

    def encode_kinematics(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.use_theta:
            tokens = torch.cat([tokens[..., :5], torch.zeros_like(tokens[..., 5:])], dim=-1)
        k = self.kin_embed(tokens)
        for i, blk in enumerate(self.kin_blocks):
            k = blk(k, keep=self.keep_attention)
            if self.keep_attention:
                self.attention_maps[f"kin{i}"] = blk.weights
        return k

    def fuse(self, kin: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
        """(B, 2D) from the kinematics tokens (B, 3, D) and the substructure tokens (B, 3, D)."""
        if self.cross is None:
            return torch.cat([kin.mean(1), sub.mean(1)], dim=-1)
        out, w = self.cross(self.cross_norm_k(kin), self.cross_norm_s(sub))
        if self.keep_attention:
            self.attention_maps["cross"] = w.detach()
        x = kin + out  # skip connection to the kinematics stream
        x = x + self.cross_ffn(x)
        return torch.cat([x.mean(1), sub.mean(1)], dim=-1)  # skip to the substructure stream

    def forward_features(self, items: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        mask = mask if mask.dtype == torch.bool else mask != 0
        if (
            items.ndim != 4
            or items.shape[1] != 2
            or items.shape[-1] != self.channels
            or mask.shape != items.shape[:3]
            or tokens.shape[1:] != (3, 6)
        ):
            raise ValueError(
                f"{type(self).__name__}: expected items (B, 2, L, {self.channels}), mask (B, 2, L), "
                f"tokens (B, 3, 6); got {tuple(items.shape)}, {tuple(mask.shape)}, "
                f"{tuple(tokens.shape)}"
            )
        sub = substructure_tokens(self.encode_substructure(items, mask), mask)
        return self.head(self.fuse(self.encode_kinematics(tokens), sub))


class TransformerEvent(EventModel):
    """``xattn_event`` / ``concat_event``: constituents through self-attention blocks."""

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        dim: int = 80,
        heads: int = 5,
        sub_blocks: int = 3,
        kin_blocks: int = 2,
        fusion: str = "cross",
        use_theta: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(num_classes, dim, heads, kin_blocks, fusion, use_theta, dropout=dropout)
        self.sub_embed = nn.Sequential(nn.Linear(self.channels, dim), nn.GELU(), nn.Linear(dim, dim))
        self.sub_blocks = nn.ModuleList(
            SelfAttentionBlock(dim, heads, dropout=dropout) for _ in range(sub_blocks)
        )

    def encode_substructure(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, j, n, c = items.shape
        x = self.sub_embed(items.reshape(b * j, n, c))
        flat = mask.reshape(b * j, n)
        pad = ~flat
        pad = pad & flat.any(1, keepdim=True)  # a jet with no entry attends to its (zero) padding
        for i, blk in enumerate(self.sub_blocks):
            x = blk(x, pad, keep=self.keep_attention)
            if self.keep_attention:
                self.attention_maps[f"sub{i}"] = blk.weights.reshape(b, j, *blk.weights.shape[1:])
        return x.reshape(b, j, n, -1)


class MixerBlock(nn.Module):
    """MLP-mixer block over (tokens, channels): token mixing, then channel mixing, both residual."""

    def __init__(self, tokens: int, dim: int, ff: int = 2) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(
            nn.Linear(tokens, ff * tokens), nn.GELU(), nn.Linear(ff * tokens, tokens)
        )
        self.channel_mlp = nn.Sequential(nn.Linear(dim, ff * dim), nn.GELU(), nn.Linear(ff * dim, dim))

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        x = (x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)) * m
        return (x + self.channel_mlp(self.norm2(x))) * m


class MixerEvent(EventModel):
    """``mixer_event``: subjets through an MLP-mixer, then cross-attention to the kinematics."""

    input_kind = "event_subjets"
    channels = 5

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        dim: int = 32,
        heads: int = 4,
        mixer_blocks: int = 2,
        kin_blocks: int = 1,
        max_subjets: int = 10,
        fusion: str = "cross",
        use_theta: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(num_classes, dim, heads, kin_blocks, fusion, use_theta, head_dim=64, dropout=dropout)
        self.max_subjets = max_subjets
        self.sub_embed = nn.Linear(self.channels, dim)
        self.mixer = nn.ModuleList(MixerBlock(max_subjets, dim) for _ in range(mixer_blocks))

    def encode_substructure(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, j, n, c = items.shape
        if n > self.max_subjets:
            raise ValueError(f"MixerEvent: {n} subjets per jet, the model mixes at most {self.max_subjets}")
        m = mask.reshape(b * j, n, 1).to(items.dtype)
        x = self.sub_embed(items.reshape(b * j, n, c)) * m
        if n < self.max_subjets:  # token mixing has a fixed width: pad with zeroed entries
            x = nn.functional.pad(x, (0, 0, 0, self.max_subjets - n))
            m = nn.functional.pad(m, (0, 0, 0, self.max_subjets - n))
        for blk in self.mixer:
            x = blk(x, m)
        return x[:, :n].reshape(b, j, n, -1)


@register_model
def xattn_event(input_dim: int, num_classes: int, **overrides) -> TransformerEvent:
    """Seed 002's multi-scale cross-attention network: substructure 3 x self-attention (80, 5 heads),
    kinematics 2 x self-attention, kin <- sub cross-attention, skip connections, MLP head."""
    return TransformerEvent(input_dim, num_classes, **{"fusion": "cross", **overrides})


@register_model
def concat_event(input_dim: int, num_classes: int, **overrides) -> TransformerEvent:
    """The simple-concatenation baseline: the same encoders, pooled outputs concatenated."""
    return TransformerEvent(input_dim, num_classes, **{"fusion": "concat", **overrides})


@register_model
def mixer_event(input_dim: int, num_classes: int, **overrides) -> MixerEvent:
    """The light variant: subjets through a 2-block MLP-mixer (32 wide), cross-attention, head."""
    return MixerEvent(input_dim, num_classes, **overrides)
