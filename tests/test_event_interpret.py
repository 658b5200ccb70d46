"""Attention maps and Grad-CAM of the event models (``jettag.interpret.event``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jettag.data.kinds import get_kind
from jettag.data.kinds.event import EventBatch, EventTensors
from jettag.interpret.event import attention_maps, event_figures, grad_cam
from jettag.models import create_model

# float32 softmax rows and means over a few events: 1e-5
TOL = 1e-5


def _data(model, n: int = 6, length: int = 12, seed: int = 0) -> EventTensors:
    items, mask, tokens = get_kind(model.input_kind).example_inputs(model, n, length, seed=seed)
    mask[::2, 1, length // 3:] = False  # every other event: a short second jet
    items = items * mask.unsqueeze(-1)
    labels = torch.arange(n) % 2
    return EventTensors(EventBatch, items, mask, tokens, labels)


def test_attention_maps_per_class() -> None:
    torch.manual_seed(0)
    model = create_model("xattn_event", 2, use_theta=True, dim=20)  # narrow: faster, same properties
    data = _data(model)
    maps = attention_maps(model, data, ["bkg", "sig"], batch_size=4)
    assert set(maps) == {"bkg", "sig"}
    assert {"kin0", "kin1", "cross", "sub0", "sub2"} <= set(maps["sig"])
    for cls in maps.values():
        assert cls["cross"].shape == (3, 3) and np.allclose(cls["cross"].sum(-1), 1, atol=TOL)
        assert np.allclose(cls["kin0"].sum(-1), 1, atol=TOL)
    # the class mean is the mean over that class's events alone
    model.keep_attention = True
    with torch.no_grad():
        model.eval()(*data.batch(np.array([1, 3, 5])).inputs())
    direct = model.attention_maps["cross"].mean(1).mean(0).numpy()
    assert np.allclose(maps["sig"]["cross"], direct, atol=TOL)
    # padded substructure entries get no attention (event 0's second jet has 4 real entries)
    model.attention_maps = {}
    with torch.no_grad():
        model(*data.batch(np.array([0])).inputs())
    assert float(model.attention_maps["sub0"][0, 1, :, :, 4:].abs().max()) == 0.0
    figs = event_figures(maps, {c: grad_cam(model, data.batch(np.arange(6)), 1) for c in maps})
    assert set(figs) == {"attention", "gradcam"}


@pytest.mark.parametrize("name", ["xattn_event", "mixer_event"])
def test_grad_cam(name: str) -> None:
    torch.manual_seed(1)
    model = create_model(name, 2, use_theta=False, dim=20 if name == "xattn_event" else 16)
    data = _data(model, length=10)
    cam = grad_cam(model, data.batch(np.arange(6)), target=1)
    assert cam["kin"].shape == (6, 3) and cam["sub"].shape == (6, 2, 10) and cam["inputs"].shape == (6, 3, 6)
    assert (cam["sub"][0, 1, 3:] == 0).all()  # padded constituents carry nothing
    assert cam["sub"].max() > 0 and cam["kin"].max() > 0
    # theta off: the decision cannot depend on the theta channel; the other channels matter
    assert np.abs(cam["inputs"][..., 5]).max() == 0.0
    assert np.abs(cam["inputs"][..., :5]).max() > 0
