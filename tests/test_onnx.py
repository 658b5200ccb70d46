"""ONNX export: onnxruntime reproduces PyTorch at other batch sizes and jet lengths than traced."""

from __future__ import annotations

import pytest
import torch

from jettag.data.kinds.particles import example_inputs
from jettag.models import create_model
from jettag.models.onnx import export_onnx, run_onnx


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = {}
    root = tmp_path_factory.mktemp("onnx")
    for name in ("mipart", "part", "particlenet"):
        torch.manual_seed(0)
        model = create_model(name, num_classes=3, features="kin").eval()
        out[name] = (model, export_onnx(model, root / f"{name}.onnx", example_length=24))
    return out


@pytest.mark.parametrize("name", ["mipart", "part", "particlenet"])
@pytest.mark.parametrize(("lengths", "length"), [([5, 40, 13], 40), ([70, 2, 33, 64, 9], 72)])
def test_onnxruntime_matches_pytorch(exported, name, lengths, length):
    model, path = exported[name]
    inputs = example_inputs(7, lengths=lengths, length=length, seed=len(lengths))
    with torch.no_grad():
        expect = torch.softmax(model(*inputs), dim=-1).numpy()
    got = run_onnx(path, *inputs)
    assert got.shape == (len(lengths), 3)
    assert abs(got - expect).max() < 1e-4
    assert abs(got.sum(-1) - 1).max() < 1e-5


def test_exported_graph_has_symbolic_batch_and_length(exported):
    import onnx

    graph = onnx.load(str(exported["part"][1])).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["features"] == ["batch", 7, "particles"]
    assert dims["mask"] == ["batch", 1, "particles"]
