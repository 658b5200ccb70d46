"""Per-particle input features of ParT, MIParT and ParticleNet, exactly as the reference trains them.

A model trained elsewhere (the reference weights, a user's weaver model) only works when its inputs
are reproduced to the letter, so every definition and constant here is the one in
``shared/reference/features.md`` (the weaver data configs of the ParT repository):

- ``part_pt_log = ln pT``, ``part_e_log = ln E``, ``part_logptrel = ln(pT / jet pT)``,
  ``part_logerel = ln(E / jet E)``, ``part_deltaR = hypot(deta, dphi)``, each standardised as
  ``(x - a) * b`` and clipped to [-5, 5];
- ``part_deta = eta - jet eta`` and ``part_dphi = phi - jet phi`` wrapped to [-pi, pi), not
  transformed (they are also ParticleNet's first kNN coordinates, the ``points``);
- particle-id flags from the PDG id (``part_pid``) and ``part_charge`` (see ``pid_flags``);
- ``part_d0 = tanh(d0 / mm)``, ``part_dz = tanh(dz / mm)``, errors clipped to [0, 1].

The jet quantities are the stored ``jet_pt, jet_eta, jet_phi, jet_energy`` of the canonical store
(the constituent sums unless a reader kept a file's own jet). Everything is computed on the flat
particle arrays (one numpy operation per feature over all particles of all jets), never per jet.
"""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
import numpy as np

from jettag.data.store import MOMENTUM_FIELDS, JetDataError
from jettag.physics import kinematics as kin

DEFAULT_MAX_LEN = 128

_KIN5 = ["part_pt_log", "part_e_log", "part_logptrel", "part_logerel", "part_deltaR"]
_PID_FLAGS = [
    "part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron", "part_isMuon",
]
_POINTS = ["part_deta", "part_dphi"]

FEATURE_SETS: dict[str, list[str]] = {
    "kin": [*_KIN5, *_POINTS],
    "kinpid": [*_KIN5, "part_charge", *_PID_FLAGS, *_POINTS],
    "full": [*_KIN5, "part_charge", *_PID_FLAGS, "part_d0", "part_d0err", "part_dz", "part_dzerr", *_POINTS],
}

# (a, b, clip_min, clip_max) of the transform clip((x - a) * b, clip_min, clip_max); features not
# listed here enter the network untransformed.
STANDARDIZATION: dict[str, tuple[float, float, float, float]] = {
    "part_pt_log": (1.7, 0.7, -5.0, 5.0),
    "part_e_log": (2.0, 0.7, -5.0, 5.0),
    "part_logptrel": (-4.7, 0.7, -5.0, 5.0),
    "part_logerel": (-4.7, 0.7, -5.0, 5.0),
    "part_deltaR": (0.2, 4.0, -5.0, 5.0),
    "part_d0err": (0.0, 1.0, 0.0, 1.0),
    "part_dzerr": (0.0, 1.0, 0.0, 1.0),
}

JET_INPUT_FIELDS = ("jet_pt", "jet_eta", "jet_phi", "jet_energy")
IMPACT_FIELDS = ("part_d0val", "part_d0err", "part_dzval", "part_dzerr")


def required_fields(feature_set: str) -> list[str]:
    """The canonical-store fields a feature set reads (so a reader can load only those columns)."""
    names = feature_names(feature_set)
    fields = [*MOMENTUM_FIELDS, *JET_INPUT_FIELDS]
    if "part_charge" in names:
        fields += ["part_pid", "part_charge"]
    if "part_d0" in names:
        fields += list(IMPACT_FIELDS)
    return fields


def feature_names(feature_set: str) -> list[str]:
    """The ordered feature names of a set; an unknown name is an error listing the known ones."""
    try:
        return list(FEATURE_SETS[feature_set])
    except KeyError:
        raise ValueError(f"unknown feature set {feature_set!r}; known: {sorted(FEATURE_SETS)}") from None


def standardize(name: str, values: np.ndarray) -> np.ndarray:
    """Apply the reference transform clip((x - a) * b) of feature ``name`` (identity if it has none)."""
    if name not in STANDARDIZATION:
        return values
    a, b, lo, hi = STANDARDIZATION[name]
    return np.clip((values - a) * b, lo, hi)


def pid_flags(pid: np.ndarray, charge: np.ndarray) -> dict[str, np.ndarray]:
    """The five particle-id flags (0/1) from the PDG id and the charge.

    The rule is the particle-flow one that JetClass's Delphes card and ParT's quark/gluon conversion
    both follow: electron = |pid| 11, muon = |pid| 13, photon = pid 22; a *charged hadron* is any
    charged particle that is not an electron or muon, a *neutral hadron* any neutral particle that is
    not a photon. Deciding hadron-ness from the charge rather than from a list of hadron ids keeps a
    particle the list forgot (a Sigma, an Omega, a deuteron) in the right class, exactly as particle
    flow does. Exactly one flag is 1 per particle.
    """
    apid = np.abs(pid)
    is_e = apid == 11
    is_mu = apid == 13
    is_photon = pid == 22
    charged = charge != 0
    return {
        "part_isChargedHadron": charged & ~(is_e | is_mu),
        "part_isNeutralHadron": ~charged & ~is_photon,
        "part_isPhoton": is_photon,
        "part_isElectron": is_e,
        "part_isMuon": is_mu,
    }


def _flat(jets: ak.Array, name: str) -> np.ndarray:
    return np.asarray(ak.to_numpy(ak.flatten(jets[name], axis=1)))


def _jet_of_flat_index(offsets: np.ndarray, flat_index: int) -> int:
    return int(np.searchsorted(offsets, flat_index, side="right") - 1)


def _check_fields(jets: ak.Array, fields: Sequence[str], feature_set: str, source: str) -> None:
    missing = [f for f in fields if f not in jets.fields]
    if missing:
        raise JetDataError(
            f"{source}: feature set {feature_set!r} needs field(s) {missing}, which the jets do not have "
            f"(present: {jets.fields})"
        )


def particle_features(
    jets: ak.Array,
    feature_set: str,
    max_len: int = DEFAULT_MAX_LEN,
    deta_sign_flip: bool = False,
    source: str = "<memory>",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat per-particle features of canonical jets, keeping the ``max_len`` leading particles per jet.

    Args:
        jets: canonical jets (``jettag.data.store``), particles sorted by decreasing pT.
        feature_set: ``kin``, ``kinpid`` or ``full`` (``FEATURE_SETS``).
        max_len: particles kept per jet; the store is pT-ordered so these are the leading ones.
        deta_sign_flip: multiply ``part_deta`` by sign(jet eta) (+1 for jet eta = 0). ParT's
            TopLandscape parquet files were converted that way, so the reference TopLandscape
            weights need it; JetClass, the quark/gluon set and weaver's own configs use plain
            ``eta - jet eta``, hence the default off.
        source: the file the jets came from, named in error messages.

    Returns:
        ``features`` float32 (n_particles, C) in ``FEATURE_SETS[feature_set]`` order, ``vectors``
        float32 (n_particles, 4) = (px, py, pz, E), ``offsets`` int64 (n_jets + 1,): jet k owns rows
        ``offsets[k]:offsets[k + 1]``.
    """
    table, offsets = particle_table(jets, feature_set, max_len, deta_sign_flip, source)
    c = len(FEATURE_SETS[feature_set])
    return np.ascontiguousarray(table[:, :c]), np.ascontiguousarray(table[:, c:]), offsets


def particle_table(
    jets: ak.Array,
    feature_set: str,
    max_len: int = DEFAULT_MAX_LEN,
    deta_sign_flip: bool = False,
    source: str = "<memory>",
    extra_rows: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Features and 4-vectors side by side: float32 (n_particles + extra_rows, C + 4), and offsets.

    This is what the batch loader gathers from: one row per particle (C features, then px, py, pz,
    E), written column by column straight into the final array, with ``extra_rows`` zero rows at the
    end (the loader points padded positions there). Arithmetic is float32 like weaver's own
    preprocessing (the stored momenta are float32), which halves the memory traffic of float64.
    See ``particle_features`` for the arguments.
    """
    names = feature_names(feature_set)
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    _check_fields(jets, required_fields(feature_set), feature_set, source)

    counts = np.asarray(ak.to_numpy(ak.num(jets["part_px"], axis=1)), dtype=np.int64)
    kept = np.minimum(counts, max_len)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    keep = None
    if counts.size and counts.max() > max_len:
        # Position of every stored particle inside its jet: particles beyond max_len are dropped.
        starts = np.cumsum(counts) - counts
        keep = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts, counts) < max_len

    def flat(name: str, dtype: type = np.float32) -> np.ndarray:
        values = _flat(jets, name)
        return (values if keep is None else values[keep]).astype(dtype, copy=False)

    def per_particle(name: str) -> np.ndarray:
        return np.repeat(np.asarray(ak.to_numpy(jets[name]), dtype=np.float32), kept)

    n = int(offsets[-1])
    c = len(names)
    table = np.empty((n + extra_rows, c + 4), dtype=np.float32)
    table[n:] = 0
    px, py, pz, energy = (flat(f) for f in MOMENTUM_FIELDS)
    for k, values in enumerate((px, py, pz, energy)):
        table[:n, c + k] = values
    col = {name: k for k, name in enumerate(names)}

    def put(name: str, values: np.ndarray) -> None:
        table[:n, col[name]] = standardize(name, values)

    pt = kin.pt(px, py)
    jet_eta = per_particle("jet_eta")
    deta = kin.eta(px, py, pz) - jet_eta
    if deta_sign_flip:
        deta *= np.where(jet_eta < 0, np.float32(-1), np.float32(1))
    del jet_eta
    dphi = kin.delta_phi(kin.phi(px, py), per_particle("jet_phi")).astype(np.float32, copy=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        put("part_pt_log", np.log(pt))
        put("part_e_log", np.log(energy))
        put("part_logptrel", np.log(pt / per_particle("jet_pt")))
        put("part_logerel", np.log(energy / per_particle("jet_energy")))
    put("part_deltaR", np.hypot(deta, dphi))
    put("part_deta", deta)
    put("part_dphi", dphi)
    del px, py, pz, energy, pt, deta, dphi
    if "part_charge" in col:
        pid = flat("part_pid", np.int64)
        charge = flat("part_charge")
        unknown = np.flatnonzero(pid == 0)
        if unknown.size:
            jet = _jet_of_flat_index(offsets, int(unknown[0]))
            raise JetDataError(
                f"{source}: field 'part_pid' is 0 (unknown particle id) for {unknown.size} particle(s), "
                f"first in jet at row {jet}; feature set {feature_set!r} needs particle ids "
                "(use 'kin' for this dataset)"
            )
        put("part_charge", charge)
        for name, flag in pid_flags(pid, charge).items():
            put(name, flag)
    if "part_d0" in col:
        put("part_d0", np.tanh(flat("part_d0val")))
        put("part_d0err", flat("part_d0err"))
        put("part_dz", np.tanh(flat("part_dzval")))
        put("part_dzerr", flat("part_dzerr"))

    finite = np.isfinite(table[:n, :c])
    if not finite.all():
        row, k = np.argwhere(~finite)[0]
        raise JetDataError(
            f"{source}: feature {names[k]!r} is not finite for {int((~finite).any(axis=1).sum())} "
            f"particle(s), first in jet at row {_jet_of_flat_index(offsets, int(row))}; check that "
            "jet's momenta/energies"
        )
    return table, offsets


def pad_flat(values: np.ndarray, offsets: np.ndarray, length: int) -> np.ndarray:
    """Scatter flat per-particle rows (n_particles, C) into zero-padded channel-first (n_jets, C, length)."""
    counts = np.diff(offsets)
    if counts.size and counts.max() > length:
        raise ValueError(f"a jet has {int(counts.max())} particles, more than the padded length {length}")
    out = np.zeros((len(counts), values.shape[1], length), dtype=values.dtype)
    jet = np.repeat(np.arange(len(counts)), counts)
    pos = np.arange(len(values)) - np.repeat(offsets[:-1] - offsets[0], counts)
    out[jet, :, pos] = values
    return out


def build_inputs(
    jets: ak.Array,
    feature_set: str,
    max_len: int = DEFAULT_MAX_LEN,
    deta_sign_flip: bool = False,
    source: str = "<memory>",
) -> dict[str, np.ndarray]:
    """Padded network inputs in weaver's channel-first layout, P = ``max_len``.

    Returns ``points`` (N, 2, P) = (deta, dphi), ``features`` (N, C, P), ``vectors`` (N, 4, P),
    ``mask`` (N, 1, P) bool and ``label`` (N,) int64; entries beyond a jet's particles are 0.
    (weaver pads by repeating the jet's particles; the mask hides either choice, and zeros make a
    leak of padding into a result easy to spot.)
    """
    if "label" not in jets.fields:
        raise JetDataError(f"{source}: field 'label' is missing (present: {jets.fields})")
    features, vectors, offsets = particle_features(jets, feature_set, max_len, deta_sign_flip, source)
    padded = pad_flat(features, offsets, max_len)
    ones = np.ones((len(features), 1), dtype=bool)
    return {
        "points": np.ascontiguousarray(padded[:, -2:]),
        "features": padded,
        "vectors": pad_flat(vectors, offsets, max_len),
        "mask": pad_flat(ones, offsets, max_len),
        "label": np.asarray(ak.to_numpy(jets["label"]), dtype=np.int64),
    }
