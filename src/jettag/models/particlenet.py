"""ParticleNet (arXiv:1902.08570), as weaver-core's ``ParticleNet`` in particle_transformer's recipe.

Three EdgeConv blocks (k = 16; 64,64,64 / 128,128,128 / 256,256,256), the first kNN in the
(delta eta, delta phi) ``points`` and the later ones in feature space, no fusion block, input
feature BN, average pooling normalised by the number of real particles, FC 256 + ReLU +
dropout 0.1 and a Linear to the classes. Weights map one-to-one onto weaver's.

Jets with at most k real particles get zero-feature padded neighbours exactly as in weaver (whose
padded points sit at a far coordinate); a batch shorter than k + 1 is padded internally so the
kNN always has k + 1 candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from jettag.models.layers import EdgeConv, MaskedBatchNorm, exporting
from jettag.models.registry import JetModel, register_model

DEFAULT_CONV = ((16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256)))


class ParticleNet(JetModel):
    inference_particles = 1024  # eval sub-batch (JetModel.forward), the fastest of 512-4096 on 2 cores

    def __init__(self, input_dim: int, num_classes: int,
                 conv_params: Sequence[tuple[int, Sequence[int]]] = DEFAULT_CONV,
                 fc_params: Sequence[tuple[int, float]] = ((256, 0.1),)) -> None:
        super().__init__(input_dim, num_classes)
        self.bn_fts = MaskedBatchNorm(input_dim)
        self.edge_convs = nn.ModuleList()
        in_feat = input_dim
        for k, channels in conv_params:
            self.edge_convs.append(EdgeConv(k, in_feat, channels))
            in_feat = channels[-1]
        self.max_k = max(k for k, _ in conv_params)
        fcs: list[nn.Module] = []
        for width, drop in fc_params:
            fcs.append(nn.Sequential(nn.Linear(in_feat, width), nn.ReLU(), nn.Dropout(drop)))
            in_feat = width
        fcs.append(nn.Linear(in_feat, num_classes))
        self.fc = nn.Sequential(*fcs)
        self.classifier_path = f"fc.{len(fcs) - 1}"

    def forward_features(self, points: torch.Tensor, features: torch.Tensor, vectors: torch.Tensor | None,
                         mask: torch.Tensor) -> torch.Tensor:
        mask = self.check_inputs(points, features, None, mask)
        p = features.shape[-1]
        extra = self.max_k + 1 if exporting() else max(0, self.max_k + 1 - p)
        if extra:  # kNN needs k + 1 candidates; extra columns are padding
            points, features = F.pad(points, (0, extra)), F.pad(features, (0, extra))
            mask = F.pad(mask, (0, extra), value=False)
        keep = mask[:, 0]  # (B, P)
        counts = keep.sum(dim=-1, keepdim=True).clamp(min=1)
        fts = self.bn_fts(features, mask).masked_fill(~mask, 0.0).transpose(1, 2)  # (B, P, C)
        pts = points.transpose(1, 2)
        kmask = keep.unsqueeze(-1)
        for idx, conv in enumerate(self.edge_convs):
            fts = conv(pts if idx == 0 else fts, fts, keep).masked_fill(~kmask, 0.0)
        return fts.sum(dim=1) / counts.to(fts.dtype)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)  # hidden FC layers with dropout, then the classifier


@register_model
def particlenet(input_dim: int, num_classes: int, **overrides) -> ParticleNet:
    """ParticleNet as in arXiv:1902.08570 (366k parameters for 7 inputs, 2 classes)."""
    return ParticleNet(input_dim, num_classes, **overrides)
