"""The contract between data and models: an input kind, its batch type and its dataset type.

A model declares the kind of batch it consumes (``JetModel.input_kind``, a name registered here).
Everything downstream of the canonical store goes through the kind, never through a model's
particular inputs:

- ``InputKind.build(jets, data_cfg, model, device, source)`` turns canonical jets into a dataset
  held as tensors (a ``KindDataset``);
- ``KindDataset.batch(index)`` assembles a ``TensorBatch`` of those jets; ``sizes()`` gives the
  per-jet cost measure (e.g. the number of particles) that ``BatchLoader`` buckets by;
  ``concatenate`` and ``subset`` let ``StreamingLoader`` assemble shuffle buffers from parts, and
  ``InputKind.columns`` names the store columns a stream must read;
- ``TensorBatch.inputs()`` is the tuple passed as ``model(*batch.inputs())``; ``input_names`` and
  ``dynamic_axes`` name those inputs for ONNX; ``InputKind.example_inputs`` makes valid dummy inputs
  for tracing, FLOP counting and tests.

The trainer, evaluation, prediction, ONNX export, FLOP counting and DDP use only these methods, so
a model of a new kind needs its model file, its kind (batch + dataset + builder) and a registry
entry, and nothing else changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol, TypeVar

import awkward as ak
import numpy as np
import torch
from torch import nn

B = TypeVar("B", bound="TensorBatch")


@dataclass
class TensorBatch:
    """A batch: model inputs (every dataclass field but ``label``, in field order) plus ``label`` (B,).

    Subclasses are dataclasses of tensors; ``to``, ``pin_memory`` and ``inputs`` work on any of them.
    """

    label: torch.Tensor

    def inputs(self) -> tuple[torch.Tensor, ...]:
        """The tensors passed to ``model(*inputs)``, in the model's argument order."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "label")

    def to(self: B, device: torch.device | str, non_blocking: bool = False) -> B:
        """The same batch on ``device`` (``non_blocking`` overlaps the copy when the source is pinned)."""
        return type(self)(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                             for f in fields(self)})

    def pin_memory(self: B) -> B:
        """Page-locked copy, so that ``.to("cuda", non_blocking=True)`` is asynchronous."""
        return type(self)(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def __len__(self) -> int:
        return int(self.label.shape[0])


class KindDataset(Protocol):
    """A dataset of one kind held as tensors (on the CPU, or resident on the GPU)."""

    labels: torch.Tensor

    def __len__(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def sizes(self) -> np.ndarray:
        """Per-jet size on the CPU (int64), the cost measure that batches are bucketed by."""
        ...

    def batch(self, index: np.ndarray) -> TensorBatch: ...

    def to(self, device: torch.device | str) -> KindDataset: ...

    # Streaming (``StreamingLoader``) also needs these two; in-memory training does not.
    @classmethod
    def concatenate(cls, parts: Sequence[KindDataset]) -> KindDataset:
        """One dataset holding the jets of ``parts`` in order (all built with the same settings)."""
        ...

    def subset(self, index: np.ndarray) -> KindDataset:
        """A new dataset (on the CPU) holding only jets ``index``, in that order."""
        ...


class InputKind(ABC):
    """One kind of model input: how canonical jets become batches, and how its inputs are named."""

    name: ClassVar[str]
    #: names of the model's forward arguments, in order (ONNX input names)
    input_names: ClassVar[tuple[str, ...]]
    #: ONNX dynamic axes per input name (the batch axis 0, plus any length axes)
    dynamic_axes: ClassVar[dict[str, dict[int, str]]]

    @abstractmethod
    def build(self, jets: ak.Array, data_cfg: dict[str, Any], model: nn.Module,
              device: torch.device | str = "cpu", source: str = "<memory>") -> KindDataset:
        """The dataset of canonical ``jets`` (with a ``label`` field) for ``model``, per ``data_cfg``."""

    def columns(self, data_cfg: dict[str, Any], model: nn.Module) -> list[str] | None:
        """The store columns ``build`` reads (streaming reads only these); None: all of them."""
        return None

    @abstractmethod
    def example_inputs(self, model: nn.Module, batch_size: int = 2, length: int = 24,
                       seed: int = 0, full: bool = False) -> tuple[torch.Tensor, ...]:
        """Valid dummy inputs for ``model`` (``full``: no padding, for FLOP counts at ``length``)."""
