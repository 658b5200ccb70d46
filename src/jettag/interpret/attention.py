"""Attention maps of a trained model over a set of jets: captured weights, per-class heat maps and
the per-query statistics behind the "binary attention" finding of arXiv:2412.03673.

Capture goes through ``jettag.models.layers.capture_attention`` (eval mode, explicit softmax only
while capturing). Module groups:

- ``particle``: the particle-attention blocks (``blocks.<l>.attn``), (L, H) maps over particles;
- ``mi``: MIParT's softmax(U1), shared by all MI blocks, recorded once (1, D1 heads);
- ``class``: the class-attention blocks (query = class token, keys = [class token, particles]).

Padded particles are excluded everywhere: rows of padded queries are not counted, padded keys
hold exactly 0. Particles keep the store's order (decreasing pT).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from jettag.models.layers import Attention, ValueAttention, capture_attention

GROUP_PATTERNS = {"particle": re.compile(r"^blocks\.(\d+)\.attn$"),
                  "mi": re.compile(r"^mi_blocks\.(\d+)\.attn$"),
                  "class": re.compile(r"^head\.cls_blocks\.(\d+)\.attn$")}


def attention_modules(model: nn.Module) -> dict[str, list[str]]:
    """{group: module names in block order} for the groups the model has (empty: no attention)."""
    out: dict[str, list[tuple[int, str]]] = {}
    for name, m in model.named_modules():
        if not isinstance(m, (Attention, ValueAttention)):
            continue
        for group, pat in GROUP_PATTERNS.items():
            hit = pat.match(name)
            if hit:
                out.setdefault(group, []).append((int(hit.group(1)), name))
    groups = {g: [n for _, n in sorted(v)] for g, v in out.items()}
    if "mi" in groups:  # one shared softmax(U1): keep the first block's record only
        groups["mi"] = groups["mi"][:1]
    return groups


def has_attention(model: nn.Module) -> bool:
    return bool(attention_modules(model))


@torch.no_grad()
def capture_batch(model: nn.Module, inputs: tuple[torch.Tensor, ...]
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and {group: (L, B, H, T, S)} attention of one batch (model in eval mode)."""
    groups = attention_modules(model)
    with capture_attention(model) as rec:
        logits = model(*inputs)
    return logits, {g: torch.stack([rec[n][0] for n in names]) for g, names in groups.items()}


def query_stats(att: np.ndarray, n_real: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per real query of a (L, B, H, P, P) particle-map array: the largest weight, the entropy (nats)
    over real keys and the key holding the largest weight, each (L, H, Q); the jet (batch row) and
    the particle index of each query (Q,)."""
    p = att.shape[-1]
    qmask = np.arange(p)[None, :] < n_real[:, None]  # (B, P)
    rows = att.transpose(0, 2, 1, 3, 4)[:, :, qmask]  # (L, H, Q, P)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(rows > 0, rows * np.log(rows), 0.0).sum(-1)
    jet, query = np.nonzero(qmask)
    return rows.max(-1), ent, rows.argmax(-1), jet, query


@dataclass
class AttentionSummary:
    """Accumulated over batches: heat-map sums per class and the per-query statistics."""

    num_classes: int
    length: int
    sums: dict[str, np.ndarray] = field(default_factory=dict)  # group -> (C, L, H, P, P)
    pair_counts: np.ndarray | None = None  # (C, P, P) jets in which both particles exist
    qmax: dict[str, list[np.ndarray]] = field(default_factory=dict)
    qent: dict[str, list[np.ndarray]] = field(default_factory=dict)
    qarg: dict[str, list[np.ndarray]] = field(default_factory=dict)
    qindex: list[np.ndarray] = field(default_factory=list)
    qclass: list[np.ndarray] = field(default_factory=list)
    qjet: list[np.ndarray] = field(default_factory=list)
    qlen: list[np.ndarray] = field(default_factory=list)
    jets_seen: int = 0

    def add(self, maps: dict[str, torch.Tensor], n_real: np.ndarray, labels: np.ndarray) -> None:
        """Add one batch: ``maps`` from ``capture_batch``, real lengths (B,), labels (B,)."""
        c, p = self.num_classes, self.length
        if self.pair_counts is None:
            self.pair_counts = np.zeros((c, p, p))
        real = np.arange(p)[None, :] < n_real[:, None]
        pair = (real[:, :, None] & real[:, None, :]).astype(np.float64)
        np.add.at(self.pair_counts, labels, pair)
        first = True
        for g, t in maps.items():
            if g == "class":
                continue
            a = t.cpu().double().numpy()
            width = a.shape[-1]
            a = np.pad(a, [(0, 0)] * 3 + [(0, p - width)] * 2)
            a = a * pair[None, :, None]  # padded queries' rows to 0 (padded keys are 0 already)
            if g not in self.sums:
                self.sums[g] = np.zeros((c, a.shape[0], a.shape[2], p, p))
                self.qmax[g], self.qent[g], self.qarg[g] = [], [], []
            np.add.at(self.sums[g], labels, a.transpose(1, 0, 2, 3, 4))
            mx, ent, arg, jet, query = query_stats(a, n_real)
            self.qmax[g].append(mx.astype(np.float32))
            self.qent[g].append(ent.astype(np.float32))
            self.qarg[g].append(arg.astype(np.int16))
            if first:
                self.qclass.append(labels[jet].astype(np.int64))
                self.qjet.append((jet + self.jets_seen).astype(np.int64))
                self.qlen.append(n_real[jet].astype(np.int64))
                self.qindex.append(query.astype(np.int16))
                first = False
        self.jets_seen += len(labels)

    def heat_maps(self) -> dict[str, np.ndarray]:
        """{group: (C, L, H, P, P)} mean attention over the jets of each class in which both
        particles exist (NaN where none does)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return {g: s / self.pair_counts[:, None, None] for g, s in self.sums.items()}

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The per-query arrays (what the JSON statistics are computed from)."""
        out: dict[str, np.ndarray] = {}
        if not self.qmax:
            return out
        out[f"{prefix}query_class"] = np.concatenate(self.qclass)
        out[f"{prefix}query_jet"] = np.concatenate(self.qjet)
        out[f"{prefix}query_nreal"] = np.concatenate(self.qlen)
        out[f"{prefix}query_index"] = np.concatenate(self.qindex)
        for g in self.qmax:
            out[f"{prefix}{g}_max"] = np.concatenate(self.qmax[g], axis=-1)
            out[f"{prefix}{g}_entropy"] = np.concatenate(self.qent[g], axis=-1)
            out[f"{prefix}{g}_argmax"] = np.concatenate(self.qarg[g], axis=-1)
        return out


def binary_stats(qmax: np.ndarray, qent: np.ndarray, nreal: np.ndarray, self_max: np.ndarray
                 ) -> dict[str, Any]:
    """Per block and head of (L, H, Q) arrays: mean largest weight, fraction of queries whose
    largest weight exceeds 0.5 and 0.9, the same with that weight on *another* particle (the
    paper's "attends to one other particle"; ``_on_other``), fraction whose largest weight is on the
    query itself (``self_max``, bool), mean entropy (nats), as nested lists [L][H]; and the mean
    entropy of a uniform row over the same queries (ln n_real)."""
    uniform = float(np.log(nreal).mean()) if len(nreal) else float("nan")
    return {
        "mean_max": qmax.mean(-1).tolist(),
        "frac_max_gt_0.5": (qmax > 0.5).mean(-1).tolist(),
        "frac_max_gt_0.9": (qmax > 0.9).mean(-1).tolist(),
        "frac_max_gt_0.5_on_other": ((qmax > 0.5) & ~self_max).mean(-1).tolist(),
        "frac_max_gt_0.9_on_other": ((qmax > 0.9) & ~self_max).mean(-1).tolist(),
        "frac_max_on_self": self_max.mean(-1).tolist(),
        "mean_entropy": qent.mean(-1).tolist(),
        "uniform_entropy": uniform,
        "queries": int(qmax.shape[-1]),
    }
