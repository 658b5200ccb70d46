"""The ``tokens`` input kind: detector-level tracks and calorimeter clusters as typed tokens (seed 001).

Seed 001's tokenizer reads tracks (pT, delta eta, delta phi, d0) and clusters (pT, delta eta,
delta phi, E_EM/E, E_Had/E) through one affine map, with a one-hot of the token's kind and zeros
where a kind has no such feature. Each token here is one row of ``TOKEN_FEATURES``:

==============  =======================================  ===========================
name            value                                    tracks / clusters
==============  =======================================  ===========================
``is_track``    1 for a track                            1 / 0
``is_cluster``  1 for a calorimeter cluster              0 / 1
``log_pt``      (ln(pT / GeV) - 1.7) * 0.7 (ParT's)      both
``d0``          arcsinh(d0 / 0.02 mm) (0.02 mm: the      track / 0
                tracker's d0 resolution at high pT)
``emfrac``      E_EM / E                                 0 / cluster
``hadfrac``     E_Had / E                                0 / cluster
``deta``        eta - jet eta                            both
``dphi``        phi - jet phi, wrapped to (-pi, pi]      both
==============  =======================================  ===========================

The batch is the ``particles`` kind's (``JetTensors``, ``ParticleBatch``): ``points`` (B, 2, P) are
(deta, dphi), the token position that the transformer embeds separately and adds, ``features``
(B, 8, P) the rows above, ``vectors`` (B, 4, P) the tokens' (px, py, pz, E), ``mask`` (B, 1, P).
Tokens are sorted by decreasing pT and cut at ``data.max_len``. A model with ``clusters = False``
(the tracks-only variant) gets the tracks alone, with the same eight columns (the cluster ones
then always 0). The store must hold ``part_kind``, ``part_emfrac``, ``part_hadfrac`` and
``part_d0val``: samples generated with ``--detector simple``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import awkward as ak
import numpy as np
import torch
from torch import nn

from jettag.data import store
from jettag.data.features import DEFAULT_MAX_LEN
from jettag.data.kinds.base import InputKind
from jettag.data.kinds.particles import JetTensors, example_inputs

TOKEN_FEATURES = ("is_track", "is_cluster", "log_pt", "d0", "emfrac", "hadfrac", "deta", "dphi")
D0_SCALE_MM = 0.02
TOKEN_COLUMNS = ("part_px", "part_py", "part_pz", "part_energy", "part_d0val",
                 *store.DETECTOR_PARTICLE_FIELDS)


def token_table(jets: ak.Array, clusters: bool = True, max_len: int = DEFAULT_MAX_LEN,
                source: str = "<memory>") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat token features (n, 8) in ``TOKEN_FEATURES`` order, 4-vectors (n, 4) and offsets (n_jets + 1)."""
    missing = [f for f in (*TOKEN_COLUMNS, "jet_eta", "jet_phi") if f not in jets.fields]
    if missing:
        raise store.JetDataError(
            f"{source}: field(s) {missing} missing for the 'tokens' input kind (tracks and clusters); "
            "generate the sample with --detector simple"
        )
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    kind = jets["part_kind"]
    flat_kind = ak.to_numpy(ak.flatten(kind))
    bad = (flat_kind != store.KIND_TRACK) & (flat_kind != store.KIND_CLUSTER)
    if bad.any():
        per_jet = ak.to_numpy(ak.any((kind != store.KIND_TRACK) & (kind != store.KIND_CLUSTER), axis=1))
        raise store.JetDataError(
            f"{source}: field 'part_kind' holds {int(flat_kind[bad][0])} in jet at row "
            f"{int(np.flatnonzero(per_jet)[0])}; expected {store.KIND_TRACK} (track) or "
            f"{store.KIND_CLUSTER} (cluster)"
        )
    parts = jets[list(TOKEN_COLUMNS)]
    if not clusters:
        parts = parts[kind == store.KIND_TRACK]
    parts = parts[:, :max_len]  # stored particles are sorted by decreasing pT
    counts = np.asarray(ak.to_numpy(ak.num(parts["part_px"], axis=1)), dtype=np.int64)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])

    def flat(name: str) -> np.ndarray:
        return np.asarray(ak.to_numpy(ak.flatten(parts[name])), dtype=np.float64)

    px, py, pz, energy = (flat(f) for f in ("part_px", "part_py", "part_pz", "part_energy"))
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.where(pt > 0, pt, 1.0))
    phi = np.arctan2(py, px)
    jet_eta = np.repeat(np.asarray(ak.to_numpy(jets["jet_eta"]), dtype=np.float64), counts)
    jet_phi = np.repeat(np.asarray(ak.to_numpy(jets["jet_phi"]), dtype=np.float64), counts)
    is_track = flat("part_kind") == store.KIND_TRACK
    features = np.stack([
        is_track,
        ~is_track,
        (np.log(np.clip(pt, 1e-8, None)) - 1.7) * 0.7,
        np.where(is_track, np.arcsinh(flat("part_d0val") / D0_SCALE_MM), 0.0),
        np.where(is_track, 0.0, flat("part_emfrac")),
        np.where(is_track, 0.0, flat("part_hadfrac")),
        eta - jet_eta,
        (phi - jet_phi + np.pi) % (2 * np.pi) - np.pi,
    ], axis=1).astype(np.float32)
    if not np.isfinite(features).all():
        first = np.flatnonzero(~np.isfinite(features).all(axis=1))[0]
        row = int(np.searchsorted(offsets, first, "right") - 1)
        raise store.JetDataError(f"{source}: non-finite token feature in jet at row {row}")
    vectors = np.stack([px, py, pz, energy], axis=1).astype(np.float32)
    return features, vectors, offsets


class TokensKind(InputKind):
    """Tracks (+ clusters unless ``model.clusters`` is False) as typed tokens; see the module docstring."""

    name = "tokens"
    input_names = ("points", "features", "vectors", "mask")
    dynamic_axes: ClassVar[dict[str, dict[int, str]]] = {n: {0: "batch", 2: "tokens"} for n in input_names}

    def build(self, jets: ak.Array, data_cfg: dict[str, Any], model: nn.Module,
              device: torch.device | str = "cpu", source: str = "<memory>") -> JetTensors:
        if "label" not in jets.fields:
            raise store.JetDataError(f"{source}: field 'label' is missing (present: {jets.fields})")
        max_len = int(data_cfg.get("max_len", DEFAULT_MAX_LEN))
        features, vectors, offsets = token_table(jets, getattr(model, "clusters", True), max_len, source)
        labels = np.asarray(ak.to_numpy(jets["label"]), dtype=np.int64)
        f, v, o, lab = (torch.from_numpy(a) for a in (features, vectors, offsets, labels))
        out = JetTensors.from_arrays(f, v, o, lab, TOKEN_FEATURES, max_len)
        return out.to(device)

    def columns(self, data_cfg: dict[str, Any], model: nn.Module) -> list[str]:
        return [*TOKEN_COLUMNS, "jet_eta", "jet_phi", "label"]

    def example_inputs(self, model: nn.Module, batch_size: int = 2, length: int = 24,
                       seed: int = 0, full: bool = False) -> tuple[torch.Tensor, ...]:
        lengths = [length] * batch_size if full else None
        n = len(TOKEN_FEATURES)
        points, features, vectors, mask = example_inputs(n, batch_size, length, seed, lengths)
        # a valid one-hot kind: even positions tracks, odd ones clusters (padding stays 0)
        track = (torch.arange(features.shape[2]) % 2 == 0).to(features.dtype) * mask[:, 0].to(features.dtype)
        features[:, 0], features[:, 1] = track, mask[:, 0].to(features.dtype) - track
        features[:, -2:] = points
        return points, features, vectors, mask
