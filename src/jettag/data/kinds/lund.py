"""The ``lund`` input kind: each jet's Lund tree as a graph (LundNet).

``LundKind.build`` turns canonical jets into their Lund trees (``jettag.physics.lund``, with the
model's ``ln_kt_min`` / ``ln_delta_min`` cuts) and holds them as flat tensors: all nodes' features
(the model's ``node_features`` columns), per-jet node and edge offsets, and the edges as
(parent, child) node indices within each jet. A batch is one gather of its jets' nodes and edges:
``LundBatch`` has the node features (N, F), the edges (2, E) in both directions with the offsets of
the batch applied, the graph of every node (N,) and the nodes per graph (B,), so graphs of any size
share one batch without padding. ``sizes()`` is the number of nodes per jet.

Trees are built once per dataset: ``build`` stores them in a cache file keyed by the content of the
jets' momenta and the cuts (``lund-<key>.npz``, numpy arrays only, read without pickle), in the
folder ``<data.path>.lund/`` beside a local store, or in ``$JETTAG_CACHE/lund`` (default
``~/.cache/jettag/lund``) for generated samples, for stores in read-only places and without a
``data.path``. Any other dataset of the same jets (a split, another run) finds the file again.

ONNX export of LundNet works with the node, edge and batch counts symbolic (see ``input_names`` /
``dynamic_axes``); the integer inputs (edges, graph, num_nodes) are int64.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import awkward as ak
import numpy as np
import torch
from torch import nn

from jettag.data import store
from jettag.data.kinds.base import InputKind, TensorBatch
from jettag.files import atomic_path
from jettag.physics.lund import FEATURES, MOMENTA, LundGraphs, lund_graphs

# Bump when the trees built from the same jets change (it is part of the cache key).
LUND_VERSION = "1"
CACHE_SUFFIX = ".lund"


@dataclass
class LundBatch(TensorBatch):
    """Graphs of a batch, flat: ``features`` (N, F) float32, ``edges`` (2, E) int64 (source row,
    destination row; every tree edge in both directions), ``graph`` (N,) int64 the jet of each node,
    ``num_nodes`` (B,) int64, ``label`` (B,). The model is called as
    ``model(features, edges, graph, num_nodes)``."""

    label: torch.Tensor
    features: torch.Tensor
    edges: torch.Tensor
    graph: torch.Tensor
    num_nodes: torch.Tensor


class LundGraphData:
    """A dataset of Lund graphs as flat tensors: jet k owns node rows ``node_offsets[k]:node_offsets[k+1]``
    and edge rows ``edge_offsets[k]:edge_offsets[k+1]``; ``edges`` (E, 2) are jet-local (parent, child)."""

    def __init__(self, features: torch.Tensor, node_offsets: torch.Tensor, edges: torch.Tensor,
                 edge_offsets: torch.Tensor, labels: torch.Tensor) -> None:
        if node_offsets.shape[0] != labels.shape[0] + 1 or edge_offsets.shape[0] != labels.shape[0] + 1:
            raise ValueError("node_offsets and edge_offsets must have n_jets + 1 entries")
        self.features = features
        self.node_offsets = node_offsets.to(torch.int64)
        self.edge_offsets = edge_offsets.to(torch.int64)
        self.edges = edges.to(torch.int64)
        self.labels = labels.to(torch.int64)
        self._nodes_np = np.diff(self.node_offsets.cpu().numpy())
        self._edges_np = np.diff(self.edge_offsets.cpu().numpy())

    @classmethod
    def from_graphs(cls, graphs: LundGraphs, columns: list[int], labels: np.ndarray) -> LundGraphData:
        return cls(torch.from_numpy(np.ascontiguousarray(graphs.features[:, columns])),
                   torch.from_numpy(graphs.node_offsets), torch.from_numpy(graphs.edges.astype(np.int64)),
                   torch.from_numpy(graphs.edge_offsets), torch.from_numpy(labels.astype(np.int64)))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        return self.features.device

    def sizes(self) -> np.ndarray:
        return self._nodes_np

    def to(self, device: torch.device | str) -> LundGraphData:
        device = torch.device(device)
        if device == self.device:
            return self
        return LundGraphData(self.features.to(device), self.node_offsets.to(device), self.edges.to(device),
                             self.edge_offsets.to(device), self.labels.to(device))

    def batch(self, index: np.ndarray | torch.Tensor) -> LundBatch:
        host = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        n_nodes, n_edges = int(self._nodes_np[host].sum()), int(self._edges_np[host].sum())
        dev = self.device
        idx = torch.as_tensor(host, dtype=torch.int64).to(dev)
        nodes = self.node_offsets[idx + 1] - self.node_offsets[idx]
        edges_per = self.edge_offsets[idx + 1] - self.edge_offsets[idx]
        first_node = torch.cumsum(nodes, 0) - nodes  # the batch's row of each jet's first node
        first_edge = torch.cumsum(edges_per, 0) - edges_per
        node_rows = torch.repeat_interleave(self.node_offsets[idx] - first_node, nodes, output_size=n_nodes)
        node_rows += torch.arange(n_nodes, device=dev)
        edge_rows = torch.repeat_interleave(self.edge_offsets[idx] - first_edge, edges_per,
                                            output_size=n_edges)
        edge_rows += torch.arange(n_edges, device=dev)
        shift = torch.repeat_interleave(first_node, edges_per, output_size=n_edges)
        pc = (self.edges.index_select(0, edge_rows) + shift.unsqueeze(1)).T  # (2, E): parent, child
        return LundBatch(
            label=self.labels[idx],
            features=self.features.index_select(0, node_rows),
            edges=torch.cat([pc, pc.flip(0)], dim=1),
            graph=torch.repeat_interleave(torch.arange(len(host), device=dev), nodes, output_size=n_nodes),
            num_nodes=nodes,
        )


def cache_dir(data_cfg: dict[str, Any]) -> Path:
    """Where the Lund graphs of a run's data are cached: ``<data.path>.lund/`` beside a local store
    (a file or a directory) when that folder can be written, else ``$JETTAG_CACHE/lund``."""
    from jettag.data.generate.cache import cache_root

    path = data_cfg.get("path")
    if path and not str(path).startswith("generate:"):
        local = Path(str(path))
        if local.exists():
            beside = local.parent / (local.name + CACHE_SUFFIX)
            if os.access(beside if beside.exists() else local.parent, os.W_OK):
                return beside
    return cache_root() / "lund"


def jets_key(jets: ak.Array, ln_kt_min: float | None, ln_delta_min: float | None) -> str:
    """Content key of the trees of ``jets``: a hash of the momenta as stored, the counts and the cuts."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"lund-v{LUND_VERSION};{ln_kt_min!r};{ln_delta_min!r};".encode())
    h.update(np.ascontiguousarray(ak.to_numpy(ak.num(jets[MOMENTA[0]], axis=1)), dtype=np.int64).tobytes())
    for f in MOMENTA:
        h.update(np.ascontiguousarray(ak.to_numpy(ak.flatten(jets[f]))).tobytes())
    return h.hexdigest()


def cached_lund_graphs(jets: ak.Array, ln_kt_min: float | None, ln_delta_min: float | None,
                       directory: Path, source: str = "<memory>") -> LundGraphs:
    """The Lund graphs of ``jets``, read from ``directory`` when built before, else built and saved."""
    path = directory / f"lund-{jets_key(jets, ln_kt_min, ln_delta_min)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            return LundGraphs(f["features"], f["node_offsets"], f["edges"], f["edge_offsets"])
    graphs = lund_graphs(jets, ln_kt_min, ln_delta_min, source)
    directory.mkdir(parents=True, exist_ok=True)
    # atomic (a reader never sees a half-written file); np.savez keeps a name that ends in .npz
    with atomic_path(path, path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")) as tmp:
        np.savez(tmp, features=graphs.features, node_offsets=graphs.node_offsets, edges=graphs.edges,
                 edge_offsets=graphs.edge_offsets)
    return graphs


def example_graphs(num_features: int, num_nodes: list[int], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Valid dummy inputs ``(features, edges, graph, num_nodes)``: graph k is a binary tree of
    ``num_nodes[k]`` nodes (node i > 0 hangs below node (i - 1) // 2), features standard normal."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor(num_nodes, dtype=torch.int64)
    total = int(counts.sum())
    first = torch.cumsum(counts, 0) - counts
    graph = torch.repeat_interleave(torch.arange(len(num_nodes)), counts)
    local = torch.arange(total) - first[graph]
    child = torch.nonzero(local > 0).squeeze(1)
    parent = first[graph[child]] + (local[child] - 1) // 2
    pc = torch.stack([parent, child])
    features = torch.randn(total, num_features, generator=g)
    return features, torch.cat([pc, pc.flip(0)], dim=1), graph, counts


class LundKind(InputKind):
    """Lund-tree graphs with the model's ``node_features`` (LundNet)."""

    name = "lund"
    input_names = ("features", "edges", "graph", "num_nodes")
    dynamic_axes: ClassVar[dict[str, dict[int, str]]] = {
        "features": {0: "nodes"}, "edges": {1: "edges"}, "graph": {0: "nodes"}, "num_nodes": {0: "batch"}}

    def build(self, jets: ak.Array, data_cfg: dict[str, Any], model: nn.Module,
              device: torch.device | str = "cpu", source: str = "<memory>") -> LundGraphData:
        jets, _ = store.validate_jets(jets, source=source)
        graphs = cached_lund_graphs(jets, model.ln_kt_min, model.ln_delta_min, cache_dir(data_cfg), source)
        columns = [FEATURES.index(f) for f in model.node_features]
        labels = np.asarray(ak.to_numpy(jets["label"]), dtype=np.int64)
        return LundGraphData.from_graphs(graphs, columns, labels).to(device)

    def example_inputs(self, model: nn.Module, batch_size: int = 2, length: int = 24,
                       seed: int = 0, full: bool = False) -> tuple[torch.Tensor, ...]:
        """``batch_size`` trees of ``length`` nodes (the last one of ``length // 2`` unless ``full``)."""
        sizes = [length] * batch_size if full else [length] * (batch_size - 1) + [max(1, length // 2)]
        return example_graphs(model.input_dim, sizes, seed)
