"""The ``event`` and ``event_subjets`` input kinds: two-jet events of seed 002 (``jettag generate hh4b``).

``build`` groups the store's rows into events (``store.group_events``: an odd number of rows, or rows
that do not form whole events, is its clear error), preprocesses each fat jet into its frame
(``jettag.physics.jet_frame``: shift, rotate by theta, flip, pT order, up to ``data.max_len``
(at most 50) constituents) and makes the three kinematics tokens (jet 1, jet 2, their sum).
Units: momenta in the tokens (m, pT, E) in TeV, per-particle pT in units of 100 GeV, ln pT of pT in
GeV, angles in rad. A batch is one gather of padded tensors:

- ``event``: ``particles`` (B, 2, P, 4) (eta', phi', pT, ln pT), ``mask`` (B, 2, P) bool,
  ``tokens`` (B, 3, 6) (m, eta, phi, pT, E, theta);
- ``event_subjets``: ``subjets`` (B, 2, S, 5) exclusive-kT subjets (eta', phi', pT, ln pT, m; pT and
  m in units of 100 GeV), ``mask`` (B, 2, S), ``tokens`` as above.

``sizes()`` is the number of constituents (subjets) of the event. Optional double-b-tag selection
(``data.event_btag``, e.g. 0.8): a jet with at least one generator b hadron within R
(``jet_nbhadrons``) is tagged with that probability, a jet without one never; events keep only
when both jets are tagged. The draws are a hash of (``data.split_seed``, ``event_index``, jet), so a
split sees the same selection whichever run builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import awkward as ak
import numpy as np
import torch
from torch import nn

from jettag.data import store
from jettag.data.kinds.base import InputKind, TensorBatch
from jettag.errors import UsageError
from jettag.physics.jet_frame import MAX_PARTICLES, event_tokens, jet_frame, kt_subjets, particle_kinematics

TEV = 1000.0
PARTICLE_PT_UNIT = 100.0
MAX_SUBJETS = 10


@dataclass
class EventBatch(TensorBatch):
    """``particles`` (B, 2, P, 4), ``mask`` (B, 2, P) bool, ``tokens`` (B, 3, 6), ``label`` (B,)."""

    label: torch.Tensor
    particles: torch.Tensor
    mask: torch.Tensor
    tokens: torch.Tensor


@dataclass
class SubjetBatch(TensorBatch):
    """``subjets`` (B, 2, S, 5), ``mask`` (B, 2, S) bool, ``tokens`` (B, 3, 6), ``label`` (B,)."""

    label: torch.Tensor
    subjets: torch.Tensor
    mask: torch.Tensor
    tokens: torch.Tensor


class EventTensors:
    """Padded per-event tensors (held whole: at most 2 x 50 entries per event) and labels."""

    def __init__(
        self,
        batch_type: type[TensorBatch],
        items: torch.Tensor,
        mask: torch.Tensor,
        tokens: torch.Tensor,
        labels: torch.Tensor,
    ) -> None:
        self.batch_type, self.items, self.mask, self.tokens = batch_type, items, mask, tokens
        self.labels = labels.to(torch.int64)
        self._sizes = mask.reshape(len(labels), -1).sum(1).cpu().numpy().astype(np.int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        return self.items.device

    def sizes(self) -> np.ndarray:
        return self._sizes

    def to(self, device: torch.device | str) -> EventTensors:
        device = torch.device(device)
        if device == self.device:
            return self
        return EventTensors(
            self.batch_type,
            self.items.to(device),
            self.mask.to(device),
            self.tokens.to(device),
            self.labels.to(device),
        )

    def batch(self, index: np.ndarray | torch.Tensor) -> TensorBatch:
        idx = torch.as_tensor(
            np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index), dtype=torch.int64
        ).to(self.device)
        names = [f.name for f in fields(self.batch_type)]
        values = [self.labels[idx], self.items[idx], self.mask[idx], self.tokens[idx]]
        return self.batch_type(**dict(zip(names, values)))

    def subset(self, index: np.ndarray) -> EventTensors:
        idx = torch.as_tensor(np.asarray(index), dtype=torch.int64)
        cpu = self.to("cpu")
        return EventTensors(self.batch_type, cpu.items[idx], cpu.mask[idx], cpu.tokens[idx], cpu.labels[idx])

    @classmethod
    def concatenate(cls, parts: Sequence[EventTensors]) -> EventTensors:
        cpu = [p.to("cpu") for p in parts]
        return cls(
            cpu[0].batch_type,
            *(torch.cat([getattr(p, a) for p in cpu]) for a in ("items", "mask", "tokens", "labels")),
        )


def double_b_tag(nbhadrons: np.ndarray, event_index: np.ndarray, efficiency: float, seed: int) -> np.ndarray:
    """Per event (rows of ``nbhadrons`` (E, 2)), whether both jets are b-tagged: a jet holding a b
    hadron is tagged with probability ``efficiency`` (a hash of (seed, event_index, jet)), else not."""
    key = np.asarray(event_index, dtype=np.uint64)[:, None] * np.uint64(2) + np.arange(2, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = (key ^ np.uint64((int(seed) & 0xFFFFFFFF) * 0x9E3779B97F4A7C15 % 2**64)) * np.uint64(
            0xBF58476D1CE4E5B9
        )
        h ^= h >> np.uint64(31)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(29)
    u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return ((np.asarray(nbhadrons) > 0) & (u < efficiency)).all(axis=1)


def event_arrays(
    jets: ak.Array, data_cfg: dict[str, Any], subjets: bool, source: str = "<memory>"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(items (E, 2, L, C), mask (E, 2, L), tokens (E, 3, 6), labels (E,)) of an event sample."""
    jets, _ = store.validate_jets(jets, source=source)
    events = store.group_events(jets, source)
    n_per = len(events[0]) if len(events) else 2
    if n_per != 2:
        raise store.JetDataError(f"{source}: events of {n_per} jets; the event kinds need 2 per event")
    eff = data_cfg.get("event_btag")
    if eff is not None and not (isinstance(eff, (int, float)) and 0 < float(eff) <= 1):
        raise UsageError(f"data.event_btag={eff!r}: a per-jet b-tag efficiency in (0, 1], or null (no "
                         "selection)")
    if eff is not None:
        if "jet_nbhadrons" not in jets.fields:
            raise store.JetDataError(
                f"{source}: data.event_btag needs field 'jet_nbhadrons' (generator b "
                "hadrons per jet, stored by jettag generate hh4b since generator v4)"
            )
        keep = double_b_tag(
            ak.to_numpy(jets.jet_nbhadrons).reshape(-1, 2),
            ak.to_numpy(jets.event_index).reshape(-1, 2)[:, 0],
            float(eff),
            int(data_cfg.get("split_seed", 0)),
        )
        jets = jets[np.repeat(keep, 2)]
        if len(jets) == 0:
            raise store.JetDataError(f"{source}: no event passes the double b-tag (data.event_btag={eff})")
    max_len = min(int(data_cfg.get("max_len", MAX_PARTICLES)), MAX_PARTICLES)
    eta, phi, pt = particle_kinematics(jets)
    jet_phi = ak.to_numpy(jets.jet_phi).astype(np.float64)
    frame = jet_frame(eta, phi, pt, jets.part_energy, jet_phi, max_particles=max_len)
    if subjets:
        items, mask = kt_subjets(
            jets.part_px,
            jets.part_py,
            jets.part_pz,
            jets.part_energy,
            jet_phi,
            frame,
            max_subjets=MAX_SUBJETS,
        )
        items[..., [2, 4]] /= PARTICLE_PT_UNIT
    else:
        items, mask = frame.features.copy(), frame.mask
        items[..., 2] /= PARTICLE_PT_UNIT
    n = len(jets) // 2

    def per_event(name: str) -> np.ndarray:
        return ak.to_numpy(jets[name]).astype(np.float64).reshape(n, 2)

    tokens = event_tokens(
        per_event("jet_pt"),
        per_event("jet_eta"),
        per_event("jet_phi"),
        per_event("jet_mass"),
        frame.theta.reshape(n, 2),
    )
    tokens[..., [0, 3, 4]] /= TEV
    labels = ak.to_numpy(jets.label).reshape(n, 2)[:, 0].astype(np.int64)
    return (items.reshape(n, 2, *items.shape[1:]), mask.reshape(n, 2, -1), tokens.astype(np.float32), labels)


class EventKind(InputKind):
    """Two-jet events: each jet's preprocessed constituents and the three kinematics tokens."""

    name = "event"
    input_names = ("particles", "mask", "tokens")
    dynamic_axes: ClassVar[dict[str, dict[int, str]]] = {n: {0: "batch"} for n in input_names}
    batch_type: ClassVar[type[TensorBatch]] = EventBatch
    subjets: ClassVar[bool] = False
    channels: ClassVar[int] = 4

    def build(
        self,
        jets: ak.Array,
        data_cfg: dict[str, Any],
        model: nn.Module,
        device: torch.device | str = "cpu",
        source: str = "<memory>",
    ) -> EventTensors:
        items, mask, tokens, labels = event_arrays(jets, data_cfg, self.subjets, source)
        return EventTensors(
            self.batch_type,
            torch.from_numpy(np.ascontiguousarray(items)),
            torch.from_numpy(mask),
            torch.from_numpy(tokens),
            torch.from_numpy(labels),
        ).to(device)

    def example_inputs(
        self, model: nn.Module, batch_size: int = 2, length: int = 24, seed: int = 0, full: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """Events of two jets of ``length`` entries (capped at the kind's maximum); unless ``full``,
        the last event's second jet holds half of them."""
        g = torch.Generator().manual_seed(seed)
        length = min(length, MAX_SUBJETS if self.subjets else MAX_PARTICLES)
        items = torch.randn(batch_size, 2, length, self.channels, generator=g)
        mask = torch.ones(batch_size, 2, length, dtype=torch.bool)
        if not full:
            mask[-1, 1, max(1, length // 2) :] = False
        items = items * mask.unsqueeze(-1)
        tokens = torch.randn(batch_size, 3, 6, generator=g)
        return items, mask, tokens


class EventSubjetsKind(EventKind):
    """Two-jet events: each jet's exclusive-kT subjets and the three kinematics tokens."""

    name = "event_subjets"
    input_names = ("subjets", "mask", "tokens")
    dynamic_axes: ClassVar[dict[str, dict[int, str]]] = {n: {0: "batch"} for n in input_names}
    batch_type: ClassVar[type[TensorBatch]] = SubjetBatch
    subjets: ClassVar[bool] = True
    channels: ClassVar[int] = 5
