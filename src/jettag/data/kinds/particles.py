"""The ``particles`` input kind: padded particle lists, the inputs of ParT, MIParT, ParticleNet, PFN.

Two ideas make batching cheap enough that the model, not the loader, sets the pace:

1. **Flat jagged tensors.** ``JetTensors`` holds a whole dataset as one (n_particles, C) feature
   table, one (n_particles, 4) vector table and per-jet offsets/lengths/labels: no per-jet Python
   objects, and ``.to("cuda")`` moves the dataset onto the GPU once so that every later batch is
   assembled there.
2. **One gather per batch.** A batch is an index (B, P) into the flat table (plus the mask), so
   assembling it is a single vectorised ``index_select`` on whatever device holds the data, padded
   only to the batch's own longest jet (rounded up to a multiple of 8, capped at ``max_len``);
   ``jettag.data.loader`` buckets jets by multiplicity so that this padding stays small.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import awkward as ak
import numpy as np
import torch
from torch import nn

from jettag.data import store
from jettag.data.features import DEFAULT_MAX_LEN, feature_names, particle_table, required_fields
from jettag.data.kinds.base import InputKind, TensorBatch

PAD_MULTIPLE = 8


@dataclass
class ParticleBatch(TensorBatch):
    """Padded network inputs, channel-first as weaver: ``points`` (B, 2, P), ``features`` (B, C, P),
    ``vectors`` (B, 4, P), ``mask`` (B, 1, P) bool, ``label`` (B,) int64; padded entries are 0.
    The model is called as ``model(points, features, vectors, mask)``."""

    label: torch.Tensor
    points: torch.Tensor
    features: torch.Tensor
    vectors: torch.Tensor
    mask: torch.Tensor


def padded_length(longest: int, max_len: int) -> int:
    """The batch length P: the longest jet rounded up to a multiple of 8, capped at ``max_len``."""
    return min(max_len, max(PAD_MULTIPLE, math.ceil(longest / PAD_MULTIPLE) * PAD_MULTIPLE))


class JetTensors:
    """A dataset as flat jagged tensors: jet k owns rows ``offsets[k]:offsets[k] + lengths[k]``.

    ``table`` is (n_particles + 1, C + 4): the C features followed by (px, py, pz, E), with an
    all-zero last row that every padded position of a batch points at, so one gather yields the
    features, the vectors and the zero padding at once.
    """

    def __init__(
        self,
        table: torch.Tensor,
        offsets: torch.Tensor,
        labels: torch.Tensor,
        feature_names: Sequence[str],
        max_len: int = DEFAULT_MAX_LEN,
    ) -> None:
        """Wrap a ready table (n_particles + 1, C + 4) whose last row is zero; see ``from_arrays``."""
        self.feature_names = list(feature_names)
        c = len(self.feature_names)
        if table.ndim != 2 or table.shape[1] != c + 4:
            raise ValueError(f"table {tuple(table.shape)} must be (n_particles + 1, {c} features + 4)")
        if offsets.shape[0] != labels.shape[0] + 1 or int(offsets[-1] - offsets[0]) != table.shape[0] - 1:
            raise ValueError("offsets must have n_jets + 1 entries spanning the flat particle rows")
        if table[-1].any():
            raise ValueError("the last row of the table (the padding row) must be zero")
        self.max_len = int(max_len)
        self.table = table.contiguous()
        self.offsets = (offsets[:-1] - offsets[0]).to(torch.int64)
        self.lengths = (offsets[1:] - offsets[:-1]).to(torch.int64)
        self.labels = labels.to(torch.int64)
        if len(self.lengths) and int(self.lengths.max()) > self.max_len:
            raise ValueError(f"a jet has {int(self.lengths.max())} particles, over max_len={self.max_len}")
        self._lengths_np = self.lengths.cpu().numpy()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        features: torch.Tensor,
        vectors: torch.Tensor,
        offsets: torch.Tensor,
        labels: torch.Tensor,
        feature_names: Sequence[str],
        max_len: int = DEFAULT_MAX_LEN,
    ) -> JetTensors:
        """From flat features (n, C), vectors (n, 4) and offsets (n_jets + 1), e.g. ``particle_features``."""
        if features.shape[0] != vectors.shape[0] or vectors.shape[1:] != (4,):
            raise ValueError(f"features {tuple(features.shape)} and vectors {tuple(vectors.shape)} mismatch")
        zero = features.new_zeros(1, features.shape[1] + 4)
        table = torch.cat([torch.cat([features, vectors.to(features.dtype)], dim=1), zero])
        return cls(table, offsets, labels, feature_names, max_len)

    @classmethod
    def from_jets(
        cls,
        jets: ak.Array,
        feature_set: str,
        max_len: int = DEFAULT_MAX_LEN,
        device: torch.device | str = "cpu",
        deta_sign_flip: bool = False,
        source: str = "<memory>",
    ) -> JetTensors:
        """Build the features of canonical jets (``jettag.data.features``) and hold them flat."""
        if "label" not in jets.fields:
            raise store.JetDataError(f"{source}: field 'label' is missing (present: {jets.fields})")
        table, offsets = particle_table(jets, feature_set, max_len, deta_sign_flip, source, extra_rows=1)
        labels = np.asarray(ak.to_numpy(jets["label"]), dtype=np.int64)
        out = cls(torch.from_numpy(table), torch.from_numpy(offsets), torch.from_numpy(labels),
                  feature_names(feature_set), max_len)
        return out.to(device)

    @classmethod
    def from_store(
        cls,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        feature_set: str,
        max_len: int = DEFAULT_MAX_LEN,
        device: torch.device | str = "cpu",
        deta_sign_flip: bool = False,
        chunk_size: int = 100_000,
        drop_invalid: bool = False,
    ) -> JetTensors:
        """Read a dataset (any format ``jettag.data.formats`` reads) chunk by chunk, so only the flat
        features, never the whole awkward dataset, are held at once."""
        from jettag.data import formats

        parts = [
            cls.from_jets(chunk, feature_set, max_len, "cpu", deta_sign_flip, source=str(path))
            for path in formats.resolve_dataset(paths)
            for chunk in formats.iter_jets([path], chunk_size=chunk_size, drop_invalid=drop_invalid)
        ]
        if not parts:
            raise store.JetDataError(f"{paths}: no jets")
        return cls.concatenate(parts).to(device)

    @classmethod
    def concatenate(cls, parts: Sequence[JetTensors]) -> JetTensors:
        """One dataset from several with the same feature set."""
        first = parts[0]
        if any(p.feature_names != first.feature_names or p.max_len != first.max_len for p in parts):
            raise ValueError("cannot concatenate JetTensors with different feature sets or max_len")
        if len(parts) == 1:
            return first
        table = torch.cat([*(p.table[:-1] for p in parts), first.table[-1:]])
        lengths = torch.cat([p.lengths for p in parts])
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64, device=lengths.device)
        torch.cumsum(lengths, 0, out=offsets[1:])
        return cls(table, offsets, torch.cat([p.labels for p in parts]), first.feature_names, first.max_len)

    # -- access --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def device(self) -> torch.device:
        return self.table.device

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    def to(self, device: torch.device | str) -> JetTensors:
        """Move the dataset (e.g. onto the GPU once, so batches are gathered there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        out = object.__new__(JetTensors)
        out.__dict__.update(self.__dict__)
        out.table = self.table.to(device)
        out.offsets, out.lengths, out.labels = (
            t.to(device) for t in (self.offsets, self.lengths, self.labels))
        return out

    def sizes(self) -> np.ndarray:
        """Per-jet multiplicities on the CPU (for bucketing without device round trips)."""
        return self._lengths_np

    def subset(self, index: np.ndarray) -> JetTensors:
        """A new flat dataset holding only jets ``index`` (on the CPU)."""
        idx = torch.as_tensor(index, dtype=torch.int64)
        lengths = self.lengths[idx]
        starts = torch.cumsum(lengths, 0) - lengths
        rows = torch.repeat_interleave(self.offsets[idx] - starts, lengths) + torch.arange(int(lengths.sum()))
        table = self.table[torch.cat([rows, torch.tensor([self.table.shape[0] - 1])])]
        offsets = torch.zeros(len(idx) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        return JetTensors(table, offsets, self.labels[idx], self.feature_names, self.max_len)

    def batch(self, index: np.ndarray | torch.Tensor, length: int | None = None) -> ParticleBatch:
        """Assemble jets ``index`` into a padded batch with one gather on the data's device.

        ``length`` defaults to the padded length of the longest jet in the batch (``padded_length``).
        """
        idx = torch.as_tensor(index, dtype=torch.int64).to(self.device)
        if length is None:
            host = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
            longest = int(self._lengths_np[host].max()) if len(idx) else 0
            length = padded_length(longest, self.max_len)
        lengths = self.lengths[idx]
        pos = torch.arange(length, device=self.device)
        mask = pos.unsqueeze(0) < lengths.unsqueeze(1)  # (B, P)
        sentinel = self.table.shape[0] - 1
        gidx = torch.where(mask, self.offsets[idx].unsqueeze(1) + pos, sentinel)
        rows = self.table.index_select(0, gidx.reshape(-1)).view(len(idx), length, -1)
        rows = rows.transpose(1, 2)  # (B, C + 4, P)
        c = self.num_features
        return ParticleBatch(
            points=rows[:, c - 2 : c].contiguous(),
            features=rows[:, :c].contiguous(),
            vectors=rows[:, c:].contiguous(),
            mask=mask.unsqueeze(1),
            label=self.labels[idx],
        )


def example_inputs(feature_dim: int, batch_size: int = 2, length: int = 24, seed: int = 0,
                   lengths: list[int] | None = None) -> tuple[torch.Tensor, ...]:
    """Physically valid dummy inputs ``(points, features, vectors, mask)``, channel-first.

    Particles scatter around a common axis with E >= |p|; features are standard normal. Jets have
    ``lengths`` real particles (default: all ``length`` except the last jet, which has half), and
    padded positions are zero / False. Used for tracing, FLOP counts, tests and benchmarks.
    """
    if lengths is None:
        lengths = [length] * (batch_size - 1) + [max(1, length // 2)]
    if max(lengths) > length or min(lengths) < 1:
        raise ValueError(f"jet lengths must be in [1, {length}], got {lengths}")
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    mask = torch.arange(length).view(1, 1, length) < torch.tensor(lengths).view(b, 1, 1)
    pt = torch.rand(b, length, generator=g) * 50 + 0.5
    eta = torch.randn(b, length, generator=g) * 0.3
    phi = torch.randn(b, length, generator=g) * 0.3
    m = torch.rand(b, length, generator=g) * 0.3
    px, py, pz = pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta)
    energy = torch.sqrt(px**2 + py**2 + pz**2 + m**2)
    fm = mask.float()
    vectors = torch.stack((px, py, pz, energy), dim=1) * fm
    points = torch.stack((eta, phi), dim=1) * fm
    features = torch.randn(b, feature_dim, length, generator=g) * fm
    return points, features, vectors, mask


class ParticlesKind(InputKind):
    """Padded particle lists with the feature set ``data.feature_set`` (``kin``, ``kinpid``, ``full``)."""

    name = "particles"
    input_names = ("points", "features", "vectors", "mask")
    dynamic_axes: ClassVar[dict[str, dict[int, str]]] = {n: {0: "batch", 2: "particles"} for n in input_names}

    def build(self, jets: ak.Array, data_cfg: dict[str, Any], model: nn.Module,
              device: torch.device | str = "cpu", source: str = "<memory>") -> JetTensors:
        return JetTensors.from_jets(jets, data_cfg["feature_set"], data_cfg["max_len"], device, source=source)

    def columns(self, data_cfg: dict[str, Any], model: nn.Module) -> list[str]:
        return [*required_fields(data_cfg["feature_set"]), "label"]

    def example_inputs(self, model: nn.Module, batch_size: int = 2, length: int = 24,
                       seed: int = 0, full: bool = False) -> tuple[torch.Tensor, ...]:
        lengths = [length] * batch_size if full else None
        return example_inputs(model.input_dim, batch_size, length, seed, lengths)
