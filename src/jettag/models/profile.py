"""Parameter counts and FLOPs per jet, measured with ``torch.utils.flop_counter.FlopCounterMode``.

FLOPs are counted by PyTorch's dispatcher-level counter (matmuls, convolutions, SDPA: 2 FLOPs per
multiply-add; element-wise ops, softmax, norms and the kNN are not counted), for one jet of a
stated length in eval mode, with every position a real particle. Papers quote figures at their own
conventions (often multiply-adds), so compare like with like.
"""

from __future__ import annotations

from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from jettag.data.kinds import get_kind


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flops_per_jet(model: nn.Module, length: int = 128, batch_size: int = 4) -> int:
    """FLOPs of one forward pass per jet of ``length`` real particles (or tokens, nodes; eval mode)."""
    inputs = get_kind(model.input_kind).example_inputs(model, batch_size, length, full=True)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with counter:  # grad mode on: the counter's module tracker hooks autograd
            model(*inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // batch_size
