"""Seed 001's transformer (``transformer``, ``transformer_tracks``) and its ``tokens`` input kind."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
from jetfactory import random_jets

from jettag.cli import main
from jettag.data.kinds import get_kind
from jettag.data.kinds.tokens import TOKEN_FEATURES, token_table
from jettag.data.store import KIND_CLUSTER, KIND_TRACK, JetDataError, make_jets, write_store
from jettag.models import create_model
from jettag.models.transformer import TokenTransformer

SEED_PARAMS = 101_794  # seed 001's JAX/Haiku count (top tagging, 2 classes)


def _detector_jets(n: int, seed: int) -> ak.Array:
    """Jets with the detector fields: charged particles are tracks, neutral ones clusters whose EM
    fraction is 1 for photons and 0.25 otherwise (label: the track fraction above its median)."""
    jets = random_jets(n, seed=seed, max_len=40, with_impact=True)
    charge = jets.part_charge
    photon = jets.part_pid == 22
    kind = ak.where(charge != 0, KIND_TRACK, KIND_CLUSTER)
    emfrac = ak.where(charge != 0, 0.0, ak.where(photon, 1.0, 0.25))
    hadfrac = ak.where(charge != 0, 0.0, 1.0 - emfrac)
    charged = ak.to_numpy(ak.sum(charge != 0, axis=1)) / ak.to_numpy(ak.num(charge))
    label = (charged > np.median(charged)).astype(np.int32)
    extra = {f: jets[f] for f in ("part_d0val", "part_d0err", "part_dzval", "part_dzerr")}
    extra.update(part_kind=kind, part_emfrac=emfrac, part_hadfrac=hadfrac)
    return make_jets(jets.part_px, jets.part_py, jets.part_pz, jets.part_energy, label=label,
                     pid=jets.part_pid, charge=charge, extra_particle=extra)


def _inputs(model: TokenTransformer, batch: int = 3, length: int = 16, seed: int = 0
            ) -> tuple[torch.Tensor, ...]:
    return get_kind("tokens").example_inputs(model, batch, length, seed)


def test_tokenizer_sums_features_and_position() -> None:
    model = create_model("transformer", num_classes=2)
    n = sum(p.numel() for p in model.parameters())
    print(f"transformer parameters: {n:,} (seed 001: {SEED_PARAMS:,}, JAX/Haiku)")
    # the two tokenizer maps go to the full width each (summed); a concatenation would split it
    assert tuple(model.tokenizer.weight.shape) == (32, len(TOKEN_FEATURES))
    assert tuple(model.position.weight.shape) == (32, 2)
    assert not any(isinstance(m, torch.nn.Linear) and m.in_features == len(TOKEN_FEATURES) + 2
                   for m in model.modules())
    points, features, _, _ = _inputs(model)
    tokens = model.tokens(points, features)
    assert tokens.shape == (3, 16, 32)
    expected = model.tokenizer(features.transpose(1, 2)) + model.position(points.transpose(1, 2))
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)  # the same two GEMMs and one add
    # Haiku-sized heads (4 x 32): blocks 4 x 25,280, tokenizer 8 x 32 + 32 + 2 x 32 + 32, final LN 64,
    # head 32 x 2 + 2; the seed's 160 more are 5 more token inputs (docs/models.md)
    assert n == 4 * 25_280 + 288 + 96 + 64 + 66 == 101_634
    assert create_model("transformer_tracks", num_classes=2).clusters is False


def test_padding_invariance() -> None:
    torch.manual_seed(0)
    model = create_model("transformer", num_classes=8).eval()
    points, features, vectors, mask = _inputs(model, length=16)
    ref = model(points, features, vectors, mask)
    pad = 24
    g = torch.Generator().manual_seed(1)

    def padded(x: torch.Tensor) -> torch.Tensor:  # garbage in the new padded slots: masking must hide it
        return torch.cat([x, torch.randn(x.shape[0], x.shape[1], pad, generator=g)], dim=2)

    big_mask = torch.cat([mask, torch.zeros(mask.shape[0], 1, pad, dtype=torch.bool)], dim=2)
    out = model(padded(points), padded(features), padded(vectors), big_mask)
    # float32 attention and pooling over a longer padded axis: summation order differs (~1e-7)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_permutation_invariance() -> None:
    torch.manual_seed(0)
    model = create_model("transformer", num_classes=8).eval()
    points, features, vectors, mask = _inputs(model, length=16)
    perm = torch.randperm(16)
    real = mask[:, 0, perm]
    # permute only jets whose tokens are all real (the last jet has half padding: keep it in place)
    p_points, p_features, p_vectors = (x[:, :, perm] for x in (points, features, vectors))
    ref = model(points, features, vectors, mask)[:-1]
    out = model(p_points[:-1], p_features[:-1], p_vectors[:-1], real[:-1].unsqueeze(1))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)  # float32 sums in another order


def test_stochastic_depth_off_in_eval() -> None:
    torch.manual_seed(0)
    model = create_model("transformer", num_classes=4, drop_path=0.5, dropout=0.0)
    plain = create_model("transformer", num_classes=4, drop_path=0.0, dropout=0.0)
    plain.load_state_dict(model.state_dict())
    inputs = _inputs(model, batch=8)
    model.train()
    a, b = model(*inputs), model(*inputs)
    assert not torch.equal(a, b)  # training: random branches dropped per sample
    model.eval()
    plain.eval()
    torch.testing.assert_close(model(*inputs), plain(*inputs), rtol=0, atol=0)  # identity in eval
    assert [blk.drop_path.p for blk in model.blocks] == [0.125, 0.25, 0.375, 0.5]


def test_tokens_hold_tracks_and_clusters_as_the_seed(tmp_path: Path) -> None:
    jets = _detector_jets(20, seed=3)
    features, _, offsets = token_table(jets)
    kind = ak.to_numpy(ak.flatten(jets.part_kind))
    track = kind == KIND_TRACK
    col = {name: features[:, i] for i, name in enumerate(TOKEN_FEATURES)}
    assert np.array_equal(col["is_track"], track) and np.array_equal(col["is_cluster"], ~track)
    # zeros where a kind lacks the feature
    assert not col["d0"][~track].any() and not col["emfrac"][track].any() and not col["hadfrac"][track].any()
    d0 = ak.to_numpy(ak.flatten(jets.part_d0val))
    np.testing.assert_allclose(col["d0"][track], np.arcsinh(d0[track] / 0.02), rtol=1e-5)  # float32
    np.testing.assert_allclose(col["emfrac"][~track], ak.to_numpy(ak.flatten(jets.part_emfrac))[~track])
    assert offsets[-1] == len(kind)
    # tracks only: every token a track, as many as the jet has
    model = create_model("transformer_tracks", num_classes=2)
    data = get_kind("tokens").build(jets, {"max_len": 128}, model)
    assert np.array_equal(data.sizes(), ak.to_numpy(ak.sum(jets.part_kind == KIND_TRACK, axis=1)))
    assert (data.table[:-1, 0] == 1).all()
    # a particle-level store has no kinds: one clear error naming the file and the fields
    bare = random_jets(5, seed=1)
    with pytest.raises(JetDataError, match=r"^x\.parquet: field\(s\) \['part_d0val', 'part_kind'"):
        token_table(bare, source="x.parquet")


def test_trains_through_jettag_train(tmp_path: Path) -> None:
    data = tmp_path / "tokens.parquet"
    write_store(data, _detector_jets(160, seed=4), ["few", "many"], "random jets with detector fields")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "base: flavour_transformer\n"
        "train: {epochs: 1, batch_size: 32, grad_accum: 2, lr: 3.0e-3, progress: false}\n")
    run = tmp_path / "run"
    assert main(["train", str(recipe), f"data.path={data}", "--run-dir", str(run)]) == 0
    log = (run / "log.csv").read_text().splitlines()
    assert sum(",val," in r for r in log) == 1
    assert (run / "checkpoints" / "best.safetensors").is_file()
    # the run's model rebuilds from config.yaml (model name, tokens kind) and scores its test split;
    # the evaluate command itself is exercised for every kind by test_input_kinds.py
    from jettag.data.dataset import load_splits
    from jettag.train.checkpoint import load_run_model

    model, cfg = load_run_model(run)
    test = load_splits(cfg, ("test",))[0]["test"]
    batch = get_kind(model.input_kind).build(test, cfg["data"], model).batch(np.arange(len(test)))
    probs = model.predict_proba(*batch.inputs())
    assert probs.shape == (len(test), 2) and torch.isfinite(probs).all()
    # jettag interpret: attention maps of every block and saliency per token (tracks and clusters)
    out = tmp_path / "interp"
    args = ["--out", str(out), "--jets", "6", "--ig-steps", "4", "--draw", "1"]
    assert main(["interpret", str(run), *args]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["attention"] is not None and stats["saliency"]["completeness_warning"] is None
    heat = np.load(out / "attention.npz")["particle_heat"]
    assert heat.shape[2] == 4  # (class, block, head, P, P): the seed's 4 heads in each of its blocks
