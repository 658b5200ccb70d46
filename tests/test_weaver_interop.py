"""weaver-core interop: jettag ParT / ParticleNet reproduce weaver-core's outputs with its weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from jettag.data.kinds.particles import example_inputs
from jettag.models import create_model
from jettag.models.weaver import (
    WeaverCheckpointError,
    load_weaver_state_dict,
    read_weaver_checkpoint,
    to_weaver_state_dict,
)

# the project's shared/ folder sits beside the checkout (CI clones main with shared/ beside it)
_SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = Path(os.environ.get("JETTAG_REFERENCE", _SHARED / "reference")) / "weights"
PN_CONV = [(16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))]
LENGTHS = [3, 10, 40, 64, 17, 1, 55]


def weaver_part(input_dim: int = 7, num_classes: int = 2):
    from weaver.nn.model.ParticleTransformer import ParticleTransformer

    # particle_transformer's ParT recipe
    return ParticleTransformer(input_dim=input_dim, num_classes=num_classes, pair_input_dim=4,
                               use_pre_activation_pair=False, embed_dims=[128, 512, 128],
                               pair_embed_dims=[64, 64, 64], num_heads=8, num_layers=8, num_cls_layers=2,
                               cls_block_params={"dropout": 0, "attn_dropout": 0, "activation_dropout": 0},
                               fc_params=[], activation="gelu", trim=True, for_inference=False)


def weaver_particlenet(input_dim: int = 7, num_classes: int = 2):
    from weaver.nn.model.ParticleNet import ParticleNet

    return ParticleNet(input_dim, num_classes, conv_params=PN_CONV, fc_params=[(256, 0.1)], use_fusion=False,
                       use_fts_bn=True, use_counts=True)


def scramble(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial BN statistics and perturbed weights, so that a wrong mapping cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return module.eval()


@pytest.fixture(scope="module")
def inputs():
    return example_inputs(7, lengths=LENGTHS, length=64, seed=11)


def jettag_view(inputs):
    """The same jets as jettag might get them: another order and padded to 80."""
    order = torch.tensor([6, 2, 0, 5, 1, 4, 3])
    return order, tuple(torch.nn.functional.pad(t[order], (0, 16)) for t in inputs)


def test_part_matches_weaver_core(inputs):
    torch.manual_seed(0)
    weaver = scramble(weaver_part(), 1)
    ours = load_weaver_state_dict(create_model("part", num_classes=2, features="kin"), weaver.state_dict())
    _, features, vectors, mask = inputs
    with torch.no_grad():
        expect = weaver(features, v=vectors, mask=mask.float())
        order, theirs = jettag_view(inputs)
        got = ours.eval()(*theirs)
    torch.testing.assert_close(got, expect[order], atol=1e-5, rtol=1e-5)
    assert expect.std() > 0.05  # outputs differ between jets: the comparison is not vacuous


def test_particlenet_matches_weaver_core(inputs):
    torch.manual_seed(0)
    weaver = scramble(weaver_particlenet(), 2)
    ours = load_weaver_state_dict(create_model("particlenet", num_classes=2, features=7), weaver.state_dict())
    points, features, _, mask = inputs
    with torch.no_grad():
        expect = weaver(points, features, mask.float())
        order, theirs = jettag_view(inputs)
        got = ours.eval()(*theirs)
    torch.testing.assert_close(got, expect[order], atol=1e-5, rtol=1e-5)
    assert expect.std() > 0.01


@pytest.fixture(scope="module")
def realistic_jets():
    from jetfactory import random_jets

    return random_jets(12, seed=3, min_len=2, max_len=60, with_impact=True)


@pytest.mark.parametrize("feature_set", ["kin", "kinpid", "full"])
def test_reference_particlenet_weights(feature_set, realistic_jets):
    path = REFERENCE / f"ParticleNet_{feature_set}.pt"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    from jettag.data.features import build_inputs

    arrays = build_inputs(realistic_jets, feature_set, max_len=64)
    x = [torch.from_numpy(arrays[k]) for k in ("points", "features", "vectors", "mask")]
    state = read_weaver_checkpoint(path)
    weaver = weaver_particlenet(x[1].shape[1], 10)
    weaver.load_state_dict({k.removeprefix("mod."): v for k, v in state.items()})
    ours = load_weaver_state_dict(create_model("particlenet", num_classes=10, features=feature_set), path)
    with torch.no_grad():
        expect = weaver.eval()(x[0], x[1], x[3].float())
        got = ours.eval()(*x)
        # jettag's own batching: only the first P = longest jet columns
        longest = int(x[3].sum(-1).max())
        got_short = ours(*(t[..., :longest] for t in x))
    scale = expect.abs().max()
    torch.testing.assert_close(got, expect, atol=1e-5 * scale, rtol=1e-5)
    torch.testing.assert_close(got_short, expect, atol=1e-5 * scale, rtol=1e-5)
    probs = torch.softmax(expect, -1)
    torch.testing.assert_close(torch.softmax(got, -1), probs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["part", "particlenet"])
def test_export_to_weaver_naming_round_trips(kind, tmp_path):
    torch.manual_seed(0)
    weaver = scramble(weaver_part() if kind == "part" else weaver_particlenet(), 3)
    original = {k: v.clone() for k, v in weaver.state_dict().items()}
    ours = create_model(kind, num_classes=2, features="kin")
    # with the "mod." prefix of particle_transformer, saved to disk and read back safely
    torch.save({f"mod.{k}": v for k, v in original.items()}, tmp_path / "ckpt.pt")
    load_weaver_state_dict(ours, tmp_path / "ckpt.pt")
    back = to_weaver_state_dict(ours, prefix="")
    assert set(back) == set(original)
    for key, value in original.items():
        assert back[key].shape == value.shape, key
        assert torch.equal(back[key], value), key
    fresh = weaver_part() if kind == "part" else weaver_particlenet()
    fresh.load_state_dict(back, strict=True)


def test_wrong_checkpoints_raise_naming_the_keys():
    part_state = weaver_part().state_dict()
    pn_state = weaver_particlenet().state_dict()
    with pytest.raises(WeaverCheckpointError, match="weaver part checkpoint, but the model is ParticleNet"):
        load_weaver_state_dict(create_model("particlenet"), part_state)
    with pytest.raises(WeaverCheckpointError, match="weaver particlenet checkpoint"):
        load_weaver_state_dict(create_model("part"), pn_state)
    shape_error = r"shape mismatch \(\d+\): .*bn_fts.running_mean: checkpoint \(7,\) vs model \(13,\)"
    with pytest.raises(WeaverCheckpointError, match=shape_error):
        load_weaver_state_dict(create_model("particlenet", features="kinpid"), pn_state)
    partial = {k: v for k, v in part_state.items() if not k.startswith("blocks.7.")}
    with pytest.raises(WeaverCheckpointError, match=r"missing in checkpoint \(\d+\): blocks\.7\."):
        load_weaver_state_dict(create_model("part"), partial)


def test_unreadable_file_names_the_path(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(np.arange(10, dtype=np.uint8).tobytes())
    with pytest.raises(WeaverCheckpointError, match=r"bad\.pt"):
        read_weaver_checkpoint(bad)
