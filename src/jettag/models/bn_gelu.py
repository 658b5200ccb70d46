"""GELU(BatchNorm(z)) with batch statistics, as one autograd function for CPU training (numba sums).

The pair MLP's layers are Linear -> BN -> GELU over every real pair of the batch: at batch 64 and
P = 112 one such (N, 64) tensor is 80 MB. glibc hands out blocks above 32 MiB as fresh pages, so
each new tensor of that size is paid for again in page faults (profiled: a third of the pair
embedding's training time on 2 cores). ``nn.BatchNorm1d`` followed by ``F.gelu`` writes four such
tensors per layer and step (BN output, GELU output and the two gradients); this function writes two:

- forward: the column moments of z in one pass (float64 sums, numba), then y = z * s + t written once
  and turned into GELU(y) in place; z is saved (the Linear produced it anyway), y is not;
- backward: y recomputed into a fresh tensor, the GELU gradient written over it, the two column
  sums of the BN gradient in one pass (numba) and the input gradient written over it again.

The mathematics are BatchNorm's in training mode (biased variance to normalise, running statistics
updated by the caller with the unbiased one) and the exact (erf) GELU; tests compare values and
gradients with ``nn.BatchNorm1d`` + ``F.gelu`` and run gradcheck in float64.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from jettag.jit import njit, numba_threads


@njit(parallel=True)
def _column_sums(a, b, nt):  # pragma: no cover - compiled
    """Per column: sum of a, and sum of a * b (b is a when the caller passes it twice), in float64."""
    n, c = a.shape
    part = np.zeros((nt, 2, c), np.float64)
    step = (n + nt - 1) // nt
    for t in numba.prange(nt):
        s1 = part[t, 0]
        s2 = part[t, 1]
        for r in range(t * step, min(n, (t + 1) * step)):
            for k in range(c):
                u = np.float64(a[r, k])
                s1[k] += u
                s2[k] += u * np.float64(b[r, k])
    return part.sum(axis=0)


def column_sums(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over rows of ``a``, sum over rows of ``a * b``) of two (N, C) tensors, float64, one pass."""
    nt = numba_threads()
    sums = _column_sums(a.detach().contiguous().numpy(), b.detach().contiguous().numpy(), nt)
    out = torch.from_numpy(sums)
    return out[0], out[1]


def supported(z: torch.Tensor) -> bool:
    """Where the fused function runs: an (N, C) CPU tensor of more than one row (``nn.BatchNorm1d``
    refuses one in training) in float32 or float64, outside autocast (the caller keeps it out of
    tracing and torch.compile)."""
    return (z.device.type == "cpu" and z.ndim == 2 and z.shape[0] > 1
            and z.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled("cpu"))


class _BatchNormGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = z.contiguous()
        n = z.shape[0]
        s1, s2 = column_sums(z, z)
        mean = s1 / n
        var = (s2 / n - mean * mean).clamp_(min=0.0)  # biased; float64 sums keep the difference exact enough
        invstd = torch.rsqrt(var + eps).to(z.dtype)
        mean = mean.to(z.dtype)
        scale = weight * invstd
        shift = bias - mean * scale
        h = torch.addcmul(shift, z, scale)
        torch.ops.aten.gelu_(h)
        ctx.save_for_backward(z, mean, invstd, scale, shift)
        ctx.mark_non_differentiable(mean, var)
        return h, mean, var.to(z.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _mean: torch.Tensor, _var: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        z, mean, invstd, scale, shift = ctx.saved_tensors
        n = z.shape[0]
        g = torch.addcmul(shift, z, scale)  # y, recomputed
        torch.ops.aten.gelu_backward.grad_input(grad.contiguous(), g, grad_input=g)  # dL/dy over y
        sum_g, sum_gz = column_sums(g, z)
        sum_g, sum_gz = sum_g.to(z.dtype), sum_gz.to(z.dtype)
        grad_weight = (sum_gz - mean * sum_g) * invstd  # sum of dL/dy * z_hat
        grad_bias = sum_g
        # dL/dz = scale * (dL/dy - sum_g / n - z_hat * grad_weight / n), z_hat = (z - mean) * invstd
        b = -scale * invstd * grad_weight / n
        g.mul_(scale).addcmul_(z, b).add_(-scale * sum_g / n - b * mean)
        return g, grad_weight, grad_bias, None


def batchnorm_gelu(z: torch.Tensor, bn: torch.nn.BatchNorm1d) -> torch.Tensor:
    """GELU(bn(z)) in training mode for (N, C) ``z``: batch statistics, and ``bn``'s running statistics
    updated as ``nn.BatchNorm1d`` does (momentum, or the cumulative average when it is None; the
    unbiased variance)."""
    h, mean, var = _BatchNormGelu.apply(z, bn.weight, bn.bias, bn.eps)
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            n = z.shape[0]
            bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
            bn.running_var.mul_(1 - m).add_(var * (n / max(n - 1, 1)), alpha=m)
    return h
