"""Learning-rate schedules as plain functions of the optimizer step.

The trainer sets ``group["lr"] = group["initial_lr"] * factor(step)`` before every step (as
nanoGPT does) instead of using ``torch.optim.lr_scheduler``: the whole schedule state is then one
integer (the step), which makes exact resume trivial and works unchanged with the Lookahead wrapper
(which torch's schedulers reject because it is not an ``Optimizer`` subclass).

- ``flat+decay`` (ParT / MIParT, weaver's ``flat+decay`` made per step): lr flat for the first 70%
  of the steps, then decays exponentially to 1% of the start value at the end. weaver does the
  same per epoch; per step gives the same curve without the staircase, and does not depend on
  the epoch count being large.
- ``cosine`` (seed 001, "CosineAnnealingWarmupRestarts"): linear warm-up over ``warmup`` of each
  cycle from ``min_lr`` to the peak, then cosine down to ``min_lr``; ``cycles`` restarts with the
  peak multiplied by ``gamma`` each cycle.
- ``constant`` and ``warmup+cos`` (single-cycle cosine without restarts) for fine-tuning.
- ``step`` (LundNet, seed 003): ``cycles`` equal segments, the lr multiplied by ``gamma`` at the
  start of each segment after the first (cycles 3, gamma 0.1 over 30 epochs: x0.1 at epochs 10, 20).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

#: the names ``lr_factor`` accepts (``train.schedule.name``)
SCHEDULES = ("constant", "flat+decay", "warmup+cos", "cosine", "step")


@dataclass(frozen=True)
class ScheduleSpec:
    """What a recipe says about the schedule (``train.schedule``); the step count comes from the trainer."""

    name: str = "flat+decay"
    warmup: float = 0.1  # fraction of a cycle (cosine) or of all steps (warmup+cos)
    flat_fraction: float = 0.7  # flat+decay: decay starts after this fraction of the steps
    final_factor: float = 0.01  # flat+decay: lr at the end relative to the start
    min_factor: float = 1e-3  # cosine: floor relative to the peak (seed 001: 1e-7 / 1e-4)
    cycles: int = 1  # cosine: number of cycles (restarts = cycles - 1)
    gamma: float = 1.0  # cosine: peak multiplier per restart


def lr_factor(spec: ScheduleSpec, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base lr at optimizer step ``step`` (0-based), for ``total_steps`` steps."""
    if total_steps < 1:
        raise ValueError(f"schedule {spec.name!r}: total_steps must be >= 1, got {total_steps}")
    name = spec.name

    if name == "constant":
        return lambda step: 1.0

    if name == "flat+decay":
        flat = int(spec.flat_fraction * total_steps)
        decay_steps = max(1, total_steps - flat)
        rate = math.log(spec.final_factor) / decay_steps

        def flat_decay(step: int) -> float:
            return 1.0 if step < flat else math.exp(rate * min(step - flat + 1, decay_steps))

        return flat_decay

    if name == "warmup+cos":
        warm = int(spec.warmup * total_steps)

        def warmup_cos(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            pct = min(1.0, (step - warm) / max(1, total_steps - warm))
            return spec.min_factor + (1 - spec.min_factor) * 0.5 * (1 + math.cos(math.pi * pct))

        return warmup_cos

    if name == "cosine":
        cycles = max(1, spec.cycles)
        cycle_len = max(1, math.ceil(total_steps / cycles))
        warm = int(spec.warmup * cycle_len)

        def cosine_restarts(step: int) -> float:
            cycle, pos = divmod(step, cycle_len)
            peak = spec.gamma ** min(cycle, cycles - 1)
            lo = spec.min_factor
            if pos < warm:
                return lo + (peak - lo) * (pos + 1) / warm
            pct = (pos - warm) / max(1, cycle_len - warm)
            return lo + (peak - lo) * 0.5 * (1 + math.cos(math.pi * pct))

        return cosine_restarts

    if name == "step":
        segment = max(1, math.ceil(total_steps / max(1, spec.cycles)))
        return lambda step: spec.gamma ** min(step // segment, max(1, spec.cycles) - 1)

    raise ValueError(f"unknown lr schedule {name!r}; known: {', '.join(SCHEDULES)}")


class Scheduler:
    """Sets each param group's lr from its ``initial_lr`` and the step; state = the step count."""

    def __init__(self, optimizer: torch.optim.Optimizer, spec: ScheduleSpec, total_steps: int) -> None:
        self.optimizer = optimizer
        self.factor = lr_factor(spec, total_steps)
        self.step_count = 0
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.apply()

    def apply(self) -> None:
        f = self.factor(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f

    def step(self) -> None:
        self.step_count += 1
        self.apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.apply()
