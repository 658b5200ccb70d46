"""``jettag interpret``: attention capture, statistics behind the figures, saliency completeness,
eta-phi drawing and the command's error paths. Tiny models and jets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from jetfactory import random_jets
from matplotlib.figure import Figure

from jettag.cli import main
from jettag.data.kinds.particles import example_inputs
from jettag.data.store import write_store
from jettag.interpret import drawing
from jettag.interpret.attention import capture_batch
from jettag.interpret.saliency import attributions
from jettag.models import create_model
from jettag.models.layers import Attention, MaskedBatchNorm, ValueAttention
from jettag.models.registry import feature_dim
from jettag.train.config import resolve
from jettag.train.trainer import train

TINY_PART = ["model.overrides.embed_dims=[16,16]", "model.overrides.pair_embed_dims=[8]",
             "model.overrides.num_heads=2", "model.overrides.num_layers=2",
             "model.overrides.num_cls_layers=1"]
NAMES = ("points", "features", "vectors", "mask")


def _tiny(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if name == "part":
        kw = dict(embed_dims=(16, 16), pair_embed_dims=(8,), num_heads=2, num_layers=2, num_cls_layers=1)
    elif name == "mipart":
        kw = dict(embed_dims=(16, 16), pair_embed_dims=(8, 8), num_heads=2, num_mi_layers=2, num_layers=1,
                  num_cls_layers=1)
    else:
        kw = {}
    return create_model(name, num_classes=2, features="kin", **kw).eval()


def _inputs(seed: int = 0) -> tuple[torch.Tensor, ...]:
    # batch of 3 with lengths 12, 5, 12 (padding in the middle jet)
    return example_inputs(feature_dim("kin"), batch_size=3, length=12, seed=seed, lengths=[12, 5, 12])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("interp")
    data = root / "jets.parquet"
    jets = random_jets(80, seed=3, min_len=4, max_len=14, with_impact=True)
    write_store(data, jets, ["QCD", "Top"], "random")
    base = [f"data.path={data}", "data.max_len=16", "epochs=1", "batch_size=32", "progress=false",
            "data.split=[0.5,0.1,0.4]"]
    out = {"data": data}
    train(resolve("top_part", [*base, *TINY_PART]), root / "part")
    out["part"] = root / "part"
    train(resolve("top_pfn", [*base, "data.feature_set=full"]), root / "pfn")
    out["pfn"] = root / "pfn"
    return out


@pytest.mark.parametrize("name", ["part", "mipart"])
def test_capture_rows_sum_to_one_and_padded_keys_zero(name: str) -> None:
    model = _tiny(name)
    inputs = _inputs()
    _, maps = capture_batch(model, inputs)
    mask = inputs[3][:, 0]
    groups = {"part": {"particle", "class"}, "mipart": {"particle", "mi", "class"}}[name]
    assert set(maps) == groups
    for g, t in maps.items():
        if g == "class":
            keys = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
            queries = torch.ones(mask.shape[0], 1, dtype=torch.bool)
        else:
            keys, queries = mask, mask
        for b in range(mask.shape[0]):
            a = t[:, b]  # (L, H, T, S)
            assert (a[..., ~keys[b]] == 0).all(), g  # exactly 0: -inf before the softmax
            rows = a[:, :, queries[b]][..., keys[b]].sum(-1)
            # float32 softmax: the row sums are 1 to a few ulps
            torch.testing.assert_close(rows, torch.ones_like(rows), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["part", "mipart"])
def test_capture_does_not_change_output(name: str) -> None:
    model = _tiny(name)
    inputs = _inputs(1)
    with torch.no_grad():
        plain = model(*inputs)
    captured, _ = capture_batch(model, inputs)
    # explicit softmax vs the fused SDPA kernel: same maths, float32 summation order differs
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-5)
    attn = [m for m in model.modules() if isinstance(m, (Attention, ValueAttention))]
    assert attn and all(m.record is None for m in attn)  # back on the fused path after capture


def test_capture_refuses_training_mode() -> None:
    model = _tiny("part").train()
    with pytest.raises(ValueError, match="eval mode"):
        capture_batch(model, _inputs())


@pytest.mark.parametrize("name", ["part", "pfn"])
def test_integrated_gradients_completeness(name: str) -> None:
    model = _tiny(name)
    # as after training, the input BatchNorm has a non-zero shift: at initialisation BN(0) = 0 and the
    # LayerNorm behind it divides by sqrt(eps) at the zero baseline, a step no quadrature resolves
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MaskedBatchNorm):
                m.bias.normal_(generator=torch.Generator().manual_seed(4))
    inputs = _inputs(2)
    target = torch.tensor([0, 1, 1])
    res = attributions(model, NAMES, inputs, target, steps=32)
    mask = inputs[3][:, 0]
    ig = res["integrated_gradients"]
    assert (ig[~mask] == 0).all()  # padded particles: zero input, zero baseline
    diff = res["logit"] - res["baseline_logit"]
    scale = float(diff.abs().max())
    assert scale > 1e-3  # the check below is not trivially 0 = 0
    # midpoint rule with 32 steps on a smooth path (error ~ curvature / 32^2, 2% of the output
    # range here) plus float32 sums (1e-5)
    torch.testing.assert_close(ig.sum(-1), diff, atol=0.02 * scale + 1e-5, rtol=0)
    gxi = res["grad_x_input"]
    assert gxi.shape == mask.shape and (gxi[~mask] == 0).all()


def test_eta_phi_drawing_of_two_particle_jet() -> None:
    ax = Figure().subplots()
    deta, dphi = np.array([0.1, -0.2]), np.array([0.3, -0.1])
    att = np.array([[0.2, 0.8], [0.6, 0.4]])
    lines = drawing.draw_jet(ax, deta, dphi, np.array([100.0, 50.0]), np.array([0, 2]), att, 0.7)
    segs = [np.asarray(s) for s in lines.get_segments()]
    assert len(segs) == 1  # only 0 -> 1 exceeds 0.7; the diagonal never draws
    np.testing.assert_array_equal(segs[0], [[0.1, 0.3], [-0.2, -0.1]])
    lines = drawing.draw_jet(ax, deta, dphi, np.array([100.0, 50.0]), np.array([0, 2]), att, 0.5)
    assert sorted(map(tuple, (np.asarray(s)[0] for s in lines.get_segments()))) == [(-0.2, -0.1), (0.1, 0.3)]
    offsets = np.concatenate([c.get_offsets() for c in ax.collections if hasattr(c, "get_sizes")
                              and len(c.get_sizes())])
    assert {tuple(o) for o in offsets} == {(0.1, 0.3), (-0.2, -0.1)}


def test_interpret_part_statistics_match_arrays(runs: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["interpret", str(runs["part"]), "--data", str(runs["data"]), "--out", str(out),
                 "--jets", "12", "--ig-steps", "4", "--draw", "1", "--subjets", "2"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    arr = np.load(out / "attention.npz")
    for prefix, name in (("", "trained"), ("untrained_", "untrained")):
        mx, ent = arr[f"{prefix}particle_max"], arr[f"{prefix}particle_entropy"]
        cls = arr[f"{prefix}query_class"]
        assert mx.shape[:2] == (2, 2)
        for c in ("all", "0", "1"):
            sel = np.ones(len(cls), bool) if c == "all" else cls == int(c)
            s = stats["attention"][name]["particle"][c]
            assert s["queries"] == int(sel.sum())
            for lay in range(2):
                for h in range(2):
                    m = mx[lay, h, sel]
                    # counts over the same float32 values: equal up to the division's rounding
                    for t in (0.5, 0.9):
                        assert s[f"frac_max_gt_{t}"][lay][h] == pytest.approx(
                            np.count_nonzero(m > t) / len(m), abs=1e-12)
                    on_self = arr[f"{prefix}particle_argmax"][lay, h, sel] == arr[f"{prefix}query_index"][sel]
                    assert s["frac_max_on_self"][lay][h] == pytest.approx(np.count_nonzero(on_self) / len(m),
                                                                          abs=1e-12)
                    # means of float32 arrays: float32 vs float64 accumulation
                    assert s["mean_max"][lay][h] == pytest.approx(float(np.mean(m, dtype=np.float64)),
                                                                  rel=1e-6)
                    assert s["mean_entropy"][lay][h] == pytest.approx(
                        float(np.mean(ent[lay, h, sel], dtype=np.float64)), rel=1e-6)
    # the per-query maxima are those of the saved per-class heat maps' inputs: each is in (0, 1]
    assert (arr["particle_max"] > 0).all() and (arr["particle_max"] <= 1 + 1e-6).all()
    # heat maps are per-pair means over the jets holding both particles: times those counts, each row
    # adds up to the number of jets holding the query particle (every captured row sums to 1)
    heat, counts = arr["particle_heat"], arr["pair_counts"]
    rows = np.nansum(heat * counts[:, None, None], -1)  # (C, L, H, P)
    jets_with = np.diagonal(counts, axis1=1, axis2=2)[:, None, None, :]
    # float32 rows: sums to 1 within a few ulps
    np.testing.assert_allclose(rows, np.broadcast_to(jets_with, rows.shape), rtol=1e-5, atol=1e-5)
    assert jets_with.sum() > 0
    sub = np.load(out / "subjets.npz")
    for c, e in stats["subjets"].items():
        sel = sub["n2_label"] == ["QCD", "Top"].index(c)
        np.testing.assert_allclose(e["particle_within_per_block"],
                                   sub["n2_particle_within"][sel].mean(axis=(0, 2)), rtol=1e-12)
    sal = np.load(out / "saliency.npz")
    assert stats["saliency"]["completeness_max_abs_error"] == pytest.approx(
        float(np.abs(np.bincount(sal["jet"], weights=sal["integrated_gradients"]) -
                     (sal["logit"] - sal["baseline_logit"])).max()), rel=1e-9)
    for f in stats["figures"]:
        assert (out / f).stat().st_size > 1000
    assert any(f.startswith("jet_particle_") for f in stats["figures"])
    assert "Binary attention" in (out / "report.md").read_text()


def test_interpret_model_without_attention(runs: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "pfn"
    assert main(["interpret", str(runs["pfn"]), "--data", str(runs["data"]), "--out", str(out), "--jets", "6",
                 "--ig-steps", "2"]) == 0
    assert "no attention maps" in capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    assert stats["attention"] is None and "no attention" in stats["no_attention_reason"]
    assert sorted(stats["figures"]) == ["saliency_grad_x_input.png", "saliency_integrated_gradients.png"]
    assert not (out / "attention.npz").exists()
    assert "No attention maps" in (out / "report.md").read_text()


def test_interpret_errors(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "norun"
    empty.mkdir()
    (empty / "config.yaml").write_text((runs["part"] / "config.yaml").read_text())
    assert main(["interpret", str(empty), "--data", str(runs["data"]), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jettag interpret: ") and "\n" not in err and "checkpoint" in err.lower()
    # the pfn run uses the 'full' feature set; jets without impact parameters do not fit it
    plain = tmp_path / "plain.parquet"
    write_store(plain, random_jets(10, seed=5, max_len=8), ["QCD", "Top"], "random")
    assert main(["interpret", str(runs["pfn"]), "--data", str(plain), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jettag interpret: ") and "\n" not in err
    assert "part_d0val" in err and "full" in err and str(plain) in err
    assert not (tmp_path / "o2").exists()  # refused before anything is written
