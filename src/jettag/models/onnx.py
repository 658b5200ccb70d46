"""ONNX export of any jettag model with dynamic batch size and jet length.

The exported graph takes the four model inputs ``points (B, 2, P)``, ``features (B, C, P)``,
``vectors (B, 4, P)``, ``mask (B, 1, P)`` (bool) and returns class probabilities (softmax) or
logits. B and P are symbolic. The model switches to shape-agnostic code paths while it is traced
(``jettag.models.layers.exporting``): pair features by broadcasting instead of cached triangle
indices, and ParticleNet's kNN padding applied unconditionally, so one file serves every length.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

INPUT_NAMES = ("points", "features", "vectors", "mask")


class _ProbabilityWrapper(nn.Module):
    """Adds the softmax so that the exported graph returns probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, points, features, vectors, mask):
        return torch.softmax(self.model(points, features, vectors, mask), dim=-1)


def example_inputs(feature_dim: int, batch_size: int = 2, length: int = 24, seed: int = 0,
                   lengths: list[int] | None = None) -> tuple[torch.Tensor, ...]:
    """Physically valid dummy inputs ``(points, features, vectors, mask)``, channel-first.

    Particles scatter around a common axis with E >= |p|; features are standard normal. Jets have
    ``lengths`` real particles (default: all ``length`` except the last jet, which has half), and
    padded positions are zero / False. Used for tracing, FLOP counts, tests and benchmarks.
    """
    if lengths is None:
        lengths = [length] * (batch_size - 1) + [max(1, length // 2)]
    if max(lengths) > length or min(lengths) < 1:
        raise ValueError(f"jet lengths must be in [1, {length}], got {lengths}")
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    mask = torch.arange(length).view(1, 1, length) < torch.tensor(lengths).view(b, 1, 1)
    pt = torch.rand(b, length, generator=g) * 50 + 0.5
    eta = torch.randn(b, length, generator=g) * 0.3
    phi = torch.randn(b, length, generator=g) * 0.3
    m = torch.rand(b, length, generator=g) * 0.3
    px, py, pz = pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta)
    energy = torch.sqrt(px**2 + py**2 + pz**2 + m**2)
    fm = mask.float()
    vectors = torch.stack((px, py, pz, energy), dim=1) * fm
    points = torch.stack((eta, phi), dim=1) * fm
    features = torch.randn(b, feature_dim, length, generator=g) * fm
    return points, features, vectors, mask


def export_onnx(model: nn.Module, path: str | Path, feature_dim: int, probabilities: bool = True,
                opset: int = 17, example_length: int = 24) -> Path:
    """Write ``model`` (eval mode) to ``path`` as ONNX with dynamic ``batch`` and ``particles`` axes.

    Uses the TorchScript-based exporter (``dynamo=False``): it keeps B and P symbolic through the
    broadcast pair features, SDPA and the kNN gather. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    module = _ProbabilityWrapper(model) if probabilities else model
    args = example_inputs(feature_dim, batch_size=2, length=example_length)
    dynamic = {name: {0: "batch", 2: "particles"} for name in INPUT_NAMES}
    dynamic["output"] = {0: "batch"}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=UserWarning)  # constant-folding notes of the exporter
            torch.onnx.export(module, args, str(path), input_names=list(INPUT_NAMES),
                              output_names=["output"], dynamic_axes=dynamic, opset_version=opset,
                              dynamo=False, do_constant_folding=True)
    finally:
        model.train(was_training)
    return path


def run_onnx(path: str | Path, points, features, vectors, mask):
    """Evaluate an exported model with onnxruntime (CPU) on numpy or torch inputs; returns numpy."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = {}
    for name, value in zip(INPUT_NAMES, (points, features, vectors, mask)):
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        feeds[name] = arr.astype(bool) if name == "mask" else arr.astype(np.float32)
    used = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in used})[0]
