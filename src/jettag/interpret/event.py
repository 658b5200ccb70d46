"""Attention maps, Grad-CAM and saliency of seed 002's event models (``xattn_event``,
``concat_event``, ``mixer_event``): what ``jettag interpret`` does for an event run.

- ``attention_maps(model, data, classes)``: the self-attention matrices of the kinematics stream
  (3 x 3 per block), the cross-attention matrix (kinematics queries x substructure keys, 3 x 3) and
  the substructure self-attention (the first 16 entries of each jet, per block), averaged over heads
  and over the events of each class.
- ``grad_cam(model, batch, target)``: Grad-CAM (Selvaraju et al.) on the two streams' outputs: the
  channel weights are the token-mean gradients of the ``target`` logit, the map is
  ReLU(sum_c weight_c * activation_c) per kinematics token (jet 1, jet 2, sum) and per constituent
  (subjet) of each jet, 0 on padding; plus gradient x input of the six token channels (m, eta,
  phi, pT, E, theta), i.e. which inputs drive the decision.
- ``event_attributions(model, batch, target)``: gradient x input and integrated gradients per
  constituent and per kinematics token, with their completeness error.
- ``event_figures(maps, cams, classes)``: matplotlib ``Figure`` objects (no backend is switched).
- ``interpret_events(...)``: all of the above for a run's events, written to the output directory.
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
def attention_maps(model: EventModel, data: Any, classes: list[str], batch_size: int = 256,
                   per_head: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """``maps[class][name]``: mean attention over the events of the class and over the heads (with
    ``per_head`` each head apart, a leading head axis); names ``kin<i>``, ``cross`` (xattn/mixer) and
    ``sub<i>`` (transformer substructure, leading ``SUB_SHOWN`` entries, (2, n, n): per jet)."""
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
                    w = w[sel].float()
                    w = w.movedim(-3, 1) if per_head else w.mean(dim=-3)  # (events, [heads,] ...)
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


def event_attributions(
    model: EventModel, batch: Any, target: torch.Tensor, steps: int = 32
) -> dict[str, np.ndarray]:
    """Gradient x input and integrated gradients (zero baseline, Gauss-Legendre nodes on the straight
    path; the mask is held fixed) of each event's ``target`` logit, per constituent (subjet) of each jet
    (B, 2, L) and per kinematics token (B, 3), summed over channels; ``logit``, ``baseline_logit`` and
    ``completeness_error`` = |sum of all the event's attributions - (logit - baseline logit)| per event."""
    from jettag.interpret.saliency import quadrature

    model.eval()
    items, mask, tokens = (t.detach() for t in batch.inputs())

    def run(alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, t = (alpha * items).requires_grad_(True), (alpha * tokens).requires_grad_(True)
        out = model(x, mask, t).float().gather(1, target[:, None])[:, 0]
        gx, gt = torch.autograd.grad(out.sum(), [x, t])
        return out.detach(), gx, gt

    with torch.enable_grad():
        logit, gx, gt = run(1.0)
        base, _, _ = run(0.0)
        ax, at = torch.zeros_like(items), torch.zeros_like(tokens)
        for alpha, w in zip(*(v.tolist() for v in quadrature(steps))):
            _, g1, g2 = run(alpha)
            ax.add_(g1, alpha=w)
            at.add_(g2, alpha=w)
    real = mask.to(items.dtype)
    out = {
        "grad_x_input_sub": (gx * items).sum(-1) * real,
        "grad_x_input_kin": (gt * tokens).sum(-1),
        "integrated_gradients_sub": (ax * items).sum(-1) * real,
        "integrated_gradients_kin": (at * tokens).sum(-1),
    }
    total = out["integrated_gradients_sub"].double().sum((1, 2)) + out[
        "integrated_gradients_kin"
    ].double().sum(1)
    res = {k: v.detach().numpy() for k, v in out.items()}
    res.update(
        logit=logit.numpy(),
        baseline_logit=base.numpy(),
        completeness_error=(total - (logit - base).double()).abs().numpy(),
    )
    return res


def interpret_events(
    model: EventModel,
    data: Any,
    classes: list[str],
    out: Any,
    model_name: str,
    ig_steps: int = 32,
    batch_size: int = 64,
    tolerance: float = 0.02,
) -> dict[str, Any]:
    """``jettag interpret`` for an event model: the class-averaged attention maps of every block and
    head (``attention.npz``: ``<class>_<map>`` with a leading head axis; ``attention.png``: head means),
    Grad-CAM and gradient x input of the token channels per class (``gradcam.npz``, ``gradcam.png``),
    gradient x input and integrated gradients per constituent and kinematics token for the true class
    (``saliency.npz``, ``saliency.png``); returns the statistics."""
    from matplotlib.figure import Figure

    labels = np.asarray(data.labels)
    heads = attention_maps(model, data, classes, batch_size, per_head=True)
    maps = {c: {k: v.mean(0) for k, v in m.items()} for c, m in heads.items()}  # head means: figures, stats
    np.savez_compressed(
        out / "attention.npz", **{f"{c}_{k}": v for c, m in heads.items() for k, v in m.items()}
    )
    cams: dict[str, dict[str, np.ndarray]] = {}
    for c, name in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            parts = [
                grad_cam(model, data.batch(idx[s : s + batch_size]), c)
                for s in range(0, len(idx), batch_size)
            ]
            cams[name] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    np.savez_compressed(out / "gradcam.npz", **{f"{c}_{k}": v for c, m in cams.items() for k, v in m.items()})
    figures = []
    for key, fig in event_figures(maps, cams).items():
        fig.savefig(out / f"{key}.png", dpi=90)
        figures.append(f"{key}.png")
    parts = []
    for s in range(0, len(data), batch_size):
        batch = data.batch(np.arange(s, min(s + batch_size, len(data))))
        parts.append(event_attributions(model, batch, batch.label.long(), ig_steps))
    sal = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    np.savez_compressed(out / "saliency.npz", label=labels, **sal)
    diff = np.abs(sal["logit"] - sal["baseline_logit"])
    rel = sal["completeness_error"] / np.maximum(diff, 1.0)
    fig = Figure(figsize=(9, 3.4))
    a1, a2 = fig.subplots(1, 2)
    for c, name in enumerate(classes):
        sel = labels == c
        if sel.any():
            a1.plot(range(3), sal["integrated_gradients_kin"][sel].mean(0), "o-", label=name)
            a2.plot(sal["integrated_gradients_sub"][sel].sum(1).mean(0), label=name)
    a1.set_xticks(range(3), TOKENS)
    a1.set_title("integrated gradients per kinematics token")
    a2.set_xlabel("constituent (pT order), both jets")
    a2.set_title("integrated gradients per constituent")
    a1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "saliency.png", dpi=90)
    figures.append("saliency.png")
    per_class = {}
    for c, name in enumerate(classes):
        sel = labels == c
        if not sel.any():
            continue
        per_class[name] = {
            "events": int(sel.sum()),
            "attention": {
                k: np.asarray(v).tolist() for k, v in maps.get(name, {}).items() if not k.startswith("sub")
            },
            "integrated_gradients_kin": sal["integrated_gradients_kin"][sel].mean(0).tolist(),
            "integrated_gradients_sub_total": float(sal["integrated_gradients_sub"][sel].sum((1, 2)).mean()),
            "grad_cam_kin": cams[name]["kin"].mean(0).tolist() if name in cams else None,
        }
    bad = int((rel > tolerance).sum())
    return {
        "model": model_name,
        "classes": classes,
        "events": len(data),
        "per_class": per_class,
        "saliency": {
            "ig_steps": ig_steps,
            "completeness_max_rel_error": float(rel.max()) if len(rel) else 0.0,
            "completeness_tolerance": tolerance,
            "completeness_warning": (
                f"integrated gradients: completeness error above {tolerance:g} x "
                f"max(|logit - baseline|, 1) for {bad} of {len(rel)} events; "
                "raise --ig-steps"
            )
            if bad
            else None,
        },
        "figures": figures,
    }
