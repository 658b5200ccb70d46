"""Building blocks shared by the jettag models, each written once.

Layout: the models receive weaver's channel-first tensors ``(B, C, P)`` but work channel-last
``(B, P, C)`` inside, because every pointwise layer is then one ``F.linear`` (a single GEMM)
instead of a ``Conv1d`` with a kernel of one, and attention wants ``(B, P, C)`` anyway.

Blocks:

- ``MaskedBatchNorm``: BatchNorm whose batch statistics are taken over real particles (or real
  pairs) only. In eval mode it is an ordinary BatchNorm with running statistics, so trained
  weaver weights give identical outputs; in training mode the statistics no longer depend on
  how much padding a batch carries (weaver's particle BN counts padded zeros, its sparse pair
  embedding already drops padded pairs, as done here for both).
- ``ParticleEmbed``: BN over the input features, then (LN -> Linear -> GELU) per width.
- ``PairEmbed``: BN + pointwise (Linear -> BN -> GELU) layers on the pair features of
  ``jettag.physics.pairs``, evaluated on the lower triangle (U is symmetric) and mirrored only
  after the last layer, so the MLP runs on P(P+1)/2 pairs instead of P^2. It can emit the
  output of several layers (MIParT's U1 and U2 come from one MLP). At inference (eval, no
  autograd) the BNs are folded into the Linears and the pairs go through in cache-sized chunks.
- ``Attention``: multi-head attention through ``F.scaled_dot_product_attention`` with the pair
  bias (padded keys already at -inf) as a float ``attn_mask``.
- ``NormFormerBlock``: ParT's block (LN -> attention -> per-head scale -> LN -> dropout ->
  residual; LN -> fc1 -> GELU -> dropout -> LN -> fc2 -> dropout -> per-channel residual scale).
  The token mixer is either ``Attention`` or ``ValueAttention`` (MIParT's MI attention), and the
  same block runs as a class-attention block (CaiT) with ``forward_cls``. ``DropPath``
  (stochastic depth) sits on both residual branches; at rate 0 (the default) it is not called.
- ``EdgeConv``: ParticleNet's EdgeConv block.
- ``capture_attention(model)``: a context manager under which every ``Attention`` and
  ``ValueAttention`` of ``model`` records its attention probabilities (for ``jettag interpret``).
  Outside it the modules take their usual fused path; inside it ``Attention`` computes the same
  product with an explicit softmax so the weights exist as a tensor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from collections.abc import Iterator, Sequence

import numba
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from jettag.jit import njit, numba_threads
from jettag.models import attention16, bn_gelu, mi_kernels
from jettag.physics.pairs import pair_features_dense, pair_features_tril, real_pair_features, scatter_tril

NEG_INF = float("-inf")
#: floats of one pair layer's activations per step of the pair MLP at inference: 16 MiB, under glibc's
#: 32 MiB ceiling for serving allocations from the heap, above which every chunk would be fresh pages
#: (65,536 rows at width 64, 32,768 at MIParT-L's 128: 7% faster than 65,536 there)
PAIR_ACTIVATIONS = 2**22


def exporting() -> bool:
    """True while tracing for ONNX / TorchScript, where shape-dependent Python caches must not run."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def traced() -> bool:
    """True while exporting (``exporting``) or compiling with torch.compile: the eager-only paths
    (numba kernels, Python-side caches, in-place buffers sized from the data) must not run."""
    return exporting() or torch.compiler.is_compiling()


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls produce for ``x`` right now (the autocast dtype when autocast is on)."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


#: oneDNN copies of Parameters' weights in its blocked layout: weight -> (version, packed copy)
_PACKED = WeakIdKeyDictionary()
#: PairEmbed -> (its parameters' and buffers' state, its inference layers)
_FOLDED = WeakIdKeyDictionary()


def fused_linear(x: torch.Tensor) -> bool:
    """Whether ``linear`` takes oneDNN's fused kernel for ``x``: float32 on CPU, no autograd, no
    autocast, not exporting or compiling."""
    return (torch.backends.mkldnn.is_available() and not traced() and not torch.is_grad_enabled()
            and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None = None
           ) -> torch.Tensor:
    """x W^T + b, then GELU (exact, erf form) when ``activation="gelu"``.

    Without autograd on CPU in float32 it is one oneDNN kernel (``mkldnn._linear_pointwise``, the
    kernel inductor lowers to) with the GELU fused into the GEMM, which skips a pass of the
    activations through memory: a 4096 x 128 -> 512 layer took 2.0 ms against 6.0 ms for
    ``F.linear`` + ``F.gelu`` on 2 cores, same values. A Parameter's weight goes in as oneDNN's
    blocked copy, made once and remade when the weight changes (its version counter moves): 7-15%
    less time per GEMM at ParT's sizes than with the plain weight. Elsewhere (and under autocast,
    which these kernels would bypass) ``F.linear``/``F.gelu``.
    """
    if fused_linear(x):
        if isinstance(weight, nn.Parameter):
            version, packed = _PACKED.get(weight, (-1, weight))
            if version != weight._version:
                packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 4096)
                _PACKED[weight] = (weight._version, packed)
            weight = packed
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation or "none", [], "none")
    y = F.linear(x, weight, bias)
    return F.gelu(y) if activation == "gelu" else y


class MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the channel axis whose training statistics skip masked (padded) entries.

    Same parameters and buffers as ``nn.BatchNorm1d`` (so weaver's BN weights load unchanged),
    but it accepts any rank and either a channel-first (``channel_last=False``, dim 1) or a
    channel-last (dim -1) layout. ``mask`` is a bool tensor broadcastable to ``x`` with size 1 on
    the channel axis; only True entries enter the batch mean/variance. Statistics are computed in
    float32 even under autocast.
    """

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, mask: torch.Tensor | None = None, channel_last: bool = False
    ) -> torch.Tensor:
        if mask is None and (x.ndim == 2 or (x.ndim == 3 and not channel_last)):
            return super().forward(x)  # native fused kernel (N, C) / (B, C, P)
        cdim = x.ndim - 1 if channel_last else 1
        shape = [1] * x.ndim
        shape[cdim] = -1
        if self.training:
            dims = [d for d in range(x.ndim) if d != cdim]
            xf = x.float()
            if mask is None:
                n = torch.tensor(xf.numel() / xf.shape[cdim], device=x.device)
                mean = xf.mean(dim=dims)
                var = xf.var(dim=dims, unbiased=False)
            else:
                w = mask.to(xf.dtype)
                n = torch.broadcast_to(w, xf.shape).sum(dim=dims)[0].clamp(min=1)
                mean = (xf * w).sum(dim=dims) / n
                var = (((xf - mean.view(shape)) ** 2) * w).sum(dim=dims) / n
            if self.track_running_stats and self.running_mean is not None:
                with torch.no_grad():
                    self.num_batches_tracked.add_(1)
                    m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                    unbiased = var * n / (n - 1).clamp(min=1)
                    self.running_mean.mul_(1 - m).add_(m * mean)
                    self.running_var.mul_(1 - m).add_(m * unbiased)
        else:
            if not channel_last and x.ndim <= 3:
                return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False,
                                    0.0, self.eps)
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var + self.eps) * self.weight
        shift = self.bias - mean * scale
        return (x * scale.view(shape).to(x.dtype) + shift.view(shape).to(x.dtype))


class ParticleEmbed(nn.Module):
    """BN over input features, then (LayerNorm -> Linear -> GELU) per width; padded tokens zeroed.

    Input ``(B, C, P)`` channel-first plus mask ``(B, 1, P)``; output ``(B, P, dims[-1])``.
    """

    def __init__(self, input_dim: int, dims: Sequence[int], activation: str = "gelu") -> None:
        super().__init__()
        self.input_bn = MaskedBatchNorm(input_dim)
        layers: list[nn.Module] = []
        for dim in dims:
            layers += [nn.LayerNorm(input_dim), nn.Linear(input_dim, dim), _activation(activation)]
            input_dim = dim
        self.embed = nn.Sequential(*layers)
        self.out_dim = input_dim

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.input_bn(features, mask).transpose(1, 2)
        for k in range(0, len(self.embed), 3):
            norm, lin, act = self.embed[k:k + 3]
            x = norm(x)
            x = linear(x, lin.weight, lin.bias, "gelu") if isinstance(act, nn.GELU) else act(lin(x))
        return x.masked_fill(~mask.transpose(1, 2), 0.0)


def _activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r} (use 'gelu' or 'relu')")


class PairLayer(nn.Module):
    """One pointwise pair layer: Linear -> BN (over real pairs) -> optional activation."""

    def __init__(self, in_dim: int, out_dim: int, activation: str | None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.bn = MaskedBatchNorm(out_dim)
        self.act = _activation(activation) if activation else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        z = self.linear(x)
        gelu = isinstance(self.act, nn.GELU) and self.act.approximate == "none"
        hooked = self.bn._forward_pre_hooks or self.bn._forward_hooks  # e.g. a frozen BN kept in eval
        if self.bn.training and mask is None and gelu and not (hooked or traced()) and bn_gelu.supported(z):
            return bn_gelu.batchnorm_gelu(z, self.bn)  # CPU training on the real pairs: 2 big tensors, not 4
        return self.act(self.bn(z, mask, channel_last=True))


@njit(parallel=True)
def _scatter_pairs(values, bidx, ii, jj, out):  # pragma: no cover - compiled
    for q in numba.prange(values.shape[0]):
        b, i, j = bidx[q], ii[q], jj[q]
        for c in range(values.shape[1]):
            out[b, c, i, j] = values[q, c]
            out[b, c, j, i] = values[q, c]


def scatter_pairs_(out: torch.Tensor, values: torch.Tensor, bidx: torch.Tensor, ii: torch.Tensor,
                   jj: torch.Tensor) -> None:
    """out[b, :, i, j] = out[b, :, j, i] = values (N, C) of the pairs (b, i, j), into a contiguous
    (B, C, P, S >= P) ``out``. On CPU in float32 a numba loop over the pairs (ParT's 45 x 90-particle
    sub-batch: 1.4 ms against 2.6 ms for two ``index_put_`` through a channel-last view, MIParT's 64
    channels 39 against 53 ms); elsewhere those two ``index_put_``."""
    if out.device.type == "cpu" and out.dtype == values.dtype == torch.float32 and out.is_contiguous():
        numba_threads()
        _scatter_pairs(values.detach().contiguous().numpy(), bidx.numpy(), ii.numpy(), jj.numpy(),
                       out.detach().numpy())
        return
    view = out.permute(0, 2, 3, 1)
    view.index_put_((bidx, ii, jj), values)
    view.index_put_((bidx, jj, ii), values)


class _ScatterPairs(torch.autograd.Function):
    """Values (N, C) of lower-triangle pairs (b, i, j), i >= j, into a symmetric (B, C, P, P) tensor
    (zero elsewhere), written in place through a (B, P, P, C) view of a contiguous (B, C, P, P) tensor
    so that the softmax / attention bias downstream reads rows without a layout copy.

    Backward gathers the gradient at (i, j) and at (j, i) (the diagonal once) through a channel-last
    view of it, where autograd's two ``index_put_`` would clone and re-zero the whole gradient twice.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, bidx: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor, b: int,
                n: int) -> torch.Tensor:
        y = x.new_zeros(b, x.shape[-1], n, n)
        scatter_pairs_(y, x, bidx, ii, jj)
        ctx.save_for_backward(bidx, ii, jj)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None, None]:
        bidx, ii, jj = ctx.saved_tensors
        b, c, n, _ = grad.shape
        pairs = grad.reshape(b, c, n * n).transpose(1, 2)  # (B, P * P, C) view, no layout copy
        below = pairs[bidx, ii * n + jj]
        above = pairs[bidx, jj * n + ii].masked_fill_((ii == jj).unsqueeze(-1), 0.0)
        return below.add_(above), None, None, None, None, None


@dataclasses.dataclass
class PairValues:
    """A pair layer's values before the scatter to (B, C, P, P): ``values`` (N, C) of the real pairs
    (b, i, j), i >= j, of the lower triangle (sorted by b), the square's batch size and side."""

    values: torch.Tensor
    bidx: torch.Tensor
    ii: torch.Tensor
    jj: torch.Tensor
    batch: int
    side: int

    def scatter(self) -> torch.Tensor:
        return _ScatterPairs.apply(self.values, self.bidx, self.ii, self.jj, self.batch, self.side)


class PairEmbed(nn.Module):
    """Pair embedding U = MLP(BN(pair features)) on the lower triangle, mirrored at the end.

    Args:
        dims: output width of each pointwise layer (ParT: 64, 64, 64, 8).
        outputs: indices of the layers whose outputs are returned as full ``(B, C, P, P)``
            tensors (default: the last). MIParT asks for (2, 3): U1 after the D1 layer, U2 after
            the extra D1 -> 8 layer.
        last_activation: keep the activation after the last layer (weaver's
            ``use_pre_activation_pair=False``, as ParT and MIParT are configured).

    Only the requested outputs are scattered to the square, so the wide hidden layers never
    leave the triangle. Batch statistics of every BN use real-real pairs only.
    """

    def __init__(self, input_dim: int, dims: Sequence[int], outputs: Sequence[int] | None = None,
                 last_activation: bool = True, activation: str = "gelu") -> None:
        super().__init__()
        self.input_bn = MaskedBatchNorm(input_dim)
        self.layers = nn.ModuleList()
        for k, dim in enumerate(dims):
            act = activation if (k < len(dims) - 1 or last_activation) else None
            self.layers.append(PairLayer(input_dim, dim, act))
            input_dim = dim
        self.outputs = tuple(outputs) if outputs is not None else (len(dims) - 1,)

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        if exporting():  # ONNX: broadcast over all P x P pairs, no index tensors (symbolic P)
            return self._forward_dense(vectors, mask)
        if torch.compiler.is_compiling():
            return self._forward_tril(vectors, mask)
        return self._forward_real_pairs(vectors, mask)

    def forward_unscattered(self, vectors: torch.Tensor, mask: torch.Tensor, index: int
                            ) -> tuple[PairValues, list[torch.Tensor]]:
        """The eager path with output ``index`` (of the requested outputs) left as the real pairs'
        values (``PairValues``) for a consumer that scatters it itself, and the others as ``forward``
        gives them. Not for export or torch.compile."""
        outs = self._forward_real_pairs(vectors, mask, index)
        return outs.pop(index), outs

    def _forward_real_pairs(self, vectors: torch.Tensor, mask: torch.Tensor, unscattered: int | None = None
                            ) -> list:  # tensors, and at ``unscattered`` a PairValues
        """Eager path: the MLP runs on the real pairs of the triangle only (data-dependent count)."""
        b, _, n = vectors.shape
        x, bidx, ii, jj = real_pair_features(vectors, mask)  # (N_real, 4)
        if not (self.training or torch.is_grad_enabled()):
            return self._mlp_inference(x, bidx, ii, jj, b, n)
        x = self.input_bn(x)
        outs = []
        for k, layer in enumerate(self.layers):
            x = layer(x, None)
            if k in self.outputs:
                pairs = PairValues(x, bidx, ii, jj, b, n)
                outs.append(pairs if len(outs) == unscattered else pairs.scatter())
        return outs

    def attention_biases(self, vectors: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype
                         ) -> list[torch.Tensor]:
        """The requested outputs as attention biases: ``key_padding_bias`` of ``forward``'s outputs
        (padded keys at -inf, the key axis widened to ``sdpa_keys(P)``, in ``dtype``). At float32
        inference (eval, no autograd, eager) the MLP writes the real pairs' values straight into
        tensors that already hold that key pattern (``key_padding_pattern``), one pass over each
        (B, C, P, S) tensor fewer than masking a finished square."""
        keep = mask[:, 0]
        if dtype == torch.float32 and not (self.training or torch.is_grad_enabled() or traced()):
            x, bidx, ii, jj = real_pair_features(vectors, mask)
            return self._mlp_inference(x, bidx, ii, jj, vectors.shape[0], vectors.shape[-1], keys=keep)
        return [key_padding_bias(u, keep, dtype) for u in self(vectors, mask)]

    def folded_layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's (weight, bias) with its eval-mode BN folded in (and the input BN into the
        first): Linear -> BN(running statistics) is the single affine map W' x + b' with
        W' = s W, b' = s (b - mean) + beta, s = gamma / sqrt(var + eps)."""
        def scale_shift(bn: MaskedBatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
            s = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            return s, bn.bias - bn.running_mean * s

        s_in, t_in = scale_shift(self.input_bn)
        folded = []
        for k, layer in enumerate(self.layers):
            w, b = layer.linear.weight, layer.linear.bias
            if k == 0:
                w, b = w * s_in, b + w @ t_in
            s, t = scale_shift(layer.bn)
            folded.append((w * s.unsqueeze(-1), b * s + t))
        return folded

    def _inference_layers(self, packed: bool, rows: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``folded_layers``, with the weights in oneDNN's blocked layout for ``rows``-row inputs when
        ``packed``; kept until a parameter or BN statistic of this module changes (data pointer or
        version counter)."""
        tensors = itertools.chain(self.parameters(), self.buffers())
        state = (packed, rows, *((t.data_ptr(), t._version) for t in tensors))
        cached = _FOLDED.get(self)
        if cached is not None and cached[0] == state:
            return cached[1]
        layers = self.folded_layers()
        if packed:
            layers = [(torch.ops.mkldnn._reorder_linear_weight(w, rows), bias) for w, bias in layers]
        _FOLDED[self] = (state, layers)
        return layers

    def _mlp_inference(self, x: torch.Tensor, bidx: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor, b: int,
                       n: int, keys: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The pair MLP in eval mode without autograd on the (N, 4) features of the real pairs
        (b, i, j), i >= j: BN folded into the Linears (``folded_layers``), their weights in oneDNN's
        blocked layout where ``linear`` fuses (5% less time), and the rows taken in chunks of
        ``PAIR_ACTIVATIONS`` floats at the widest layer, so that a layer's activations never exist
        for all pairs at once; each chunk's requested outputs go straight to (i, j) and (j, i) of
        their symmetric (B, width, P, P) tensors, zero elsewhere, or with ``keys`` (B, P) the
        (B, width, P, S) attention biases of ``key_padding_pattern``."""
        rows = max(1, PAIR_ACTIVATIONS // max(layer.linear.out_features for layer in self.layers))
        layers = self._inference_layers(fused_linear(x), rows)
        widths = [layers[k][1].shape[0] for k in self.outputs]
        outs = ([x.new_zeros(b, c, n, n) for c in widths] if keys is None
                else [key_padding_pattern(keys, c, x.dtype) for c in widths])
        for start in range(0, x.shape[0], rows):
            chunk = slice(start, start + rows)
            y = x[chunk]
            for k, ((w, bias), layer) in enumerate(zip(layers, self.layers)):
                gelu = isinstance(layer.act, nn.GELU)
                y = linear(y, w, bias, "gelu") if gelu else layer.act(linear(y, w, bias))
                if k in self.outputs:
                    out = outs[self.outputs.index(k)]  # float32 also where autocast ran the layer in bf16
                    scatter_pairs_(out, y.to(out.dtype), bidx[chunk], ii[chunk], jj[chunk])
        return outs

    def _forward_tril(self, vectors: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Static-shape path (torch.compile): the whole triangle, BN statistics over real pairs."""
        n = vectors.shape[-1]
        feats, i, j = pair_features_tril(vectors, mask)  # (B, 4, T)
        x = feats.transpose(1, 2)  # (B, T, 4)
        m = mask[:, 0]
        pmask = (m[:, i] & m[:, j]).unsqueeze(-1)
        x = self.input_bn(x, pmask, channel_last=True)
        outs = []
        for k, layer in enumerate(self.layers):
            x = layer(x, pmask)
            if k in self.outputs:
                outs.append(scatter_tril(x.transpose(1, 2), i, j, n))
        return outs

    def _forward_dense(self, vectors: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Export path: all P x P pairs by broadcasting, no index tensors (symbolic P in ONNX)."""
        x = pair_features_dense(vectors, mask)  # (B, P, P, 4)
        pmask = None
        if self.training:  # batch statistics over the real pairs of the lower triangle, as the other paths
            real = mask[:, 0].unsqueeze(-1) & mask[:, 0].unsqueeze(-2)
            pmask = torch.tril(real).unsqueeze(-1)
        x = self.input_bn(x, pmask, channel_last=True)
        outs = []
        for k, layer in enumerate(self.layers):
            x = layer(x, pmask)
            if k in self.outputs:
                outs.append(x.permute(0, 3, 1, 2))
        return outs


def sdpa_keys(n: int, x: torch.Tensor) -> int:
    """How many keys attention over ``n`` keys of ``x``'s device runs on: without autograd on CPU,
    ``n`` rounded up to a multiple of 16, the block width of SDPA's CPU kernel, where it is 1.3-1.9x
    faster over the same real keys (45 jets x 90 keys: 3.2 ms; padded to 96: 2.1 ms; 2 cores);
    elsewhere ``n``. The extra keys are zero vectors with bias -inf, so they get weight exactly 0."""
    if x.device.type != "cpu" or torch.is_grad_enabled() or traced():
        return n
    return -(-n // 16) * 16


def key_padding_pattern(keys: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """A (B, channels, P, sdpa_keys(P)) attention bias of zeros at the real keys of ``keys`` (B, P)
    and -inf at padded and widened ones, into which real pairs' values are then written."""
    b, n = keys.shape
    row = torch.full((b, 1, 1, sdpa_keys(n, keys)), NEG_INF, dtype=dtype, device=keys.device)
    row[..., :n].masked_fill_(keys[:, None, None, :], 0.0)
    return row.expand(b, channels, n, row.shape[-1]).contiguous()


def key_padding_bias(bias: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Pair bias (B, H, P, P) with padded keys set to -inf, cast once to the attention dtype; the key
    axis is widened to ``sdpa_keys(P)`` with -inf columns (``Attention`` pads k and v to match)."""
    b, h, t, n = bias.shape
    keys, bias = sdpa_keys(n, bias), bias.to(dtype)
    if keys == n:
        return bias.masked_fill(~mask[:, None, None, :], NEG_INF)
    out = bias.new_empty(b, h, t, keys)  # written in place: sdpa_keys widens only without autograd
    out[..., n:] = NEG_INF
    torch.where(mask[:, None, None, :], bias, bias.new_full((), NEG_INF), out=out[..., :n])
    return out


class Attention(nn.Module):
    """Multi-head attention (packed q/k/v projection) through ``F.scaled_dot_product_attention``.

    ``attn_mask`` is the additive float bias (B or 1, H or 1, T, S) that already holds -inf for
    padded keys; SDPA picks a fused kernel, so no (B, H, P, P) score tensor is written by hand.
    A bias wider than the keys (``key_padding_bias`` under ``sdpa_keys``) gets zero keys and values
    for its extra columns.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.record: list[torch.Tensor] | None = None  # set by ``capture_attention`` only

    def forward(self, query: torch.Tensor, kv: torch.Tensor | None, attn_mask: torch.Tensor | None
                ) -> torch.Tensor:
        b, t, d = query.shape
        w, bias = self.in_proj.weight, self.in_proj.bias
        if kv is None:  # self-attention: one GEMM for q, k and v
            qkv = linear(query, w, bias)
            q, kv = qkv[..., :d], qkv[..., d:]
        else:
            q = linear(query, w[:d], bias[:d])
            kv = linear(kv, w[d:], bias[d:])
        if (self.head_dim == attention16.HEAD_DIM and not (self.training and self.dropout > 0)
                and self.record is None and not traced() and attention16.usable(q, kv.shape[1], attn_mask)):
            out = attention16.attend(q, kv[..., :d], kv[..., d:], attn_mask, self.num_heads)
            return linear(out, self.out_proj.weight, self.out_proj.bias)
        if attn_mask is not None and attn_mask.shape[-1] > kv.shape[1]:  # keys widened by ``sdpa_keys``
            if self.record is None:  # zero vectors as the extra keys
                padded = kv.new_empty(b, attn_mask.shape[-1], 2 * d)
                padded[:, kv.shape[1]:].zero_()
                padded[:, :kv.shape[1]] = kv
                kv = padded
            else:  # recorded maps keep one column per real key
                attn_mask = attn_mask[..., :kv.shape[1]]
        k, v = kv.split(d, dim=-1)
        s = k.shape[1]
        q = q.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        if attn_mask is not None and attn_mask.dtype != q.dtype:
            attn_mask = attn_mask.to(q.dtype)
        if self.record is not None:
            out = self._explicit(q, k, v, attn_mask, self.record)
        elif self.training and self.dropout > 0 and sparse_dropout_ok(q):
            out = self._train_dropout(q, k, v, attn_mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                                 dropout_p=self.dropout if self.training else 0.0)
        return linear(out.transpose(1, 2).reshape(b, t, d), self.out_proj.weight, self.out_proj.bias)

    def _train_dropout(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       attn_mask: torch.Tensor | None) -> torch.Tensor:
        """Training with attention dropout on CPU: softmax(q k^T / sqrt(d) + mask) written out (the
        bias added inside the product, ``baddbmm``) and mixed by ``dropout_matmul``, where SDPA
        would fall back to its unfused path with a ``bernoulli_`` mask."""
        b, h, t, hd = q.shape
        s = k.shape[2]
        q3, k3, v3 = (x.reshape(b * h, -1, hd) for x in (q, k, v))
        if attn_mask is None:
            scores = torch.bmm(q3, k3.transpose(1, 2)).mul_(1.0 / math.sqrt(hd))
        else:
            bias = attn_mask.expand(b, h, t, s).reshape(b * h, t, s)
            scores = torch.baddbmm(bias, q3, k3.transpose(1, 2), alpha=1.0 / math.sqrt(hd))
        probs = torch.softmax(scores, dim=-1)
        return dropout_matmul(probs, v3, self.dropout, True).view(b, h, t, hd)

    def _explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
                  record: list[torch.Tensor]) -> torch.Tensor:
        """softmax(q k^T / sqrt(d) + mask) v written out (eval only), appending the probabilities
        (B, H, T, S) in float32 to ``record``; -inf keys get exactly 0."""
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(self.head_dim)
        if attn_mask is not None:
            scores = scores + attn_mask.float()
        probs = torch.softmax(scores, dim=-1)
        record.append(probs.detach())
        return torch.matmul(probs.to(v.dtype), v)


def sparse_dropout_ok(x: torch.Tensor) -> bool:
    """True where dropout draws its positions with ``dropped_positions`` (eager CPU tensors); on
    CUDA, under torch.compile or tracing, torch's own dropout kernels are used instead."""
    return x.device.type == "cpu" and not traced()


def dropped_positions(numel: int, p: float) -> torch.Tensor:
    """Sorted flat indices (int64) of the elements an independent Bernoulli(p) dropout of ``numel``
    elements sets to zero.

    The positions of a Bernoulli(p) process are drawn through their gaps, which are i.i.d.
    Geometric(p) on {1, 2, ...}: gap = floor(log(1 - u) / log(1 - p)) + 1 for one float64 uniform u
    in [0, 1) of torch's default CPU generator (P(gap = k) = (1 - p)^(k - 1) p). Each element is therefore
    dropped independently with probability p, exactly the mask ``bernoulli_`` would give in
    distribution, but from ~p * numel random numbers instead of numel: on CPU torch draws every
    random number serially from one Mersenne twister, and at p = 0.1 that draw was most of the cost
    of dropout. The generator's state (checkpointed by the trainer) fixes the result; the number of
    uniforms drawn depends only on ``numel``, ``p`` and that state.
    """
    if numel == 0 or p <= 0.0:
        return torch.empty(0, dtype=torch.int64)
    log_q = math.log1p(-p)
    mean = numel * p
    chunk = int(mean + 8.0 * math.sqrt(mean) + 64)  # enough gaps to pass numel almost always
    pieces: list[torch.Tensor] = []
    last = -1.0  # position of the previous dropped element
    while last < numel:
        u = torch.empty(chunk, dtype=torch.float64).uniform_()  # [0, 1): 1 - u is exact and > 0
        gaps = u.neg_().add_(1.0).log_().div_(log_q).floor_().add_(1.0)
        pos = gaps.cumsum_(0).add_(last)  # float64: integers exact far beyond any tensor size
        pieces.append(pos)
        last = float(pos[-1])
    pos = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    return pos[: int(torch.searchsorted(pos, float(numel)))].to(torch.int64)


class _SparseDropout(torch.autograd.Function):
    """x * keep / (1 - p) with the dropped positions from ``dropped_positions``; saves only those."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        scale = 1.0 / (1.0 - p)
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        torch.mul(x, scale, out=out)
        pos = dropped_positions(out.numel(), p)
        out.view(-1).index_fill_(0, pos, 0.0)
        ctx.save_for_backward(pos)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (pos,) = ctx.saved_tensors
        out = torch.empty_like(grad, memory_format=torch.contiguous_format)
        torch.mul(grad, ctx.scale, out=out)
        return out.view(-1).index_fill_(0, pos, 0.0).view_as(out), None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)`` in distribution: an independent Bernoulli(p) zero per element,
    kept elements scaled by 1 / (1 - p). On CPU the dropped positions come from
    ``dropped_positions`` (the random numbers a tenth of ``bernoulli_``'s at p = 0.1)."""
    if not training or p == 0.0:
        return x
    if sparse_dropout_ok(x):
        return _SparseDropout.apply(x, p)
    return F.dropout(x, p, True)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same name, no parameters) whose CPU training path is ``layers.dropout``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return dropout(x, self.p, self.training)


class _DropoutMatmul(torch.autograd.Function):
    """``dropout(a, p) @ v`` for a (N, T, S) and v (N, S, D): ``a`` copied once with the entries at
    ``dropped_positions`` set to zero, one ``bmm``, the 1 / (1 - p) scale applied to the (small)
    output. Saved for backward: that copy, ``v`` and the positions (p * numel int64), where
    ``F.dropout`` + ``matmul`` would save a float mask and the dropped product and draw one random
    number per element."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
        kept = a.clone(memory_format=torch.contiguous_format)
        pos = dropped_positions(kept.numel(), p)
        kept.view(-1).index_fill_(0, pos, 0.0)
        ctx.scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(kept, v, pos)
        return torch.bmm(kept, v).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        kept, v, pos = ctx.saved_tensors
        grad = grad * ctx.scale
        grad_a = grad_v = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.bmm(grad, v.transpose(1, 2))
            grad_a.view(-1).index_fill_(0, pos, 0.0)
        if ctx.needs_input_grad[1]:
            grad_v = torch.bmm(kept.transpose(1, 2), grad)
        return grad_a, grad_v, None


def dropout_matmul(a: torch.Tensor, v: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``dropout(a, p, training) @ v`` over (..., T, S) x (..., S, D): on CPU through
    ``_DropoutMatmul`` (a tenth of the random numbers at p = 0.1, no float mask), else torch's."""
    if not training or p == 0.0:
        return torch.matmul(a, v)
    if not sparse_dropout_ok(a):
        return torch.matmul(F.dropout(a, p, True), v)
    lead = a.shape[:-2]
    out = _DropoutMatmul.apply(a.reshape(-1, *a.shape[-2:]), v.reshape(-1, *v.shape[-2:]), p)
    return out.view(*lead, *out.shape[-2:])


class SharedProbabilities:
    """MIParT's softmax(U1) (B, H, P, P) over keys, padded keys masked, shared by the MI blocks of one
    training step on CPU (float32).

    Each block applies its own dropout mask to the same probabilities. Passed to the blocks as an
    autograd input, the probabilities would cost per block a saved masked copy, an outer-product
    gradient and an accumulating sum, each a fresh (B, H, P, P) tensor, and the scatter of U1 and
    its backward two more. Here ``_ShareProbabilities`` scatters the pair MLP's values into U1,
    turns it into the probabilities in place and enters autograd once (a scalar token stands for
    them in the blocks' graph). The blocks mix with the fused kernels of ``mi_kernels`` (the mask
    regenerated from a per-block seed wherever P is read, never stored); each block's backward adds
    its (seed, p, dL/dout, v) to ``blocks``, and ``mi_kernels.softmax_grad_pairs``
    turns them all into the gradient of the pair values, jet by jet, without a (B, H, P, P)
    gradient tensor.
    """

    def __init__(self, u1: PairValues, keep: torch.Tensor) -> None:
        """``u1``: the real pairs' values of U1 (H channels); ``keep`` (B, P) bool, the real particles."""
        self.blocks: list[mi_kernels.Block] = []
        self.probs, self.token = _ShareProbabilities.apply(u1.values, keep, self, u1)
        self.rows = self.probs.view(-1, *self.probs.shape[-2:])  # (B * H, P, P)


class _ShareProbabilities(torch.autograd.Function):
    """Pair values (N, H) -> (softmax over unmasked keys of their symmetric square U1, a scalar
    token). Backward turns the blocks' gradients collected in ``shared.blocks`` into the gradient
    of the pair values (``mi_kernels.softmax_grad_pairs``)."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, keep: torch.Tensor, shared: SharedProbabilities, pairs: PairValues
                ) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.searchsorted(pairs.bidx, torch.arange(pairs.batch + 1, device=values.device))
        u1 = mi_kernels.square_logits(values, keep, starts, pairs.ii, pairs.jj)
        probs = torch.ops.aten._softmax.out(u1, -1, False, out=u1)  # row by row: in place is exact
        ctx.mark_non_differentiable(probs)
        ctx.save_for_backward(probs, keep, starts, pairs.ii, pairs.jj)
        ctx.set_materialize_grads(False)  # no zero (B, H, P, P) gradient for the non-differentiable probs
        ctx.shared = shared
        return probs, probs.new_zeros(())

    @staticmethod
    def backward(ctx, _: torch.Tensor, __: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        probs, keep, starts, ii, jj = ctx.saved_tensors
        blocks, ctx.shared.blocks = ctx.shared.blocks, []
        if not blocks:
            return None, None, None, None
        return mi_kernels.softmax_grad_pairs(probs, keep, blocks, starts, ii, jj), None, None, None


class _SharedDropoutMatmul(torch.autograd.Function):
    """``dropout(probs, p) @ v`` for the shared probabilities (B, H, P, P) and v (B, H, P, D) through
    ``mi_kernels.mix``, the mask's seed drawn from torch's generator; backward gives dL/dv and leaves
    the block's part of dL/dprobs to ``_ShareProbabilities``."""

    @staticmethod
    def forward(ctx, token: torch.Tensor, v: torch.Tensor, shared: SharedProbabilities, p: float
                ) -> torch.Tensor:
        seed = mi_kernels.draw_seed() if p > 0 else 0  # p = 0 draws nothing (every element kept)
        v3 = v.reshape(-1, *v.shape[-2:]).contiguous()
        ctx.shared, ctx.seed, ctx.p, ctx.v_shape = shared, seed, p, v.shape
        ctx.save_for_backward(v3)
        return mi_kernels.mix(shared.rows, v3, seed, p).view(v.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        (v3,) = ctx.saved_tensors
        grad = grad.reshape(v3.shape).contiguous()
        grad_v = mi_kernels.mix_grad_values(ctx.shared.rows, grad, ctx.seed, ctx.p)
        ctx.shared.blocks.append((ctx.seed, ctx.p, grad, v3))
        return torch.zeros((), dtype=grad.dtype), grad_v.view(ctx.v_shape), None, None


class ValueAttention(nn.Module):
    """MIParT's MI attention: out = softmax(U1) V with one head per U1 channel, value-only.

    The probabilities (B, H, P, P) are computed once per forward by the model and shared by all
    MI blocks; attention dropout is applied per block to the shared probabilities, as in the
    authors' code (an independent keep mask per element and block, ``dropout_matmul``). There is
    no output projection (the authors' MIAttention has none).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by the {num_heads} MI heads")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.vv = nn.Linear(embed_dim, embed_dim, bias=False)
        self.record: list[torch.Tensor] | None = None  # set by ``capture_attention`` only

    def forward(self, x: torch.Tensor, probs: torch.Tensor | SharedProbabilities) -> torch.Tensor:
        b, p, d = x.shape
        v = self.vv(x).view(b, p, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, P, hd)
        if isinstance(probs, SharedProbabilities):
            out = _SharedDropoutMatmul.apply(probs.token, v, probs, self.dropout if self.training else 0.0)
        else:
            if self.record is not None:
                self.record.append(probs.detach().float())
            out = dropout_matmul(probs.to(v.dtype), v, self.dropout, self.training)  # (B, H, P, hd)
        return out.transpose(1, 2).reshape(b, p, d)


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the attention probabilities of every attention module of ``model`` while inside.

    Yields ``{module name: [probabilities of each forward call]}``: (B, H, T, S) float32 tensors
    (``Attention``: rows = queries, columns = keys, padded keys exactly 0; ``ValueAttention``: the
    shared softmax(U1) it was given). The model must be in eval mode (no attention dropout), so
    the recorded weights are the ones that produced the output. On exit the modules return to
    their fused path.
    """
    if model.training:
        raise ValueError("capture_attention needs the model in eval mode (model.eval())")
    modules = {name: m for name, m in model.named_modules() if isinstance(m, (Attention, ValueAttention))}
    store: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    for name, m in modules.items():
        m.record = store[name]
    model.capturing_attention = True  # one forward call per batch, not per inference sub-batch
    try:
        yield store
    finally:
        model.capturing_attention = False
        for m in modules.values():
            m.record = None


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016, arXiv:1603.09382) on a residual branch, per sample.

    In training mode each sample's branch output is zeroed with probability ``p`` and the kept ones
    are scaled by 1 / (1 - p), so the expected output is unchanged; in eval mode it is the identity.
    With ``p = 0`` it returns its input untouched and draws no random numbers.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path rate must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        scale = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)
        return x * scale

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Linearly increasing stochastic-depth rates of ``depth`` residual blocks in forward order:
    block l (1-based) drops with ``rate * l / depth`` (Huang et al.'s linear decay of the survival
    probability), so the last block has ``rate`` and even a one-block model gets stochastic depth."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path rate must be in [0, 1), got {rate}")
    return [rate * (i + 1) / depth for i in range(depth)]


def _add_into(out: torch.Tensor, other: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """out + weight * other (weight: 1 when None), added into ``out`` where the sum keeps its dtype."""
    if torch.promote_types(out.dtype, other.dtype) != out.dtype:
        return out + (other if weight is None else weight.to(other.dtype) * other)
    return out.add_(other) if weight is None else out.addcmul_(weight.to(out.dtype), other)


class NormFormerBlock(nn.Module):
    """ParT's NormFormer block around a token mixer (attention, MI attention or class attention).

    ``head_order="dh"`` reproduces the MIParT authors' per-head scaling, which writes the scaled
    heads back in (head_dim, head) order (``einsum('tbhd,h->tbdh')``); ParT uses "hd".
    """

    def __init__(self, embed_dim: int, num_heads: int, ffn_ratio: int = 4, dropout: float = 0.1,
                 attn_dropout: float = 0.1, activation_dropout: float = 0.1, mixer: str = "attention",
                 head_order: str = "hd", drop_path: float = 0.0) -> None:
        super().__init__()
        if head_order not in ("hd", "dh"):
            raise ValueError(f"head_order must be 'hd' or 'dh', got {head_order!r}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.head_order = head_order
        ffn_dim = embed_dim * ffn_ratio
        self.pre_attn_norm = nn.LayerNorm(embed_dim)
        if mixer == "attention":
            self.attn: nn.Module = Attention(embed_dim, num_heads, attn_dropout)
        elif mixer == "value":
            self.attn = ValueAttention(embed_dim, num_heads, attn_dropout)
        else:
            raise ValueError(f"unknown mixer {mixer!r}")
        self.post_attn_norm = nn.LayerNorm(embed_dim)
        self.dropout = Dropout(dropout)
        self.pre_fc_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.act_dropout = Dropout(activation_dropout)
        self.post_fc_norm = nn.LayerNorm(ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.c_attn = nn.Parameter(torch.ones(num_heads))
        self.w_resid = nn.Parameter(torch.ones(embed_dim))
        self.drop_path = DropPath(drop_path)

    def _scale_heads(self, x: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        b, t, _ = x.shape
        heads = x.view(b, t, self.num_heads, self.head_dim)
        scale = self.c_attn.view(1, 1, -1, 1).to(x.dtype)
        x = heads.mul_(scale) if in_place else heads * scale
        if self.head_order == "dh":
            x = x.transpose(2, 3)
        return x.reshape(b, t, self.embed_dim)

    def _finish(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Everything after the token mixer, whose fresh output is ``x``."""
        if self.training or torch.is_grad_enabled():
            x = self.drop_path(self.dropout(self.post_attn_norm(self._scale_heads(x)))) + residual
            residual = x
            x = self.act_dropout(linear(self.pre_fc_norm(x), self.fc1.weight, self.fc1.bias, "gelu"))
            x = self.drop_path(self.dropout(linear(self.post_fc_norm(x), self.fc2.weight, self.fc2.bias)))
            return x + self.w_resid.to(residual.dtype) * residual
        # inference (no dropout, no autograd): the same sums, written into the fresh outputs where the
        # result keeps their dtype (not under mixed-precision autocast); 20 ms of ParT's 770 ms per
        # 4 batches of 128 jets on 2 cores went to allocating and first touching the new buffers
        x = _add_into(self.post_attn_norm(self._scale_heads(x, in_place=True)), residual)
        h = linear(self.pre_fc_norm(x), self.fc1.weight, self.fc1.bias, "gelu")
        return _add_into(linear(self.post_fc_norm(h), self.fc2.weight, self.fc2.bias), x, self.w_resid)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                probs: torch.Tensor | None = None) -> torch.Tensor:
        """Particle block: ``attn_mask`` is the float bias for attention, ``probs`` for MI."""
        h = self.pre_attn_norm(x)
        h = self.attn(h, probs) if isinstance(self.attn, ValueAttention) else self.attn(h, None, attn_mask)
        return self._finish(h, x)

    def forward_cls(self, x: torch.Tensor, x_cls: torch.Tensor, cls_mask: torch.Tensor) -> torch.Tensor:
        """Class attention (CaiT): the raw class token queries LN([class token, particles]).

        ``cls_mask`` is the (B, 1, 1, 1 + P) float bias (-inf at padded particles).
        """
        u = self.pre_attn_norm(torch.cat((x_cls, x), dim=1))
        h = self.attn(x_cls, u, cls_mask)
        return self._finish(h, x_cls)


class ClassAttentionHead(nn.Module):
    """Class token + class-attention blocks + final LayerNorm + Linear: logits from particle tokens.

    ``drop_path`` gives the stochastic-depth rate of each class-attention block (default: none).
    """

    def __init__(self, embed_dim: int, num_heads: int, num_layers: int, num_classes: int,
                 head_order: str = "hd", drop_path: Sequence[float] | None = None) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        rates = list(drop_path) if drop_path is not None else [0.0] * num_layers
        if len(rates) != num_layers:
            raise ValueError(f"{num_layers} class-attention blocks but {len(rates)} drop_path rates")
        self.cls_blocks = nn.ModuleList(
            NormFormerBlock(embed_dim, num_heads, dropout=0.0, attn_dropout=0.0, activation_dropout=0.0,
                            head_order=head_order, drop_path=rate)
            for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.fc = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x, mask))

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The class token after the class-attention blocks and the final LayerNorm (B, D)."""
        m = mask[:, 0]
        keep = torch.cat((torch.ones_like(m[:, :1]), m), dim=1)
        cls_mask = torch.zeros_like(keep, dtype=compute_dtype(x)).masked_fill(~keep, NEG_INF)
        cls_mask = cls_mask[:, None, None, :]
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        for block in self.cls_blocks:
            cls = block.forward_cls(x, cls, cls_mask)
        return self.norm(cls.squeeze(1))


def knn_indices(points: torch.Tensor, keep: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, P, k) of the k nearest real neighbours of each point, self excluded.

    ``points`` is channel-last (B, P, C). Squared distances use weaver's expansion
    |a|^2 - 2 a.b + |b|^2 (clamped at 0) so neighbour order matches weaver-core; padded candidates
    get +inf instead of weaver's far-away coordinate shift (same choice, no overflow in low
    precision). Computed in float32.
    """
    with torch.autocast(points.device.type, enabled=False):
        x = points.float()
        xx = (x * x).sum(-1, keepdim=True)
        dist = (xx - 2 * torch.matmul(x, x.transpose(1, 2)) + xx.transpose(1, 2)).clamp(min=0)
        dist = dist.masked_fill(~keep[:, None, :], float("inf"))
        return dist.topk(k + 1, dim=-1, largest=False, sorted=True)[1][:, :, 1:]


def gather_neighbours(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, P, C) features gathered at neighbour indices (B, P, k) -> (B, P, k, C)."""
    b, p, c = x.shape
    k = idx.shape[-1]
    flat = (idx + torch.arange(b, device=x.device).view(b, 1, 1) * p).reshape(-1)
    return x.reshape(b * p, c)[flat].view(b, p, k, c)


class EdgeConv(nn.Module):
    """ParticleNet's EdgeConv: mean over k neighbours of MLP([x_i, x_j - x_i]) plus a shortcut.

    The first layer acts on the concatenation, so W [x_i, x_j - x_i] = (W_a - W_b) x_i + W_b x_j is
    evaluated per particle (P rows) and then gathered, instead of on all P*k edges: the same
    linear map with ~k times fewer multiply-adds in the widest layer. Layers are
    Linear (no bias) -> BN (over edges of real particles) -> ReLU, channel-last.
    """

    def __init__(self, k: int, in_feat: int, out_feats: Sequence[int]) -> None:
        super().__init__()
        self.k = k
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        dims = [2 * in_feat, *out_feats]
        for a, b in itertools.pairwise(dims):
            self.convs.append(nn.Linear(a, b, bias=False))
            self.bns.append(MaskedBatchNorm(b))
        self.in_feat = in_feat
        if in_feat == out_feats[-1]:
            self.sc = None
            self.sc_bn = None
        else:
            self.sc = nn.Linear(in_feat, out_feats[-1], bias=False)
            self.sc_bn = MaskedBatchNorm(out_feats[-1])

    def forward(self, points: torch.Tensor, features: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """points (B, P, Cp), features (B, P, C) channel-last, keep (B, P) bool -> (B, P, C_out).

        Rows of padded particles are zero in the output.
        """
        idx = knn_indices(points, keep, self.k)
        w = self.convs[0].weight
        w_center, w_diff = w[:, : self.in_feat], w[:, self.in_feat:]
        center = F.linear(features, w_center - w_diff)  # (B, P, C1)
        neigh = F.linear(features, w_diff)  # (B, P, C1)
        if exporting():
            return self._forward_dense(features, keep, idx, center, neigh)
        return self._forward_real(features, keep, idx, center, neigh)

    def _forward_real(self, features: torch.Tensor, keep: torch.Tensor, idx: torch.Tensor,
                      center: torch.Tensor, neigh: torch.Tensor) -> torch.Tensor:
        """Eager path: the edge MLP on the (N_real * k, C) edges of real particles only, as 2-D GEMMs
        with the native BatchNorm (its batch statistics are then exactly those over real edges)."""
        b, p, c1 = center.shape
        bsel, psel = keep.nonzero(as_tuple=True)  # (N,) real particles
        nb = (idx[bsel, psel] + (bsel * p).unsqueeze(-1)).reshape(-1)  # (N * k,) rows of (B * P)
        x = (center[bsel, psel].unsqueeze(1) + neigh.reshape(b * p, c1)[nb].view(-1, self.k, c1))
        x = F.relu(self.bns[0](x.view(-1, c1)))
        for conv, bn in zip(self.convs[1:], self.bns[1:]):
            x = F.relu(bn(conv(x)))
        fts = x.view(-1, self.k, x.shape[-1]).mean(dim=1)  # (N, C_out)
        real = features[bsel, psel]
        sc = real if self.sc is None else self.sc_bn(self.sc(real))
        out = fts.new_zeros(b, p, fts.shape[-1])
        return out.index_put_((bsel, psel), F.relu(sc + fts))

    def _forward_dense(self, features: torch.Tensor, keep: torch.Tensor, idx: torch.Tensor,
                       center: torch.Tensor, neigh: torch.Tensor) -> torch.Tensor:
        """Export path: every particle's edges (B, P, k, C), no data-dependent shapes."""
        x = center.unsqueeze(2) + gather_neighbours(neigh, idx)  # (B, P, k, C1)
        emask = keep[:, :, None, None]
        x = F.relu(self.bns[0](x, emask, channel_last=True))
        for conv, bn in zip(self.convs[1:], self.bns[1:]):
            x = F.relu(bn(conv(x), emask, channel_last=True))
        fts = x.mean(dim=2)
        if self.sc is not None:
            sc = self.sc_bn(self.sc(features), keep.unsqueeze(-1), channel_last=True)
        else:
            sc = features
        return F.relu(sc + fts).masked_fill(~keep.unsqueeze(-1), 0.0)


def init_linear(model: nn.Module) -> None:
    """Xavier-uniform Linear weights and zero biases, as weaver initialises ParT (so that ParT and
    MIParT start from the same distribution as the reference trainings)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            if name.endswith("in_proj"):
                val = (6.0 / float(module.weight.shape[0] // 3 + module.weight.shape[1])) ** 0.5
                nn.init.uniform_(module.weight, -val, val)
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
