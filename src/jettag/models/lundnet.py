"""LundNet-3 and LundNet-5 (Dreyer, Qu, JHEP 03 (2021) 052; seed 003), as the reference code
(fdreyer/LundNet, DGL) builds them, in plain PyTorch on batched graphs.

Input: the Lund tree of each jet (``jettag.physics.lund``; the ``lund`` input kind), one node per
C/A declustering with features (ln kt, ln Delta, ln z) for LundNet-3 or (ln kt, ln Delta, ln z,
ln m, psi) for LundNet-5, edges parent <-> child in both directions; the graph is fixed (no kNN).

Network: BatchNorm of the node features; six EdgeConv blocks of widths (32, 32), (32, 32), (64, 64),
(64, 64), (128, 128), (128, 128). In a block each edge src -> dst carries the message
theta(x_dst - x_src) + phi(x_src) -> BN -> ReLU -> Linear -> BN -> ReLU, a node takes the mean of its
incoming messages (zero when it has none, as DGL's mean), adds a shortcut (Linear + BN when the width
changes, else the identity) and applies a ReLU. Fusion: the six block outputs concatenated (448
channels) -> Linear 384 -> ReLU -> BN; mean over the nodes of each graph; Linear 256 -> ReLU ->
dropout 0.1; Linear to the classes. 391,528 (LundNet-3) and 391,724 (LundNet-5) parameters for two
classes; module names follow the reference (``bn_fts``, ``edge_convs.i.theta`` ...).

Batched graphs are flat: ``features`` (N, F) of all nodes of the batch, ``edges`` (2, E) source and
destination rows into them, ``graph`` (N,) the graph of each node and ``num_nodes`` (B,). Messages
are gathered with index_select and summed with scatter_add, so a batch is one set of dense ops
whatever its graphs. A jet of one particle has an empty tree: its graph has no nodes and pools to
zeros, so it gets the classifier's output for a zero embedding. The theta/phi linear maps are
applied per node and then gathered (theta x_dst - theta x_src + phi x_src: the same message, with
the matmuls on N nodes instead of E edges).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from jettag.models.registry import JetModel, register_model
from jettag.physics.lund import FEATURES

LUND3 = ("ln_kt", "ln_delta", "ln_z")
LUND5 = FEATURES
DEFAULT_CONV = ((32, 32), (32, 32), (64, 64), (64, 64), (128, 128), (128, 128))


def _sum_rows(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """(size, C): row i is the sum of the rows of ``values`` (R, C) whose ``index`` is i.

    ``scatter_add`` rather than ``index_add``: the ONNX exporter turns the latter into a
    ScatterElements without reduction, which keeps one of several rows with the same index.
    """
    out = values.new_zeros(size, values.shape[1])
    return out.scatter_add(0, index.unsqueeze(1).expand(-1, values.shape[1]), values)


class GraphBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over rows (nodes or edges) that accepts batches of fewer than two rows in training:
    those are normalised with the running statistics, which they leave unchanged (a batch of jets of
    one or two particles has no or one node)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                                self.eps)
        return super().forward(x)


class EdgeConvBlock(nn.Module):
    """One EdgeConv block on a fixed graph with mean aggregation and a shortcut (see the module doc)."""

    def __init__(self, in_feat: int, out_feats: Sequence[int]) -> None:
        super().__init__()
        self.theta = nn.Linear(in_feat, out_feats[0], bias=False)
        self.phi = nn.Linear(in_feat, out_feats[0], bias=False)
        self.fcs = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in pairwise(out_feats))
        self.bns = nn.ModuleList(GraphBatchNorm(w) for w in out_feats)
        if in_feat == out_feats[-1]:
            self.sc: nn.Linear | None = None
        else:
            self.sc = nn.Linear(in_feat, out_feats[-1], bias=False)
            self.sc_bn = GraphBatchNorm(out_feats[-1])

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, inv_degree: torch.Tensor
                ) -> torch.Tensor:
        t = self.theta(x)
        e = t.index_select(0, dst) + (self.phi(x) - t).index_select(0, src)
        e = F.relu(self.bns[0](e))
        for fc, bn in zip(self.fcs, self.bns[1:]):
            e = F.relu(bn(fc(e)))
        agg = _sum_rows(e, dst, x.shape[0]) * inv_degree
        sc = x if self.sc is None else self.sc_bn(self.sc(x))
        return F.relu(agg + sc)


class LundNet(JetModel):
    input_kind = "lund"

    def __init__(self, num_classes: int, node_features: Sequence[str] = LUND5,
                 conv_params: Sequence[Sequence[int]] = DEFAULT_CONV,
                 fc_params: Sequence[tuple[int, float]] = ((256, 0.1),),
                 ln_kt_min: float | None = None, ln_delta_min: float | None = None) -> None:
        unknown = [f for f in node_features if f not in FEATURES]
        if unknown or not node_features:
            raise ValueError(f"LundNet: node features {list(node_features)} must be a subset of {FEATURES}")
        super().__init__(len(node_features), num_classes)
        self.node_features = tuple(node_features)
        # the cuts of the Lund trees this model reads (the ``lund`` kind builds its graphs with them)
        self.ln_kt_min, self.ln_delta_min = ln_kt_min, ln_delta_min
        self.bn_fts = GraphBatchNorm(self.input_dim)
        self.edge_convs = nn.ModuleList()
        in_feat = self.input_dim
        for channels in conv_params:
            self.edge_convs.append(EdgeConvBlock(in_feat, channels))
            in_feat = channels[-1]
        fused = sum(c[-1] for c in conv_params)
        out_chn = min(max((fused // 128) * 128, 128), 1024)  # the reference's np.clip((in // 128) * 128, ...)
        self.fusion_block = nn.Sequential(nn.Linear(fused, out_chn), nn.ReLU(), GraphBatchNorm(out_chn))
        fcs: list[nn.Module] = []
        in_chn = out_chn
        for width, drop in fc_params:
            fcs.append(nn.Sequential(nn.Linear(in_chn, width), nn.ReLU(), nn.Dropout(drop)))
            in_chn = width
        fcs.append(nn.Linear(in_chn, num_classes))
        self.fc = nn.Sequential(*fcs)
        self.classifier_path = f"fc.{len(fcs) - 1}"

    def forward_features(self, features: torch.Tensor, edges: torch.Tensor, graph: torch.Tensor,
                         num_nodes: torch.Tensor) -> torch.Tensor:
        """The mean of the fused node features per graph (B, 384) (the layout: module docstring)."""
        if features.ndim != 2 or features.shape[1] != self.input_dim:
            raise ValueError(f"LundNet: features must be (nodes, {self.input_dim}), "
                             f"got {tuple(features.shape)}")
        src, dst = edges[0], edges[1]
        n = features.shape[0]
        degree = _sum_rows(features.new_ones(dst.shape[0], 1), dst, n)
        inv_degree = 1.0 / degree.clamp(min=1.0)
        x = self.bn_fts(features)
        outputs = []
        for conv in self.edge_convs:
            x = conv(x, src, dst, inv_degree)
            outputs.append(x)
        x = self.fusion_block(torch.cat(outputs, dim=1))
        pooled = _sum_rows(x, graph, num_nodes.shape[0])
        return pooled / num_nodes.clamp(min=1).to(x.dtype).unsqueeze(1)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)  # FC 256 with dropout, then the classifier


@register_model
def lundnet3(input_dim: int, num_classes: int, **overrides) -> LundNet:
    """LundNet-3: node features (ln kt, ln Delta, ln z); 391,528 parameters for 2 classes.

    ``input_dim`` (the particle feature set's width) does not apply: the node features are fixed.
    """
    return LundNet(num_classes, **{"node_features": LUND3, **overrides})


@register_model
def lundnet5(input_dim: int, num_classes: int, **overrides) -> LundNet:
    """LundNet-5: node features (ln kt, ln Delta, ln z, ln m, psi); 391,724 parameters for 2 classes.

    ``input_dim`` (the particle feature set's width) does not apply: the node features are fixed.
    """
    return LundNet(num_classes, **{"node_features": LUND5, **overrides})
