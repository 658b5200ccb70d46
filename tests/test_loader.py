"""Batching: coverage, label attachment, padding lengths, determinism, DDP shards, bucketing waste,
and the streaming loader against the in-memory one.

Jet identity is checked through content, not through the loader's own indices: every batch row is
matched back to the jet whose (independently built, ``build_inputs``) features it carries.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
from jetfactory import random_jets

from jettag.data.features import build_inputs, required_fields
from jettag.data.kinds.particles import JetTensors, ParticleBatch
from jettag.data.loader import BatchLoader, StreamingLoader
from jettag.data.store import JetDataError, write_store

N_JETS = 1500
KIN_COLUMNS = [*required_fields("kin"), "label"]


def build_kin(jets: ak.Array, source: str = "<memory>") -> JetTensors:
    return JetTensors.from_jets(jets, "kin", source=source)


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


def test_from_store_and_streaming_match_in_memory(tmp_path_factory, jets, data, reference, key_to_jet):
    folder = tmp_path_factory.mktemp("stream")
    half = N_JETS // 2
    write_store(folder / "a.parquet", jets[:half], ["c0", "c1", "c2", "c3", "c4"], "test", row_group_size=200)
    write_store(folder / "b.parquet", jets[half:], ["c0", "c1", "c2", "c3", "c4"], "test", row_group_size=300)

    stored = JetTensors.from_store(folder, "kin")
    assert torch.equal(stored.table, data.table) and torch.equal(stored.labels, data.labels)

    stream = StreamingLoader(folder, build_kin, batch_size=128, columns=KIN_COLUMNS, buffer_size=500, seed=4)
    seen: list[int] = []
    for batch in stream:
        ids = identify(batch, key_to_jet)
        seen += ids
        np.testing.assert_array_equal(batch.label.numpy(), data.labels.numpy()[ids])
        p = batch.features.shape[-1]
        assert p % 8 == 0
        np.testing.assert_array_equal(batch.features.numpy(), reference["features"][ids, :, :p])
        np.testing.assert_array_equal(batch.mask.numpy(), reference["mask"][ids, :, :p])
    assert sorted(seen) == list(range(N_JETS))
    assert len(stream) == -(-N_JETS // 128)

@pytest.fixture(scope="module")
def uneven_store(tmp_path_factory, jets) -> Path:
    """The jets in two files with row groups of different sizes (shares begin and end inside units)."""
    folder = tmp_path_factory.mktemp("uneven")
    classes = ["c0", "c1", "c2", "c3", "c4"]
    write_store(folder / "a.parquet", jets[:700], classes, "test", row_group_size=170)
    write_store(folder / "b.parquet", jets[700:], classes, "test", row_group_size=230)
    return folder


@pytest.mark.parametrize("batch_size", [64, 100])
def test_streaming_two_ranks_see_every_jet_exactly_once(uneven_store, key_to_jet, batch_size):
    orders = []
    for epoch in (0, 1):
        shards, counts = [], []
        for rank in range(2):
            s = StreamingLoader(uneven_store, build_kin, batch_size=batch_size, buffer_size=300, seed=4,
                                rank=rank, world_size=2, prefetch=rank == 0)
            s.set_epoch(epoch)
            batches = [identify(b, key_to_jet) for b in s]
            assert all(0 < len(b) <= batch_size for b in batches)
            counts.append(len(batches))
            shards.append([k for b in batches for k in b])
        assert counts[0] == counts[1] == len(s)  # ranks step together
        seen = Counter(shards[0] + shards[1])
        assert max(seen.values()) == 1 and len(seen) == N_JETS, "every jet exactly once per epoch"
        assert abs(len(shards[0]) - len(shards[1])) <= 1
        orders.append(shards[0])
    assert orders[0] != orders[1]  # each epoch has its own order


def test_streaming_one_jet_short_rank_splits_a_batch(tmp_path, jets):
    """513 jets, 2 ranks, batches of 64: shares 256 and 257 give 4 and 5 batches unless a batch is split."""
    write_store(tmp_path / "a.parquet", jets[:513], ["c0", "c1", "c2", "c3", "c4"], "t", row_group_size=100)
    sizes = [[len(b) for b in StreamingLoader(tmp_path, build_kin, 64, buffer_size=200, rank=r, world_size=2)]
             for r in range(2)]
    assert len(sizes[0]) == len(sizes[1]) == 5 and sum(sizes[0]) + sum(sizes[1]) == 513


class CountingBuild:
    """``build_kin`` that counts the jets it builds (to show that skipped buffers are not built)."""

    def __init__(self) -> None:
        self.built = 0

    def __call__(self, jets: ak.Array, source: str = "<memory>") -> JetTensors:
        self.built += len(jets)
        return build_kin(jets, source)


@pytest.mark.parametrize("rank", [0, 1])
def test_streaming_resume_position_is_exact(uneven_store, rank):
    """``iter_from(k)`` gives batches k, k+1, ... of the full epoch, bit for bit, building only the
    buffers from the one holding batch k on (plus the units of the jets carried into it)."""
    def loader(build) -> StreamingLoader:
        s = StreamingLoader(uneven_store, build, batch_size=48, buffer_size=250, seed=7, rank=rank,
                            world_size=2)
        s.set_epoch(3)
        return s

    full = list(loader(build_kin))
    assert len(full) == len(loader(build_kin)) == 16
    for start in (1, 5, 6, 11, 15):
        counter = CountingBuild()
        rest = list(loader(counter).iter_from(start))
        assert len(rest) == len(full) - start
        for a, b in zip(full[start:], rest):
            for name in ("label", "points", "features", "vectors", "mask"):
                assert torch.equal(getattr(a, name), getattr(b, name)), (start, name)


def test_streaming_resume_skips_building_earlier_buffers(uneven_store):
    counter = CountingBuild()
    s = StreamingLoader(uneven_store, counter, batch_size=32, buffer_size=100, seed=7)
    n = len(s)
    assert len(list(s.iter_from(n - 2))) == 2
    # 8 units of 170-230 jets, one per buffer: the last buffer's unit plus the units its carried
    # jets came from (usually the one before), never the whole data set
    assert counter.built < N_JETS // 2, counter.built


def test_streaming_split_selects_disjoint_parts(uneven_store, key_to_jet):
    from jettag.data.dataset import split_rows

    seen: dict[str, set[int]] = {}
    for part in ("train", "val", "test"):
        select = partial(split_rows, fractions=[0.6, 0.2, 0.2], seed=3, part=part)
        s = StreamingLoader(uneven_store, build_kin, batch_size=64, buffer_size=300, select=select)
        seen[part] = {k for b in s for k in identify(b, key_to_jet)}
        assert sum(len(b) for b in s) == len(seen[part]) == s.num_jets
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"])
    assert not (seen["val"] & seen["test"])
    assert len(seen["train"] | seen["val"] | seen["test"]) == N_JETS
    # 1500 jets: the train part is binomial(1500, 0.6), std 19
    assert abs(len(seen["train"]) - 900) < 100 and abs(len(seen["test"]) - 300) < 70


def test_split_rows_depends_on_position_only():
    from jettag.data.dataset import split_rows

    f = [0.8, 0.1, 0.1]
    whole = split_rows(Path("x/jets.parquet"), 0, 10_000, f, seed=0, part="val")
    pieces = np.concatenate([split_rows(Path("jets.parquet"), a, 2500, f, 0, "val") + a
                             for a in range(0, 10_000, 2500)])
    np.testing.assert_array_equal(whole, pieces)  # row groups of any size, any directory: same split
    assert abs(len(whole) - 1000) < 120  # binomial(10000, 0.1): std 30
    assert not np.array_equal(whole, split_rows(Path("jets.parquet"), 0, 10_000, f, seed=1, part="val"))
    assert not np.array_equal(whole, split_rows(Path("other.parquet"), 0, 10_000, f, seed=0, part="val"))
    parts = [split_rows(Path("a.parquet"), 0, 10_000, f, 0, p) for p in ("train", "val", "test")]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10_000))


def test_streaming_label_counts_read_labels_only(uneven_store, data):
    s = StreamingLoader(uneven_store, build_kin, batch_size=64)
    np.testing.assert_array_equal(s.label_counts(5), np.bincount(data.labels.numpy(), minlength=5))


def test_streaming_error_names_file_and_row(tmp_path):
    jets = random_jets(40, seed=8, min_len=2, max_len=6)
    e = ak.to_list(jets["part_energy"])
    e[33][1] = -1.0
    jets = ak.with_field(jets, ak.values_astype(ak.Array(e), np.float32), "part_energy")
    write_store(tmp_path / "bad.parquet", jets, ["a", "b"], "test", row_group_size=16)
    with pytest.raises(JetDataError, match=r"bad\.parquet.*part_energy.*row 33"):
        list(StreamingLoader(tmp_path, build_kin, batch_size=8, shuffle=False))
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
