"""ONNX export of any jettag model, with dynamic batch size (and jet length, for kinds that have one).

The exported graph takes the model's inputs as its input kind names them (``jettag.data.kinds``;
for particle models ``points (B, 2, P)``, ``features (B, C, P)``, ``vectors (B, 4, P)``,
``mask (B, 1, P)`` bool) and returns class probabilities (softmax) or logits; the kind's dynamic
axes stay symbolic. Particle models switch to shape-agnostic code paths while they are traced
(``jettag.models.layers.exporting``): pair features by broadcasting instead of cached triangle
indices, and ParticleNet's kNN padding applied unconditionally, so one file serves every length.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from jettag.data.kinds import get_kind

METADATA_INPUTS = "jettag_input_names"


class _ProbabilityWrapper(nn.Module):
    """Adds the softmax so that the exported graph returns probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(*inputs), dim=-1)


def export_onnx(model: nn.Module, path: str | Path, probabilities: bool = True, opset: int = 17,
                example_length: int = 24) -> Path:
    """Write ``model`` (eval mode) to ``path`` as ONNX with its kind's dynamic axes.

    Uses the TorchScript-based exporter (``dynamo=False``): it keeps B and P symbolic through the
    broadcast pair features, SDPA and the kNN gather. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = get_kind(model.input_kind)
    was_training = model.training
    model.eval()
    module = _ProbabilityWrapper(model) if probabilities else model
    args = kind.example_inputs(model, batch_size=2, length=example_length)
    dynamic = {**kind.dynamic_axes, "output": {0: "batch"}}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=UserWarning)  # constant-folding notes of the exporter
            torch.onnx.export(module, args, str(path), input_names=list(kind.input_names),
                              output_names=["output"], dynamic_axes=dynamic, opset_version=opset,
                              dynamo=False, do_constant_folding=True)
    finally:
        model.train(was_training)
    _write_input_names(path, kind.input_names)
    return path


def _write_input_names(path: Path, names: tuple[str, ...]) -> None:
    """Record the model's argument names in the file's metadata: the exporter drops unused inputs
    from the graph (PFN never reads ``points``), so the graph alone cannot map arguments to names."""
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_INPUTS, ",".join(names)
    onnx.save(proto, str(path))


def run_onnx(path: str | Path, *inputs: torch.Tensor):
    """Evaluate an exported model with onnxruntime (CPU) on the model's inputs (numpy or torch, in
    the model's argument order); returns numpy. Inputs the graph dropped as unused are skipped."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = sess.get_modelmeta().custom_metadata_map[METADATA_INPUTS].split(",")
    used = {i.name for i in sess.get_inputs()}
    feeds = {}
    for name, value in zip(names, inputs, strict=True):
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if name in used:
            feeds[name] = arr if arr.dtype == bool or arr.dtype.kind in "iu" else arr.astype(np.float32)
    return sess.run(None, feeds)[0]
