"""Seed 002's event models: the cross-attention stage's terms, padding invariance, the theta switch."""

from __future__ import annotations

import pytest
import torch

from jettag.data.kinds import get_kind
from jettag.models import create_model
from jettag.models.event import KinSubCrossAttention

MODELS = ("xattn_event", "concat_event", "mixer_event")
# float32 attention over <= 100 entries: outputs that should be equal agree to ~1e-6
TOL = 1e-5
# narrower than the registered sizes: the properties tested do not depend on the width, the run time does
SMALL = {"xattn_event": {"dim": 20}, "concat_event": {"dim": 20}, "mixer_event": {"dim": 16}}


def _inputs(name: str, seed: int = 0, batch: int = 3, length: int = 50):
    torch.manual_seed(seed)
    model = create_model(name, 3, **SMALL[name]).eval()
    return model, get_kind(model.input_kind).example_inputs(model, batch, length, seed=seed)


def test_cross_attention_has_only_kin_sub_terms() -> None:
    torch.manual_seed(0)
    cross = KinSubCrossAttention(20, 5)
    kin, sub = torch.randn(4, 3, 20), torch.randn(4, 3, 20)
    out, w = cross(kin, sub)
    assert out.shape == (4, 3, 20) and w.shape == (4, 5, 3, 3)  # only the 3 kinematics rows come out
    # identical substructure tokens: every key is the same, so the weights are uniform whatever the
    # kinematics queries; a kin x kin term would make them depend on the kinematics
    same_sub = sub[:, :1].expand(-1, 3, -1)
    for k in (kin, torch.randn(4, 3, 20) * 3):
        assert torch.allclose(cross(k, same_sub)[1], torch.full((4, 5, 3, 3), 1 / 3), atol=TOL)
    # identical kinematics tokens: every value is the same, so the output ignores the substructure;
    # a sub x sub term (or substructure values) would let it move
    same_kin = kin[:, :1].expand(-1, 3, -1)
    base = cross(same_kin, sub)[0]
    assert torch.allclose(cross(same_kin, sub + torch.randn_like(sub))[0], base, atol=TOL)
    # with distinct tokens both streams move the output: kinematics (queries, values), substructure (keys)
    assert not torch.allclose(cross(kin, sub + torch.randn_like(sub))[0], out, atol=1e-3)
    assert not torch.allclose(cross(kin + torch.randn_like(kin), sub)[0], out, atol=1e-3)


@pytest.mark.parametrize("name", MODELS)
def test_padding_invariance_per_jet(name: str) -> None:
    model, (items, mask, tokens) = _inputs(name)
    mask[0, 1, 5:] = False  # event 0, jet 2: five entries only
    mask[2, 0, 3:] = False
    items = items * mask.unsqueeze(-1)
    with torch.no_grad():
        ref = model(items, mask, tokens)
        noisy = items + torch.randn_like(items) * (~mask).unsqueeze(-1)  # change padded entries only
        assert torch.allclose(model(noisy, mask, tokens), ref, atol=TOL)
        moved = items.clone()
        moved[0, 1, 2] += 1.0  # a real constituent of event 0's second jet
        out = model(moved, mask, tokens)
        assert not torch.allclose(out[0], ref[0], atol=1e-4)
        assert torch.allclose(out[1:], ref[1:], atol=TOL)  # other events do not see it
        if name != "mixer_event":  # longer padding: the same outputs
            longer = torch.cat([items, torch.zeros_like(items[:, :, :6])], dim=2)
            lmask = torch.cat([mask, torch.zeros_like(mask[:, :, :6])], dim=2)
            assert torch.allclose(model(longer, lmask, tokens), ref, atol=TOL)


@pytest.mark.parametrize("name", MODELS)
def test_theta_switch(name: str) -> None:
    for use_theta in (True, False):
        torch.manual_seed(1)
        model = create_model(name, 3, use_theta=use_theta, **SMALL[name]).eval()
        items, mask, tokens = get_kind(model.input_kind).example_inputs(model, 3, 10, seed=1)
        turned = tokens.clone()
        turned[:, :2, 5] += 0.5
        with torch.no_grad():
            same = torch.allclose(model(items, mask, turned), model(items, mask, tokens), atol=TOL)
        assert same is (not use_theta)


def test_sizes_and_bad_shapes() -> None:
    params = {n: sum(p.numel() for p in create_model(n, 3).parameters()) for n in MODELS}
    assert params["mixer_event"] < 0.1 * params["xattn_event"]
    assert params["concat_event"] < params["xattn_event"]  # the same encoders without the cross stage
    model, (items, mask, tokens) = _inputs("xattn_event", length=8)
    with pytest.raises(ValueError, match="expected items"):
        model(items[..., :3], mask, tokens)
    with pytest.raises(ValueError, match="fusion"):
        create_model("xattn_event", 3, fusion="sum")


def test_hh4b_study_metrics_and_verdict() -> None:
    import numpy as np

    from jettag.studies.hh4b import plan, signal_metrics, verdict

    runs = plan("cpu", [0, 1, 2])
    groups = {"xattn", "xattn-notheta", "concat", "concat-notheta", "mixer", "mixer-notheta"}
    assert len(runs) == 18 and {r.group for r in runs} == groups
    off = "model.overrides.use_theta=false"
    assert all((off in r.overrides) == r.group.endswith("notheta") for r in runs)
    labels = np.array([0, 1, 2, 2, 0, 2])
    probs = np.array([[.8, .1, .1], [.1, .6, .3], [.1, .1, .8], [.3, .3, .4], [.5, .4, .1], [.2, .2, .6]])
    mass = np.array([0, 0, 612.0, 1990.0, 0, 805.0])
    m = signal_metrics(labels, probs, 2, mass)
    assert m["sig_auc_pct"] == 100.0  # every signal score (0.4, 0.6, 0.8) above every background one
    assert m["eff_m600"] == 100.0 and m["eff_m2000"] == 100.0 and "eff_m1000" not in m
    rows = {"xattn": [{"sig_auc_pct": v, "params": 4e5, "s_per_epoch": 10.0} for v in (98.0, 98.2, 98.1)],
            "concat": [{"sig_auc_pct": v} for v in (97.0, 97.1, 96.9)],
            "mixer": [{"sig_auc_pct": v, "params": 4e4, "s_per_epoch": 1.0} for v in (98.0, 98.3, 97.8)]}
    text = verdict(rows)
    assert "xattn is higher" in text and "xattn vs xattn-notheta: not run" in text
    assert "mixer is not distinguishable from xattn" in text and "(10.0%)" in text
