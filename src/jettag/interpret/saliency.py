"""Gradient x input and integrated gradients (Sundararajan et al. 2017, arXiv:1703.01365) per token
(particle, or Lund-tree node) for any jettag model.

The attributed inputs are the per-token feature tensors of the model's input kind: for particles
``points`` (B, 2, P) and ``features`` (B, C, P), summed over channels per particle; ``vectors``
(the four-momenta behind the pair features) are held fixed, so the attributions explain the
particle features given the jet's pair structure. For Lund graphs the node ``features`` (N, F).
The baseline is zero for the attributed inputs. The target is the logit of a chosen class per jet.
Completeness: the integrated-gradients attributions of a jet sum to
``logit(x) - logit(baseline)`` up to the error of the midpoint rule with ``steps`` points.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

#: per input kind: {input name: token axis}; attributed inputs are summed over every other non-batch axis
ATTRIBUTED = {"particles": {"points": 2, "features": 2}, "lund": {"features": 0}}


def _attributed(model: nn.Module, names: tuple[str, ...]) -> list[int]:
    """Positions in the model's inputs of the attributed tensors."""
    wanted = ATTRIBUTED[getattr(model, "input_kind", "particles")]
    return [k for k, n in enumerate(names) if n in wanted]


def _target(model: nn.Module, inputs: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    logits = model(*inputs).float()
    return logits.gather(1, target[:, None])[:, 0]


def _per_token(grads: list[torch.Tensor], xs: list[torch.Tensor], axes: list[int]) -> torch.Tensor:
    """Sum of grad * x over channels, per token: (B, P) for particles, (N,) for nodes."""
    total = None
    for g, x, ax in zip(grads, xs, axes):
        gx = g * x
        keep = (0, ax) if ax != 0 else (0,)
        dims = [d for d in range(gx.ndim) if d not in keep]
        s = gx.sum(dim=dims) if dims else gx
        total = s if total is None else total + s
    assert total is not None
    return total


def attributions(model: nn.Module, names: tuple[str, ...], inputs: tuple[torch.Tensor, ...],
                 target: torch.Tensor, steps: int = 32,
                 progress: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """Gradient x input and integrated gradients per token of one batch, model in eval mode.

    Returns ``grad_x_input`` and ``integrated_gradients`` (both (B, P) for particles, (N,) for
    Lund nodes), ``logit`` (B,) and ``baseline_logit`` (B,) of the target class.
    """
    if model.training:
        raise ValueError("attributions need the model in eval mode (model.eval())")
    idx = _attributed(model, names)
    kind = getattr(model, "input_kind", "particles")
    axes = [ATTRIBUTED[kind][names[k]] for k in idx]
    xs = [inputs[k].detach() for k in idx]

    def run(alpha: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        scaled = [(alpha * x).requires_grad_(True) for x in xs]
        args = list(inputs)
        for k, s in zip(idx, scaled):
            args[k] = s
        out = _target(model, args, target)
        grads = torch.autograd.grad(out.sum(), scaled, allow_unused=True)
        grads = [torch.zeros_like(s) if g is None else g for g, s in zip(grads, scaled)]
        return out.detach(), grads

    with torch.enable_grad():
        logit, grads = run(1.0)
        gxi = _per_token(grads, xs, axes)
        acc = [torch.zeros_like(x) for x in xs]
        for s in range(steps):
            _, g = run((s + 0.5) / steps)
            for a, gi in zip(acc, g):
                a.add_(gi)
            if progress is not None:
                progress(1)
        ig = _per_token([a / steps for a in acc], xs, axes)
        with torch.no_grad():
            base = _target(model, [torch.zeros_like(inputs[k]) if k in idx else inputs[k]
                                   for k in range(len(inputs))], target)
    return {"grad_x_input": gxi.detach(), "integrated_gradients": ig.detach(), "logit": logit,
            "baseline_logit": base.detach()}
