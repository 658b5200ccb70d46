"""The figures of ``jettag interpret``: small PNGs from ``matplotlib.figure.Figure`` objects saved
directly (no pyplot state, no global backend switch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

#: particle types for colouring, from the PDG id (0 = unknown: charged or neutral by charge)
PARTICLE_TYPES = ("charged hadron", "neutral hadron", "photon", "electron", "muon")
TYPE_COLOURS = ("tab:red", "tab:green", "tab:orange", "tab:blue", "tab:purple")
DPI = 80


def particle_type(pid: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Index into ``PARTICLE_TYPES`` per particle (hadrons split by charge when the id is unknown)."""
    a = np.abs(np.asarray(pid))
    out = np.where(np.asarray(charge) != 0, 0, 1)
    out = np.where(a == 22, 2, out)
    out = np.where(a == 11, 3, out)
    return np.where(a == 13, 4, out)


def draw_jet(ax: Axes, deta: np.ndarray, dphi: np.ndarray, pt: np.ndarray, ptype: np.ndarray,
             attention: np.ndarray | None, threshold: float, title: str = "") -> LineCollection | None:
    """One jet on the (delta eta, delta phi) plane: a marker per particle (area by pT share, colour by
    type) and a line between i and j (i != j) wherever attention[i, j] (query i, key j) exceeds
    ``threshold``, its opacity rising with the weight; a black ring marks a particle whose attention
    to itself exceeds it. Returns the lines drawn (None if none)."""
    lines = None
    if attention is not None:
        n = len(deta)
        a = attention[:n, :n]
        own = np.diag(a) > threshold
        if own.any():
            ax.scatter(deta[own], dphi[own], s=40, facecolors="none", edgecolors="black", linewidths=0.5,
                       zorder=3)
        qi, kj = np.nonzero((a > threshold) & ~np.eye(n, dtype=bool))
        if len(qi):
            segs = np.stack([np.stack([deta[qi], dphi[qi]], -1), np.stack([deta[kj], dphi[kj]], -1)], 1)
            w = a[qi, kj]
            colours = np.zeros((len(w), 4))
            colours[:, 3] = 0.3 + 0.7 * (w - threshold) / max(1e-9, 1 - threshold)
            lines = LineCollection(segs, colors=colours, linewidths=0.8, zorder=1)
            ax.add_collection(lines)
    share = pt / max(float(pt.sum()), 1e-12)
    for t, colour in enumerate(TYPE_COLOURS):
        sel = ptype == t
        if sel.any():
            ax.scatter(deta[sel], dphi[sel], s=5 + 400 * share[sel], c=colour, label=PARTICLE_TYPES[t],
                       zorder=2, edgecolors="none", alpha=0.85)
    ax.set_xlim(-1.0, 1.0)
    ax.set_ylim(-1.0, 1.0)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=5)
    if title:
        ax.set_title(title, fontsize=6)
    return lines


def jet_figure(path: Path, deta: np.ndarray, dphi: np.ndarray, pt: np.ndarray, ptype: np.ndarray,
               maps: np.ndarray, blocks: Sequence[int], heads: Sequence[int], threshold: float,
               title: str, block_label: str = "block") -> None:
    """Rows = blocks, columns = heads of one jet's (L, H, P, P) maps."""
    size = (1.3 * len(heads) + 0.4, 1.35 * len(blocks) + 0.5)
    fig = Figure(figsize=size)
    axes = fig.subplots(len(blocks), len(heads), squeeze=False)
    for r, blk in enumerate(blocks):
        for c, h in enumerate(heads):
            draw_jet(axes[r, c], deta, dphi, pt, ptype, maps[blk, h], threshold,
                     f"{block_label} {blk} head {h}")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=6, markerscale=0.5,
               frameon=False)
    fig.suptitle(f"{title}  (lines: attention > {threshold:g}, rings: self-attention > {threshold:g}; "
                 "axes: delta eta, delta phi)", fontsize=7)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=DPI)


def heat_map_figure(path: Path, maps: np.ndarray, title: str, block_label: str = "block",
                    length: int | None = None) -> None:
    """Grid of (L, H, P, P) mean attention matrices: rows = blocks, columns = heads."""
    lay, heads = maps.shape[:2]
    p = length or maps.shape[-1]
    cols = min(heads, 16)
    rows_per = int(np.ceil(heads / cols))
    fig = Figure(figsize=(0.9 * cols + 0.6, 0.9 * lay * rows_per + 0.6))
    axes = fig.subplots(lay * rows_per, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for blk in range(lay):
        for h in range(heads):
            ax = axes[blk * rows_per + h // cols, h % cols]
            ax.imshow(np.nan_to_num(maps[blk, h, :p, :p]), cmap="viridis", vmin=0,
                      vmax=max(1e-6, float(np.nanmax(maps[blk, h, :p, :p]))), interpolation="nearest")
            ax.set_title(f"{block_label[0]}{blk} h{h}", fontsize=5, pad=1)
    fig.suptitle(f"{title} (query rows, key columns, particles by decreasing pT)", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.95), pad=0.2)
    fig.savefig(path, dpi=DPI)


def binary_figure(path: Path, trained: np.ndarray, untrained: np.ndarray, title: str) -> None:
    """Histograms of the largest attention weight per query, pooled over blocks and heads
    ((L, H, Q) arrays), trained vs untrained, one panel per block."""
    lay = trained.shape[0]
    fig = Figure(figsize=(1.6 * lay + 0.4, 1.8))
    axes = fig.subplots(1, lay, squeeze=False, sharey=True)
    bins = np.linspace(0, 1, 26)
    for blk in range(lay):
        ax = axes[0, blk]
        ax.hist(trained[blk].ravel(), bins=bins, density=True, histtype="step", color="tab:blue",
                label="trained")
        ax.hist(untrained[blk].ravel(), bins=bins, density=True, histtype="step", color="tab:gray",
                label="untrained")
        ax.set_title(f"block {blk}", fontsize=6)
        ax.set_xlabel("max weight", fontsize=6)
        ax.tick_params(labelsize=5)
    axes[0, 0].legend(fontsize=5)
    fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def saliency_figure(path: Path, deta: np.ndarray, dphi: np.ndarray, attr: np.ndarray, cls: np.ndarray,
                    n_jets: np.ndarray, classes: Sequence[str], title: str) -> None:
    """Per class: attribution summed in (delta eta, delta phi) bins, divided by the class's jets."""
    fig = Figure(figsize=(2.2 * len(classes) + 0.4, 2.3))
    axes = fig.subplots(1, len(classes), squeeze=False)
    bins = np.linspace(-0.8, 0.8, 33)
    for c, name in enumerate(classes):
        sel = cls == c
        h, _, _ = np.histogram2d(deta[sel], dphi[sel], bins=[bins, bins], weights=attr[sel])
        h = h / max(1, int(n_jets[c]))
        lim = max(1e-12, float(np.abs(h).max()))
        ax = axes[0, c]
        im = ax.imshow(h.T, origin="lower", extent=(bins[0], bins[-1], bins[0], bins[-1]), cmap="RdBu_r",
                       vmin=-lim, vmax=lim)
        ax.set_title(f"{name} ({int(n_jets[c])} jets)", fontsize=6)
        ax.set_xlabel("delta eta", fontsize=6)
        ax.set_ylabel("delta phi", fontsize=6)
        ax.tick_params(labelsize=5)
        fig.colorbar(im, ax=ax, fraction=0.046).ax.tick_params(labelsize=5)
    fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def lund_plane_saliency_figure(path: Path, ln_inv_delta: np.ndarray, ln_kt: np.ndarray, attr: np.ndarray,
                               cls: np.ndarray, n_jets: np.ndarray, classes: Sequence[str], title: str,
                               bins: int = 24) -> None:
    """Per class: Lund-node attribution summed in (ln 1/Delta, ln kT) bins of the primary and secondary
    Lund planes together, divided by the class's jets (the bins span the nodes' range)."""
    fig = Figure(figsize=(2.2 * len(classes) + 0.4, 2.3))
    axes = fig.subplots(1, len(classes), squeeze=False)
    finite = np.isfinite(ln_inv_delta) & np.isfinite(ln_kt)
    if finite.any():
        x, y = ln_inv_delta[finite], ln_kt[finite]
        x_edges = np.linspace(float(x.min()), float(x.max()) + 1e-6, bins + 1)
        y_edges = np.linspace(float(y.min()), float(y.max()) + 1e-6, bins + 1)
    else:
        x_edges = y_edges = np.linspace(0.0, 1.0, bins + 1)
    for c, name in enumerate(classes):
        sel = (cls == c) & finite
        h, _, _ = np.histogram2d(ln_inv_delta[sel], ln_kt[sel], bins=[x_edges, y_edges], weights=attr[sel])
        h = h / max(1, int(n_jets[c]))
        lim = max(1e-12, float(np.abs(h).max()))
        ax = axes[0, c]
        im = ax.imshow(h.T, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                       extent=(x_edges[0], x_edges[-1], y_edges[0], y_edges[-1]))
        ax.set_title(f"{name} ({int(n_jets[c])} jets)", fontsize=6)
        ax.set_xlabel("ln 1/Delta", fontsize=6)
        ax.set_ylabel("ln kT", fontsize=6)
        ax.tick_params(labelsize=5)
        fig.colorbar(im, ax=ax, fraction=0.046).ax.tick_params(labelsize=5)
    fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def node_saliency_figure(path: Path, node_index: np.ndarray, attr: np.ndarray, cls: np.ndarray,
                         classes: Sequence[str], title: str, max_nodes: int = 30) -> None:
    """Per class: mean attribution of the k-th node (declustering order), k < max_nodes."""
    fig = Figure(figsize=(3.6, 2.2))
    ax = fig.subplots()
    for c, name in enumerate(classes):
        sel = (cls == c) & (node_index < max_nodes)
        total = np.bincount(node_index[sel], weights=attr[sel], minlength=max_nodes)
        count = np.bincount(node_index[sel], minlength=max_nodes)
        with np.errstate(invalid="ignore"):
            ax.plot(np.arange(max_nodes), total / count, marker=".", label=name)
    ax.set_xlabel("node (declustering order)", fontsize=6)
    ax.set_ylabel("mean attribution", fontsize=6)
    ax.tick_params(labelsize=5)
    ax.legend(fontsize=5)
    ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def subjet_figure(path: Path, within: np.ndarray, uniform: np.ndarray, classes: Sequence[str],
                  title: str, untrained: np.ndarray | None = None) -> None:
    """Per class: fraction of attention within a query's own subjet per block ((C, L), head mean), with
    the fraction a uniform attention would give as a dashed line and the untrained model's as a dotted
    one with open markers."""
    fig = Figure(figsize=(3.4, 2.2))
    ax = fig.subplots()
    for c, name in enumerate(classes):
        line, = ax.plot(np.arange(within.shape[1]), within[c], marker="o", label=f"{name}")
        ax.axhline(uniform[c], ls="--", color=line.get_color(), lw=0.8)
        if untrained is not None:
            ax.plot(np.arange(within.shape[1]), untrained[c], marker="o", mfc="none", ls=":",
                    color=line.get_color(), lw=0.8, label=f"{name}, untrained")
    ax.set_xticks(np.arange(within.shape[1]))
    ax.set_xlabel("block", fontsize=6)
    ax.set_ylabel("attention within own subjet", fontsize=6)
    ax.set_ylim(0, 1)
    ax.tick_params(labelsize=5)
    ax.legend(fontsize=5)
    ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def bw_figure(path: Path, trained: dict[str, np.ndarray], untrained: dict[str, np.ndarray] | None,
              uniform: dict[str, float], title: str) -> None:
    """Attention between the b and W subjets of top jets per block (head mean), as the ratio to what
    uniform attention would give (1 = no preference): b -> W, W -> b, W -> other W; solid trained,
    dotted untrained."""
    fig = Figure(figsize=(3.4, 2.2))
    ax = fig.subplots()
    for key, label in (("b_to_w", "b → W"), ("w_to_b", "W → b"), ("w_to_w", "W → other W")):
        x = np.arange(len(trained[key]))
        line, = ax.plot(x, trained[key] / uniform[key], marker="o", label=label)
        if untrained is not None:
            ax.plot(x, untrained[key] / uniform[key], marker="o", mfc="none", ls=":", color=line.get_color(),
                    lw=0.8, label=f"{label}, untrained")
    ax.axhline(1.0, color="grey", lw=0.6, ls="--")
    ax.set_xticks(np.arange(len(trained["b_to_w"])))
    ax.set_xlabel("block", fontsize=6)
    ax.set_ylabel("attention / uniform", fontsize=6)
    ax.tick_params(labelsize=5)
    ax.legend(fontsize=4.5, ncol=2)
    ax.set_title(title, fontsize=6.5)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
