"""What keeps a set of tensors from loading into a model, said in one line per kind of problem.

Both jettag checkpoints (``train.checkpoint``) and weaver checkpoints (``models.weaver``) are
checked with it before anything is copied, so a checkpoint of another model or feature set fails
with the tensors at fault named instead of a half-loaded model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch

SHOWN = 8  # names listed per problem; the count says how many there are


def _listed(names: Iterable[str]) -> str:
    names = sorted(names)
    more = f" (+{len(names) - SHOWN} more)" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def state_mismatch(
    target: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    shown: Callable[[str], str] = str,
) -> list[str]:
    """Missing tensors, unexpected tensors and shape mismatches of ``state`` against ``target``.

    ``shown`` turns a key into the name the user knows it by (weaver's naming for weaver files).
    Empty when ``state`` fits exactly.
    """
    problems = []
    missing = [shown(k) for k in target if k not in state]
    unexpected = [shown(k) for k in state if k not in target]
    shapes = [
        f"{shown(k)}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    if missing:
        problems.append(f"missing in checkpoint ({len(missing)}): {_listed(missing)}")
    if unexpected:
        problems.append(f"not in the model ({len(unexpected)}): {_listed(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch ({len(shapes)}): " + "; ".join(sorted(shapes)[:SHOWN]))
    return problems
