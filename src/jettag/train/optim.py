"""Optimizers of the recipes: AdamW, and RAdam + Lookahead ("ranger", as ParT/MIParT train).

Parameter groups follow weaver-core's rules, because the published ParT/MIParT numbers were
trained with them: no weight decay on 1-d tensors (norm weights, biases), on the class token and on
anything a model lists in ``no_weight_decay()``. When fine-tuning, the classification head gets its
own learning rate (seed 000: 50x the backbone's) and the feature extractor can be frozen, leaving the
model's dense head to train (seed 003; which modules that is: ``jettag.train.transfer``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

#: name fragments that never get weight decay (besides 1-d tensors)
NO_DECAY_NAMES = ("cls_token", "class_token", "pos_embed", "bias")

#: the names ``build_optimizer`` accepts (``train.optimizer``)
OPTIMIZERS = ("adamw", "adam", "radam", "ranger")

#: the parameter groups' parts, in order
PARTS = ("backbone", "dense", "head")


def find_head(model: nn.Module) -> str:
    """Module name of the classification head: ``model.head_name`` or ``model.get_classifier()`` (the
    ``JetModel`` API) if the model defines them, else the last ``nn.Linear`` in registration order
    (weaver's models build the head last)."""
    name = getattr(model, "head_name", None)
    if isinstance(name, str):
        return name
    if hasattr(model, "get_classifier"):
        try:
            clf = model.get_classifier()
        except NotImplementedError:
            clf = None
        for n, m in model.named_modules():
            if clf is not None and m is clf:
                return n
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__}: no nn.Linear found to act as the classification head")
    return linears[-1]


def _is_head(param_name: str, head: str | None) -> bool:
    return head is not None and (param_name == head or param_name.startswith(head + "."))


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    lr_head: float | None = None,
    freeze_backbone: bool = False,
) -> list[dict[str, Any]]:
    """Up to six groups: (backbone | dense | head) x (decay | no decay). Empty groups are dropped.

    ``head`` is the classification head (``find_head``), at ``lr_head`` when given (fine-tuning),
    else ``lr``. ``freeze_backbone`` (the frozen transfer method, seed 003) freezes everything but
    the model's dense head (``transfer_head_modules``: e.g. LundNet's fusion block and FC layers)
    with ``freeze_all_but``; its layers other than the classification head form the ``dense``
    groups, at ``lr``.
    """
    from jettag.train.transfer import freeze_all_but, transfer_head_modules

    head = find_head(model) if (lr_head is not None or freeze_backbone) else None
    if freeze_backbone:
        freeze_all_but(model, transfer_head_modules(model))
    extra = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "head" if _is_head(name, head) else "dense" if freeze_backbone else "backbone"
        no_decay = p.ndim <= 1 or name in extra or any(s in name.split(".")[-1] for s in NO_DECAY_NAMES)
        groups.setdefault((part, no_decay), []).append(p)
    out = []
    for (part, no_decay), params in sorted(groups.items(), key=lambda kv: (PARTS.index(kv[0][0]), kv[0][1])):
        out.append(
            {
                "params": params,
                "lr": lr_head if (part == "head" and lr_head is not None) else lr,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "name": f"{part}_{'no_decay' if no_decay else 'decay'}",
            }
        )
    if not out:
        raise ValueError("no trainable parameters (freeze_backbone with no head?)")
    return out


class Lookahead:
    """Lookahead (Zhang et al. 2019, 1907.08610) around any inner optimizer.

    Every ``k`` inner steps the slow weights move ``alpha`` of the way to the fast ones and the fast
    weights are reset to them. Unlike weaver's version, the slow weights and the step counter are
    part of ``state_dict`` so that a resumed run continues bit for bit. It is a plain wrapper (not a
    ``torch.optim.Optimizer``): the trainer's schedule sets the lr on ``param_groups`` directly.
    """

    def __init__(self, inner: torch.optim.Optimizer, alpha: float = 0.5, k: int = 6) -> None:
        if not 0.0 <= alpha <= 1.0 or k < 1:
            raise ValueError(f"Lookahead: need 0 <= alpha <= 1 and k >= 1, got alpha={alpha}, k={k}")
        self.inner = inner
        self.alpha = alpha
        self.k = k
        self.counter = 0
        self.defaults = inner.defaults
        self.slow = [p.detach().clone() for p in self._params()]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        # a property, not a copy: ``load_state_dict`` of a torch optimizer replaces its group list
        return self.inner.param_groups

    @property
    def state(self) -> Any:
        return self.inner.state

    def _params(self) -> Iterable[torch.Tensor]:
        for group in self.inner.param_groups:
            yield from group["params"]

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.inner.step(closure)
        self.counter += 1
        if self.counter >= self.k:
            self.counter = 0
            for p, slow in zip(self._params(), self.slow):
                slow.add_(p - slow, alpha=self.alpha)
                p.copy_(slow)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "slow": list(self.slow), "counter": self.counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        if len(state["slow"]) != len(self.slow):
            raise ValueError(
                f"Lookahead state has {len(state['slow'])} slow tensors, the model has {len(self.slow)}"
            )
        for dst, src in zip(self.slow, state["slow"]):
            dst.copy_(src)
        self.counter = int(state["counter"])

    def __repr__(self) -> str:
        return f"Lookahead(alpha={self.alpha}, k={self.k}, inner={self.inner!r})"


def build_optimizer(
    name: str,
    groups: list[dict[str, Any]],
    betas: tuple[float, float] = (0.95, 0.999),
    eps: float | None = None,
    lookahead_alpha: float = 0.5,
    lookahead_k: int = 6,
) -> torch.optim.Optimizer | Lookahead:
    """``adamw`` or ``ranger`` (= RAdam with decoupled weight decay + Lookahead(0.5, 6), eps 1e-5,
    betas (0.95, 0.999): weaver's Ranger, used for the ParT/MIParT papers). ``radam``, ``adam`` too."""
    kw = {"betas": tuple(betas)}
    if name == "adamw":
        return torch.optim.AdamW(groups, eps=eps or 1e-8, **kw)
    if name == "adam":
        return torch.optim.Adam(groups, eps=eps or 1e-8, **kw)
    if name in ("radam", "ranger"):
        inner = torch.optim.RAdam(groups, eps=eps or 1e-5, decoupled_weight_decay=True, **kw)
        return inner if name == "radam" else Lookahead(inner, lookahead_alpha, lookahead_k)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
