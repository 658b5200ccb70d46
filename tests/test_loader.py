"""Batching: coverage, label attachment, padding lengths, determinism, DDP shards, bucketing waste,
and the streaming loader against the in-memory one.

Jet identity is checked through content, not through the loader's own indices: every batch row is
matched back to the jet whose (independently built, ``build_inputs``) features it carries.
"""

from __future__ import annotations

from collections import Counter

import awkward as ak
import numpy as np
import pytest
import torch
from jetfactory import random_jets

from jettag.data.features import build_inputs
from jettag.data.kinds.particles import JetTensors, ParticleBatch
from jettag.data.loader import BatchLoader, StreamingLoader
from jettag.data.store import JetDataError, write_store

N_JETS = 1500


@pytest.fixture(scope="module")
def jets():
    return random_jets(N_JETS, seed=5, min_len=1, max_len=150, n_classes=5)


@pytest.fixture(scope="module")
def data(jets) -> JetTensors:
    return JetTensors.from_jets(jets, "kin")


@pytest.fixture(scope="module")
def reference(jets) -> dict[str, np.ndarray]:
    return build_inputs(jets, "kin", max_len=128)


@pytest.fixture(scope="module")
def key_to_jet(reference) -> dict[tuple, int]:
    """Jet identity from its leading particle's (px, py, pz, E): unique for random jets."""
    lead = reference["vectors"][:, :, 0]
    keys = {tuple(v.tolist()): k for k, v in enumerate(lead)}
    assert len(keys) == N_JETS
    return keys


def identify(batch: ParticleBatch, key_to_jet: dict[tuple, int]) -> list[int]:
    return [key_to_jet[tuple(v.tolist())] for v in batch.vectors[:, :, 0].numpy()]


def realistic_lengths(n: int, seed: int) -> np.ndarray:
    """Multiplicities like TopLandscape/JetClass: QCD around 40, top around 70, tails past 128."""
    rng = np.random.default_rng(seed)
    top = rng.random(n) < 0.5
    mean = np.where(top, 70.0, 40.0)
    lengths = rng.gamma(shape=12.0, scale=mean / 12.0)
    return np.clip(np.rint(lengths), 3, 200).astype(np.int64)


def synthetic_tensors(lengths: np.ndarray, max_len: int = 128) -> JetTensors:
    """A JetTensors with given multiplicities (truncated to max_len) and 2 dummy feature columns."""
    kept = np.minimum(lengths, max_len)
    offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(kept)]))
    total = int(kept.sum())
    return JetTensors.from_arrays(torch.zeros(total, 2), torch.zeros(total, 4), offsets,
                                  torch.zeros(len(kept)), ["part_deta", "part_dphi"], max_len)


def test_every_jet_once_labels_attached_and_padding(data, reference, key_to_jet):
    loader = BatchLoader(data, batch_size=128, shuffle=True, seed=1)
    seen: list[int] = []
    n_batches = 0
    for batch in loader:
        n_batches += 1
        ids = identify(batch, key_to_jet)
        seen += ids
        lengths = batch.mask[:, 0].sum(1).numpy()
        p = batch.features.shape[-1]
        assert p % 8 == 0 and p >= lengths.max() and p - lengths.max() < 8 and p <= 128
        assert batch.points.shape == (len(ids), 2, p) and batch.vectors.shape == (len(ids), 4, p)
        assert batch.mask.dtype == torch.bool
        np.testing.assert_array_equal(batch.label.numpy(), reference["label"][ids])
        np.testing.assert_array_equal(batch.features.numpy(), reference["features"][ids, :, :p])
        np.testing.assert_array_equal(batch.vectors.numpy(), reference["vectors"][ids, :, :p])
        np.testing.assert_array_equal(batch.mask.numpy(), reference["mask"][ids, :, :p])
        np.testing.assert_array_equal(batch.points.numpy(), reference["points"][ids, :, :p])
        assert not reference["mask"][ids, :, p:].any()  # the cut-off part of P was all padding
    assert n_batches == len(loader) == -(-N_JETS // 128)
    assert sorted(seen) == list(range(N_JETS))


def test_deterministic_per_seed_and_epoch(data):
    def order(seed: int, epoch: int) -> list[int]:
        loader = BatchLoader(data, batch_size=100, seed=seed)
        loader.set_epoch(epoch)
        return np.concatenate(loader.batch_indices()).tolist()

    assert order(3, 0) == order(3, 0)
    assert order(3, 1) == order(3, 1)
    assert order(3, 0) != order(3, 1)
    assert order(3, 0) != order(4, 0)
    assert sorted(order(3, 1)) == list(range(N_JETS))


def test_no_shuffle_keeps_order(data):
    loader = BatchLoader(data, batch_size=100, shuffle=False, bucket=False)
    np.testing.assert_array_equal(np.concatenate(loader.batch_indices()), np.arange(N_JETS))


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_disjoint_cover_and_equal_counts(data, world_size, drop_last):
    per_rank = []
    for rank in range(world_size):
        loader = BatchLoader(data, batch_size=64, seed=9, rank=rank, world_size=world_size,
                             drop_last=drop_last)
        loader.set_epoch(2)
        batches = loader.batch_indices()
        assert len(batches) == len(loader)
        assert all(0 < len(b) <= 64 for b in batches)
        if drop_last:
            assert all(len(b) == 64 for b in batches)
        per_rank.append(np.concatenate(batches))
    assert len({len(BatchLoader(data, 64, rank=r, world_size=world_size, drop_last=drop_last))
                for r in range(world_size)}) == 1
    counts = Counter(np.concatenate(per_rank).tolist())
    assert max(counts.values()) == 1, "a jet was given to two ranks"
    if drop_last:
        assert len(counts) > N_JETS - world_size * 64 - world_size
    else:
        assert len(counts) == N_JETS


def test_uneven_split_still_gives_equal_batch_counts():
    data = synthetic_tensors(np.full(1025, 10))  # 1025 = 2 * 512 + 1 jets on 2 ranks of batch 256
    sizes = [[len(b) for b in BatchLoader(data, 256, rank=r, world_size=2).batch_indices()] for r in range(2)]
    assert len(sizes[0]) == len(sizes[1]) == 3 and sum(sizes[0]) + sum(sizes[1]) == 1025


def test_bucketing_waste_on_realistic_multiplicities():
    lengths = realistic_lengths(60_000, seed=0)
    assert 50 < lengths.mean() < 60 and lengths.max() > 128
    data = synthetic_tensors(lengths)
    kept = np.minimum(lengths, 128).astype(np.float64)

    def waste_independent(loader: BatchLoader) -> float:
        padded = real = 0.0
        for idx in loader.batch_indices():
            p = min(128, int(np.ceil(kept[idx].max() / 8) * 8))
            padded += len(idx) * p * p
            real += (kept[idx] ** 2).sum()
        return padded / real

    bucketed = BatchLoader(data, batch_size=512, seed=0)
    plain = BatchLoader(data, batch_size=512, seed=0, bucket=False)
    w_b, w_p = waste_independent(bucketed), waste_independent(plain)
    assert w_b < 1.3, f"bucketed padded/real pairs = {w_b:.3f}"
    assert w_p > 2.5  # the unbucketed loader pads nearly every batch to 128
    assert bucketed.padding_waste() == pytest.approx(w_b)


def test_batch_to_and_len(data):
    batch = data.batch(np.array([3, 1, 2]))
    assert len(batch) == 3
    moved = batch.to("cpu", non_blocking=True)
    assert torch.equal(moved.features, batch.features) and moved.mask.dtype == torch.bool
    assert batch.features.is_contiguous() and batch.points.is_contiguous()


def test_from_store_and_streaming_match_in_memory(tmp_path_factory, jets, data, key_to_jet):
    folder = tmp_path_factory.mktemp("stream")
    half = N_JETS // 2
    write_store(folder / "a.parquet", jets[:half], ["c0", "c1", "c2", "c3", "c4"], "test", row_group_size=200)
    write_store(folder / "b.parquet", jets[half:], ["c0", "c1", "c2", "c3", "c4"], "test", row_group_size=300)

    stored = JetTensors.from_store(folder, "kin")
    assert torch.equal(stored.table, data.table) and torch.equal(stored.labels, data.labels)

    stream = StreamingLoader(folder, "kin", batch_size=128, buffer_size=500, seed=4)
    seen: list[int] = []
    for batch in stream:
        ids = identify(batch, key_to_jet)
        seen += ids
        np.testing.assert_array_equal(batch.label.numpy(), data.labels.numpy()[ids])
        assert batch.features.shape[-1] % 8 == 0
    assert sorted(seen) == list(range(N_JETS))
    assert len(stream) == -(-N_JETS // 128)

    # two ranks: disjoint, the same number of batches each
    shards = []
    for rank in range(2):
        s = StreamingLoader(folder, "kin", batch_size=128, buffer_size=500, seed=4, rank=rank, world_size=2,
                            prefetch=False)
        s.set_epoch(1)
        batches = [identify(b, key_to_jet) for b in s]
        assert len(batches) == len(s)
        shards.append([k for b in batches for k in b])
    assert not set(shards[0]) & set(shards[1])
    assert len(shards[0]) + len(shards[1]) > N_JETS - 2 * 128


def test_streaming_error_names_file_and_row(tmp_path):
    jets = random_jets(40, seed=8, min_len=2, max_len=6)
    e = ak.to_list(jets["part_energy"])
    e[33][1] = -1.0
    jets = ak.with_field(jets, ak.values_astype(ak.Array(e), np.float32), "part_energy")
    write_store(tmp_path / "bad.parquet", jets, ["a", "b"], "test", row_group_size=16)
    with pytest.raises(JetDataError, match=r"bad\.parquet.*part_energy.*row 33"):
        list(StreamingLoader(tmp_path, "kin", batch_size=8, shuffle=False))
    with pytest.raises(JetDataError, match=r"bad\.parquet.*part_energy.*row 33"):
        JetTensors.from_store(tmp_path, "kin")


def test_other_feature_sets_batch():
    jets = random_jets(30, seed=9, min_len=2, max_len=30, with_impact=True)
    ref = build_inputs(jets, "full", max_len=32)
    batch = JetTensors.from_jets(jets, "full", max_len=32).batch(np.arange(30))
    assert batch.features.shape == (30, 17, 32)
    np.testing.assert_array_equal(batch.features.numpy(), ref["features"])
    np.testing.assert_array_equal(batch.points.numpy(), ref["points"])


def test_padded_length_rounds_up_and_caps():
    lengths = np.array([1, 8, 9, 97, 99])
    data = synthetic_tensors(lengths, max_len=100)
    got = [data.batch(np.array([k])).features.shape[-1] for k in range(len(lengths))]
    assert got == [8, 8, 16, 100, 100]  # 97 -> 104 would exceed max_len = 100
    both = data.batch(np.array([0, 2]))
    assert both.mask.shape == (2, 1, 16) and both.mask[0, 0].sum() == 1 and both.mask[1, 0].sum() == 9
