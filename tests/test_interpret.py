"""``jettag interpret``: attention capture, statistics behind the figures, saliency completeness,
eta-phi drawing and the command's error paths. Tiny models and jets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import awkward as ak
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


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tensors of a few jets: a second intra-op thread costs more than it gives (on a loaded 2-core
    machine each op waits for it, measured 50x slower), so these tests use one; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    train(resolve("top_particlenet", [*base, "model.overrides.conv_params=[[4,[8,8]]]",
                                      "model.overrides.fc_params=[[8,0.0]]"]), root / "particlenet")
    out["particlenet"] = root / "particlenet"
    train(resolve("top500_lundnet5", [*base, "model.overrides.conv_params=[[8,8]]",
                                      "model.overrides.fc_params=[[8,0.0]]"]), root / "lundnet")
    out["lundnet"] = root / "lundnet"
    return out


@pytest.fixture(scope="module")
def generated_top(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A few generated top and QCD jets (Pythia + FastJet, with truth partons) and a tiny ParT on them."""
    from jettag.data.generate.cache import cached_dataset

    root = tmp_path_factory.mktemp("interp_top")
    data = cached_dataset("top", 24, seed=7, cache_dir=root / "cache")
    base = [f"data.path={data}", "data.max_len=24", "epochs=1", "batch_size=16", "progress=false",
            "data.split=[0.5,0.1,0.4]"]
    train(resolve("top_part", [*base, *TINY_PART]), root / "part")
    return {"data": data, "part": root / "part"}


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


def _shifted(name: str) -> torch.nn.Module:
    model = _tiny(name)
    # as after training, the input BatchNorm has a non-zero shift: at initialisation BN(0) = 0 and the
    # LayerNorm behind it divides by sqrt(eps) at the zero baseline, a step no quadrature resolves
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MaskedBatchNorm):
                m.bias.normal_(generator=torch.Generator().manual_seed(4))
    return model


@pytest.mark.parametrize("name", ["part", "pfn", "particlenet"])
def test_integrated_gradients_completeness(name: str) -> None:
    model = _shifted(name)
    inputs = _inputs(2)
    target = torch.tensor([0, 1, 1])
    tol = 1e-3
    res = attributions(model, NAMES, inputs, target, steps=4, tolerance=tol, max_steps=256)
    mask = inputs[3][:, 0]
    ig = res["integrated_gradients"]
    assert (ig[~mask] == 0).all()  # padded particles: zero input, zero baseline
    diff = res["logit"] - res["baseline_logit"]
    scale = float(diff.abs().max())
    assert scale > 5 * tol  # the check below is not trivially 0 = 0
    # completeness within the requested tolerance (times max(|diff|, 1) = 1 here): the nodes are doubled
    # until it holds; the sum of float32 attributions adds ~1e-6
    torch.testing.assert_close(ig.sum(-1), diff, atol=tol + 1e-6, rtol=0)
    assert int(res["steps"]) <= 256
    torch.testing.assert_close(res["completeness_error"], (ig.double().sum(-1) - diff.double()).abs().float(),
                               atol=1e-6, rtol=0)  # same quantity, float32 vs float64 sums
    gxi = res["grad_x_input"]
    assert gxi.shape == mask.shape and (gxi[~mask] == 0).all()


def test_integrated_gradients_gauss_rule_and_doubling() -> None:
    model = _shifted("part")
    inputs, target = _inputs(2), torch.tensor([0, 1, 1])
    mid = attributions(model, NAMES, inputs, target, steps=8, rule="midpoint")
    gauss = attributions(model, NAMES, inputs, target, steps=8)
    # ParT's path is smooth (GELU, softmax): 8 Gauss-Legendre nodes are exact to ~1e-5 where the
    # midpoint rule with 8 nodes is off by ~6e-3 (measured: 1.2e-5 vs 6.1e-3)
    assert float(gauss["completeness_error"].max()) < 1e-4 < float(mid["completeness_error"].max())
    adapt = attributions(model, NAMES, inputs, target, steps=2, tolerance=1e-4)
    assert int(adapt["steps"]) > 2 and float(adapt["completeness_error"].max()) <= 1e-4
    capped = attributions(model, NAMES, inputs, target, steps=2, tolerance=1e-9, max_steps=4)
    assert int(capped["steps"]) == 4  # stops at max_steps; the caller reports the error reached


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
                 "--jets", "12", "--ig-steps", "4", "--ig-max-steps", "4", "--draw", "1",
                 "--subjets", "3"]) == 0
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
                    for t in (0.5, 0.9):
                        assert s[f"frac_max_gt_{t}_on_other"][lay][h] == pytest.approx(
                            np.count_nonzero((m > t) & ~on_self) / len(m), abs=1e-12)
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
        sel = sub["n3_label"] == ["QCD", "Top"].index(c)
        np.testing.assert_allclose(e["particle_within_per_block"],
                                   sub["n3_particle_within"][sel].mean(axis=(0, 2)), rtol=1e-12)
        # random jets carry no truth partons: the b/W subjets are the kinematic candidate, labelled so
        assert e["b_subjet"] == "kinematic" and e["b_subjet_jets"]["kinematic"] == e["jets"] == e["bw_jets"]
        for key in ("b_to_w", "w_to_b", "w_to_w"):
            for p in ("", "untrained_"):
                np.testing.assert_allclose(e[f"{p}particle_{key}_per_block"],
                                           sub[f"n3_{p}particle_{key}"][sel].mean(axis=(0, 2)), rtol=1e-12)
    assert "kinematic candidate" in (out / "report.md").read_text()
    sal = np.load(out / "saliency.npz")
    assert stats["saliency"]["completeness_max_abs_error"] == pytest.approx(
        float(np.abs(np.bincount(sal["jet"], weights=sal["integrated_gradients"]) -
                     (sal["logit"] - sal["baseline_logit"])).max()), rel=1e-9)
    for f in stats["figures"]:
        assert (out / f).stat().st_size > 1000
    assert any(f.startswith("jet_particle_") for f in stats["figures"])
    assert "Binary attention" in (out / "report.md").read_text()


@pytest.mark.parametrize("name", ["pfn", "particlenet", "lundnet"])
def test_interpret_model_without_attention(name: str, runs: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / name
    # one node and a tolerance no quadrature meets: the run still finishes and warns
    assert main(["interpret", str(runs[name]), "--data", str(runs["data"]), "--out", str(out), "--jets", "6",
                 "--ig-steps", "1", "--ig-max-steps", "1", "--ig-tolerance", "1e-12"]) == 0
    printed = capsys.readouterr().out
    assert "no attention maps" in printed and "warning: integrated gradients: completeness error" in printed
    stats = json.loads((out / "stats.json").read_text())
    why = {"pfn": "sum of per-particle embeddings", "particlenet": "k nearest neighbours",
           "lundnet": "Lund-tree nodes"}[name]
    assert stats["attention"] is None and "no attention" in stats["no_attention_reason"]
    assert why in stats["no_attention_reason"]
    expected = ["saliency_grad_x_input.png", "saliency_integrated_gradients.png"]
    if name == "lundnet":
        expected += ["saliency_grad_x_input_lund_plane.png", "saliency_integrated_gradients_lund_plane.png"]
    assert sorted(stats["figures"]) == sorted(expected)
    for f in expected:
        assert (out / f).stat().st_size > 1000
    assert not (out / "attention.npz").exists()
    report = (out / "report.md").read_text()
    assert "No attention maps" in report and "**Warning:** integrated gradients" in report
    sal = np.load(out / "saliency.npz")
    s = stats["saliency"]
    assert s["ig_steps"] == [1] and s["completeness_warning"]
    # completeness recomputed from the saved per-token (per-node) attributions
    ig_sum = np.bincount(sal["jet"], weights=sal["integrated_gradients"])
    err = np.abs(ig_sum - (sal["logit"] - sal["baseline_logit"]))
    assert s["completeness_max_abs_error"] == pytest.approx(float(err.max()), rel=1e-9)
    if name == "lundnet":
        from jettag.train.checkpoint import load_run_model

        model, cfg = load_run_model(runs[name])
        from jettag.data.dataset import read_dataset
        from jettag.data.kinds import get_kind

        jets, _ = read_dataset(runs["data"])
        labels = np.asarray(jets["label"])
        first = np.sort(np.concatenate([np.flatnonzero(labels == c)[:6] for c in (0, 1)]))
        nodes = get_kind("lund").build(jets[first], cfg["data"], model, "cpu", source="t").sizes()
        # node-level: one attribution per Lund node, placed by its (ln kT, ln Delta)
        assert len(sal["integrated_gradients"]) == int(np.sum(nodes)) == len(sal["ln_kt"])
        assert len(sal["ln_delta"]) == len(sal["ln_kt"])
        np.testing.assert_array_equal(np.bincount(sal["jet"], minlength=len(first)), np.asarray(nodes))


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


def _massless(eta: np.ndarray, phi: np.ndarray, pt: np.ndarray) -> np.ndarray:
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta)], -1)


def test_truth_b_subjet_of_constructed_jet() -> None:
    from jettag.interpret import subjets as S
    from jettag.interpret.run import _bw_flows

    # three well separated prongs of 3 particles each: A (pT 300) at (0, 0), B (150) at (0.4, 0.1),
    # C (60) at (-0.2, 0.45); kT subjets are labelled by decreasing pT: A = 0, B = 1, C = 2
    centres = np.array([[0.0, 0.0], [0.4, 0.1], [-0.2, 0.45]])
    spread = np.array([[0.0, 0.0], [0.02, -0.01], [-0.01, 0.02]])
    eta = (centres[:, None, 0] + spread[None, :, 0]).ravel()
    phi = (centres[:, None, 1] + spread[None, :, 1]).ravel()
    pt = np.repeat([100.0, 50.0, 20.0], 3)
    labels, moms = S.exclusive_subjets([_massless(eta, phi, pt)], 3)
    np.testing.assert_array_equal(labels[0], np.repeat([0, 1, 2], 3))

    def truth(b: int, w1: int, w2: int, far: bool = False, pid: tuple[int, ...] = (5, 2, -1)
              ) -> tuple[int, np.ndarray] | None:
        pos = centres[[b, w1, w2]] + 0.05  # partons 0.07 from their prong's axis
        if far:
            pos[0] = [1.5, 1.5]
        return S.truth_subjets(moms[0], np.array(pid), np.array([6, 24, 24]), pos[:, 0], pos[:, 1])

    b, w = truth(2, 0, 1)
    assert b == 2 and w.tolist() == [0, 1]
    b, w = truth(0, 2, 1)
    assert b == 0 and w.tolist() == [1, 2]
    b, w = truth(1, 0, 2, pid=(-5, 4, 5))  # W -> c b-bar: the top's b is the one whose mother is the top
    assert b == 1 and w.tolist() == [0, 2]
    assert truth(2, 0, 0) is None  # both W quarks in one subjet: unresolved
    assert truth(2, 0, 1, far=True) is None  # b outside every subjet's radius
    # the kinematic candidate: here the pair closest to m_W decides, not the truth
    assert S.b_candidate(moms[0]) in (0, 1, 2)
    # attention of the b subjet's particles only on the first W subjet, W particles only on b
    lab = labels[0]
    att = np.zeros((1, 1, 9, 9))
    att[0, 0, lab == 2] = (lab == 0) / 3.0
    att[0, 0, lab != 2] = (lab == 2) / 3.0
    flows = _bw_flows(att, lab, 2, np.array([0, 1]))
    np.testing.assert_allclose(flows["b_to_w"][0], [[1.0]], rtol=1e-12)
    np.testing.assert_allclose(flows["w_to_b"][0], [[1.0]], rtol=1e-12)
    np.testing.assert_allclose(flows["w_to_w"][0], [[0.0]], atol=0)
    assert flows["b_to_w"][1] == pytest.approx(6 / 9) and flows["w_to_w"][1] == pytest.approx(3 / 9)


def test_generated_top_jets_carry_truth_partons(generated_top: dict[str, Path]) -> None:
    from jettag.data.formats import read_jets
    from jettag.physics import kinematics as kin

    jets = read_jets(generated_top["data"])
    for f in ("truth_pid", "truth_mother", "truth_pt", "truth_eta", "truth_phi"):
        assert f in jets.fields
    top, qcd = jets[np.asarray(jets["label"]) == 1], jets[np.asarray(jets["label"]) == 0]
    assert len(top) == len(qcd) == 12  # 24 jets: 12 per class
    assert (np.asarray(ak.num(qcd["truth_pid"])) == 0).all()
    pid = np.abs(ak.to_numpy(ak.flatten(top["truth_pid"])))
    mother = ak.to_numpy(ak.flatten(top["truth_mother"]))
    assert (np.asarray(ak.num(top["truth_pid"])) == 3).all()
    is_b = (pid.reshape(-1, 3) == 5) & (mother.reshape(-1, 3) == 6)
    assert (is_b.sum(1) == 1).all() and ((mother.reshape(-1, 3) == 24).sum(1) == 2).all()
    assert np.isin(pid, [1, 2, 3, 4, 5]).all()
    # every decay parton (the b included) lies inside its top jet (R = 0.8)
    dr = kin.delta_r(np.repeat(ak.to_numpy(top["jet_eta"]), 3), np.repeat(ak.to_numpy(top["jet_phi"]), 3),
                     ak.to_numpy(ak.flatten(top["truth_eta"])), ak.to_numpy(ak.flatten(top["truth_phi"])))
    assert (dr < 0.8).all()
    assert (ak.to_numpy(ak.flatten(top["truth_pt"])) > 0).all()


def test_interpret_top_run_uses_truth_b_subjet(generated_top: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "top"
    assert main(["interpret", str(generated_top["part"]), "--data", str(generated_top["data"]),
                 "--out", str(out), "--jets", "8", "--ig-steps", "2", "--ig-max-steps", "2",
                 "--draw", "0"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    e = stats["subjets"]["Top"]
    sub = np.load(out / "subjets.npz")
    assert e["subjets"] == 3 and e["b_subjet"] == "truth" and e["jets"] == 8
    src = sub["n3_source"]
    assert e["b_subjet_jets"] == {"unresolved": int((src == -1).sum()), "kinematic": 0,
                                  "truth": int((src == 1).sum())}
    assert e["bw_jets"] == int((src == 1).sum()) > 0
    good = src == 1
    for key in ("b_to_w", "w_to_b", "w_to_w"):
        np.testing.assert_allclose(e[f"particle_{key}_per_block"],
                                   sub[f"n3_particle_{key}"][good].mean(axis=(0, 2)), rtol=1e-12)
        np.testing.assert_allclose(e[f"uniform_{key}"], sub[f"n3_uniform_{key}"][good].mean(), rtol=1e-12)
    assert stats["subjets"]["QCD"]["subjets"] == 2 and "b_subjet" not in stats["subjets"]["QCD"]
    assert "subjets_bw_particle_Top.png" in stats["figures"]
    assert "from truth" in (out / "report.md").read_text()


def test_matched_resonance_nearest_and_its_partons() -> None:
    from jettag.data.generate import truth
    from jettag.data.generate.recipes import Match

    # one event with two hadronic tops whose partons all lie within R of jet 0 (the second top nearer
    # its axis) and a jet 1 far from both; products listed by top
    res = truth.Resonances(
        event=np.array([0, 0]), abs_pid=np.array([6, 6]), eta=np.array([0.3, 0.1]), phi=np.zeros(2),
        n_quarks=np.array([3, 3]), n_gluons=np.zeros(2, int), n_leptons=np.zeros(2, int),
        product_owner=np.array([0, 1, 0, 1, 0, 1]), product_event=np.zeros(6, int),
        product_eta=np.array([0.3, 0.1, 0.2, 0.0, 0.4, 0.2]), product_phi=np.zeros(6),
        product_pid=np.array([5, -5, 2, 1, -1, -2]), product_pt=np.arange(6.0),
        product_mother=np.array([6, 6, 24, 24, 24, 24]))
    jets = truth.matched_resonance(np.array([0, 0]), np.array([0.0, 3.0]), np.zeros(2), res,
                                   Match((6,), quarks=3), 0.8, 1)
    assert jets.tolist() == [1, -1]
    counts, idx = truth.jet_decay_products(res, jets)
    assert counts.tolist() == [3, 0] and idx.tolist() == [1, 3, 5]  # the second top's b, then its W quarks
