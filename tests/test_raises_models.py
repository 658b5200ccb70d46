"""Model and input-kind layers: construction and input errors name the argument and its value."""

from __future__ import annotations

import pytest
import torch
from jetfactory import random_jets

from jettag.data.kinds import get_kind, register_kind
from jettag.data.kinds.lund import LundKind
from jettag.data.kinds.particles import JetTensors, example_inputs
from jettag.data.store import JetDataError
from jettag.models import create_model
from jettag.models import layers as L
from jettag.models.lundnet import LundNet
from jettag.models.registry import register_model

NAMES = ["a", "b"]


def _tensors(**edit: torch.Tensor) -> JetTensors:
    """A 2-jet, 3-particle table with two features (+ 4 momenta) and a zero padding row, edited."""
    args = {"table": torch.zeros(4, 6), "offsets": torch.tensor([0, 1, 3]), "labels": torch.tensor([0, 1])}
    args["table"][:3] = 1.0
    args.update(edit)
    return JetTensors(args["table"], args["offsets"], args["labels"], NAMES, max_len=2)


@pytest.mark.parametrize(("edit", "pattern"), [
    ({"table": torch.zeros(4, 5)}, r"^table \(4, 5\) must be \(n_particles \+ 1, 2 features \+ 4\)$"),
    ({"offsets": torch.tensor([0, 1, 2])}, r"^offsets must have n_jets \+ 1 entries spanning the flat"),
    ({"table": torch.ones(4, 6)}, r"^the last row of the table \(the padding row\) must be zero$"),
    ({"offsets": torch.tensor([0, 0, 3])}, r"^a jet has 3 particles, over max_len=2$"),
])
def test_jet_tensors_layout_checked(edit: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        _tensors(**edit)


def test_jet_tensors_builders_name_the_problem(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"^features \(3, 2\) and vectors \(2, 4\) mismatch$"):
        JetTensors.from_arrays(torch.zeros(3, 2), torch.zeros(2, 4), torch.tensor([0, 3]), torch.tensor([0]),
                               NAMES)
    jets = random_jets(3, seed=1, max_len=4)
    jets = jets[[f for f in jets.fields if f != "label"]]
    with pytest.raises(JetDataError, match=r"^f\.parquet: field 'label' is missing \(present: \["):
        JetTensors.from_jets(jets, "kin", source="f.parquet")
    a = JetTensors.from_jets(random_jets(2, seed=1, max_len=4), "kin", max_len=8)
    b = JetTensors.from_jets(random_jets(2, seed=2, max_len=4), "kin", max_len=16)
    with pytest.raises(ValueError, match=r"^cannot concatenate JetTensors with different feature sets or"):
        JetTensors.concatenate([a, b])
    with pytest.raises(ValueError, match=r"^jet lengths must be in \[1, 4\], got \[5, 2\]$"):
        example_inputs(7, length=4, lengths=[5, 2])


def test_input_kinds_by_name() -> None:
    known = r"\['event', 'event_subjets', 'lund', 'particles', 'tokens'\]"
    with pytest.raises(ValueError, match=rf"^unknown input kind 'graphs'; known: {known}$"):
        get_kind("graphs")

    class Impostor(LundKind):
        name = "particles"

    with pytest.raises(ValueError, match=r"^input kind 'particles' registered twice$"):
        register_kind(Impostor())


@pytest.mark.parametrize(("build", "pattern"), [
    (lambda: L._activation("tanh"), r"^unknown activation 'tanh' \(use 'gelu' or 'relu'\)$"),
    (lambda: L.ValueAttention(10, 3), r"^embed_dim 10 is not divisible by the 3 MI heads$"),
    (lambda: L.drop_path_rates(1.0, 3), r"^drop_path rate must be in \[0, 1\), got 1\.0$"),
    (lambda: L.NormFormerBlock(8, 2, head_order="hh"), r"^head_order must be 'hd' or 'dh', got 'hh'$"),
    (lambda: L.NormFormerBlock(8, 2, mixer="conv"), r"^unknown mixer 'conv'$"),
    (lambda: L.ClassAttentionHead(8, 2, 2, 2, drop_path=[0.1]),
     r"^2 class-attention blocks but 1 drop_path rates$"),
    (lambda: create_model("mipart", features="kin", embed_dims=[16, 16, 12], pair_embed_dims=[8, 8, 8]),
     r"^MIParT needs D_embed \(12\) divisible by the U1 channels D1 \(8\)$"),
    (lambda: LundNet(2, node_features=["ln_kt", "spin"]),
     r"^LundNet: node features \['ln_kt', 'spin'\] must be a subset of \('ln_kt'"),
])
def test_model_construction_names_the_argument(build, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        build()


def test_vectors_shape_named() -> None:
    model = create_model("part", features="kin", embed_dims=[16, 16], pair_embed_dims=[8, 8], num_heads=2,
                         num_layers=1, num_cls_layers=1)
    points, features, vectors, mask = example_inputs(7, length=4)
    with pytest.raises(ValueError, match=r"^ParticleTransformer: vectors must be \(batch, 4, particles\) = "
                                         r"\(2, 4, 4\), got \(2, 3, 4\)$"):
        model(points, features, vectors[:, :3], mask)


def test_model_registered_twice() -> None:
    def pfn() -> None: ...

    with pytest.raises(ValueError, match=r"^model 'pfn' registered twice$"):
        register_model(pfn)
