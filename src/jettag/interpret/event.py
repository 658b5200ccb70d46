"""Attention maps and Grad-CAM of seed 002's event models (``xattn_event``, ``concat_event``,
``mixer_event``); a small module for the interpretation machinery to absorb.

- ``attention_maps(model, data, classes)``: the self-attention matrices of the kinematics stream
  (3 x 3 per block), the cross-attention matrix (kinematics queries x substructure keys, 3 x 3) and
  the substructure self-attention (the first 16 entries of each jet, per block), averaged over heads
  and over the events of each class.
- ``grad_cam(model, batch, target)``: Grad-CAM (Selvaraju et al.) on the two streams' outputs: the
  channel weights are the token-mean gradients of the ``target`` logit, the map is
  ReLU(sum_c weight_c * activation_c) per kinematics token (jet 1, jet 2, sum) and per constituent
  (subjet) of each jet, 0 on padding; plus gradient x input of the six token channels (m, eta,
  phi, pT, E, theta), i.e. which inputs drive the decision.
- ``event_figures(maps, cams, classes)``: matplotlib ``Figure`` objects (no backend is switched).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from jettag.models.event import EventModel, substructure_tokens
from jettag.physics.jet_frame import TOKEN_CHANNELS

TOKENS = ("jet 1", "jet 2", "sum")
SUB_SHOWN = 16  # leading entries per jet whose self-attention is averaged


@torch.no_grad()
def attention_maps(model: EventModel, data: Any, classes: list[str], batch_size: int = 256
                   ) -> dict[str, dict[str, np.ndarray]]:
    """``maps[class][name]``: mean attention (heads and events of the class); names ``kin<i>``,
    ``cross`` (xattn/mixer) and ``sub<i>`` (transformer substructure, leading ``SUB_SHOWN`` entries,
    (2, n, n): per jet)."""
    was, model.keep_attention = model.keep_attention, True
    model.eval()
    sums: dict[int, dict[str, torch.Tensor]] = {}
    counts = np.zeros(len(classes), dtype=np.int64)
    try:
        for start in range(0, len(data), batch_size):
            batch = data.batch(np.arange(start, min(start + batch_size, len(data))))
            model.attention_maps = {}
            model(*batch.inputs())
            for c in range(len(classes)):
                sel = batch.label == c
                if not sel.any():
                    continue
                counts[c] += int(sel.sum())
                for name, w in model.attention_maps.items():
                    if w is None:
                        continue
                    w = w[sel].float().mean(dim=-3)  # over heads
                    if name.startswith("sub"):
                        w = w[..., :SUB_SHOWN, :SUB_SHOWN]
                    acc = sums.setdefault(c, {})
                    acc[name] = acc.get(name, 0) + w.sum(0)
    finally:
        model.keep_attention = was
    return {classes[c]: {k: (v / counts[c]).numpy() for k, v in s.items()} for c, s in sums.items()}


def grad_cam(model: EventModel, batch: Any, target: int) -> dict[str, np.ndarray]:
    """Per event: ``kin`` (B, 3) Grad-CAM of the kinematics tokens, ``sub`` (B, 2, L) of each jet's
    entries (0 where padded), ``inputs`` (B, 3, 6) gradient x input of the token channels, for the
    logit of class ``target``."""
    model.eval()
    items, mask, tokens = batch.inputs()
    mask = mask if mask.dtype == torch.bool else mask != 0
    tokens = tokens.clone().requires_grad_(True)
    with torch.enable_grad():
        sub = model.encode_substructure(items, mask)
        sub.retain_grad()
        kin = model.encode_kinematics(tokens)
        kin.retain_grad()
        logits = model.forward_head(model.head(model.fuse(kin, substructure_tokens(sub, mask))))
        logits[:, target].sum().backward()
    kin_w = kin.grad.mean(dim=1, keepdim=True)  # (B, 1, D)
    kin_cam = torch.relu((kin_w * kin).sum(-1))
    m = mask.unsqueeze(-1).to(sub.dtype)
    sub_w = (sub.grad * m).sum(dim=2, keepdim=True) / m.sum(dim=2, keepdim=True).clamp(min=1)
    sub_cam = torch.relu((sub_w * sub).sum(-1)) * mask
    return {"kin": kin_cam.detach().numpy(), "sub": sub_cam.detach().numpy(),
            "inputs": (tokens.grad * tokens).detach().numpy()}


def event_figures(maps: dict[str, dict[str, np.ndarray]], cams: dict[str, dict[str, np.ndarray]] | None = None
                  ) -> dict[str, Any]:
    """Figures: ``attention`` (each map, one row per class) and, with ``cams[class]`` (``grad_cam``
    outputs), ``gradcam`` (mean Grad-CAM per kinematics token, per constituent rank, and mean
    |gradient x input| per token channel, per class)."""
    from matplotlib.figure import Figure

    out: dict[str, Any] = {}
    classes = list(maps)
    names = [n for n in maps[classes[0]] if not n.startswith("sub")] + \
            [n for n in maps[classes[0]] if n.startswith("sub")][:1]
    fig = Figure(figsize=(3.2 * len(names), 3.0 * len(classes)))
    axes = fig.subplots(len(classes), len(names), squeeze=False)
    for i, cls in enumerate(classes):
        for j, name in enumerate(names):
            w = maps[cls][name]
            w = w.mean(0) if w.ndim == 3 else w  # substructure: both jets
            ax = axes[i, j]
            im = ax.imshow(w, vmin=0, cmap="viridis")
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(f"{cls}: {name}", fontsize=9)
            if w.shape == (3, 3):
                ax.set_xticks(range(3), TOKENS if name.startswith("kin") else [f"sub {t}" for t in TOKENS],
                              fontsize=7)
                ax.set_yticks(range(3), TOKENS, fontsize=7)
    fig.tight_layout()
    out["attention"] = fig
    if cams:
        fig = Figure(figsize=(12, 3.4))
        a1, a2, a3 = fig.subplots(1, 3)
        for cls, cam in cams.items():
            a1.plot(range(3), cam["kin"].mean(0), "o-", label=cls)
            sub = cam["sub"]
            a2.plot(np.arange(sub.shape[-1]), sub.mean((0, 1)), label=cls)
            a3.plot(range(6), np.abs(cam["inputs"]).mean((0, 1)), "o-", label=cls)
        a1.set_xticks(range(3), TOKENS)
        a1.set_title("Grad-CAM per kinematics token")
        a2.set_xlabel("constituent (pT order)")
        a2.set_title("Grad-CAM per constituent")
        a3.set_xticks(range(6), TOKEN_CHANNELS, fontsize=7)
        a3.set_title("|grad x input| per token channel")
        a1.legend(fontsize=7)
        fig.tight_layout()
        out["gradcam"] = fig
    return out
