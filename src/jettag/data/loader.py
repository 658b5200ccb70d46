"""Batches for training and evaluation of any input kind: length bucketing, DDP shards, streaming.

A dataset of any kind (``jettag.data.kinds``) gives per-jet sizes (``sizes()``) and assembles a
batch from jet indices (``batch(index)``), padded to the batch's own largest jet. Attention and
pair features cost O(P^2) per jet, so jets are sorted by size within large random chunks, cut into
batches and the batch order is shuffled: on realistic multiplicities this keeps padded pairs within
~1.2x of the real pairs instead of ~4x for padding every jet to 128.

``BatchLoader`` shards the batches of an epoch over torch.distributed ranks (disjoint, equal batch
counts, deterministic from (seed, epoch)); ``StreamingLoader`` gives the same kind of batches for
data sets larger than memory by streaming row groups through a shuffle buffer.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import torch

from jettag.data import formats, store
from jettag.data.features import DEFAULT_MAX_LEN, required_fields
from jettag.data.kinds.base import KindDataset, TensorBatch
from jettag.data.kinds.particles import JetTensors, padded_length

PathsLike = str | os.PathLike | Sequence[str | os.PathLike]


def _epoch_rng(seed: int, epoch: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, *extra])


def bucket_batches(
    lengths: np.ndarray,
    order: np.ndarray,
    batch_size: int,
    bucket: bool,
    chunk_batches: int,
) -> list[np.ndarray]:
    """Cut jet indices ``order`` into batches; with ``bucket`` sort by length within chunks first.

    Chunks hold ``chunk_batches`` whole batches, so only the very last batch can be short, and the
    random composition of each chunk keeps batches from being sorted over the whole dataset (which
    would correlate batch content with multiplicity, and hence with the class, across an epoch).
    """
    if bucket:
        chunk = batch_size * chunk_batches
        sorted_parts = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            sorted_parts.append(part[np.argsort(lengths[part], kind="stable")])
        order = np.concatenate(sorted_parts) if sorted_parts else order
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class BatchLoader:
    """Length-bucketed, shuffled, DDP-sharded batches of an in-memory dataset of any kind.

    Per epoch (``set_epoch``; the order depends only on (seed, epoch)): jets are permuted, dealt to
    ranks (``order[rank::world_size]``, so ranks are disjoint and together cover the data), and each
    rank cuts its jets into batches, sorted by multiplicity within chunks of ``chunk_batches``
    batches when ``bucket`` is set, then shuffles the batch order. Every rank yields the same number
    of batches (torch.distributed would hang otherwise): without ``drop_last`` a rank one jet short
    splits its largest batch in two; with ``drop_last`` every rank keeps only whole batches of the
    smallest shard.
    """

    def __init__(
        self,
        data: KindDataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        bucket: bool = True,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        chunk_batches: int = 64,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if len(data) < world_size:
            raise ValueError(f"{len(data)} jets cannot be shared among {world_size} ranks")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket = bucket
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.chunk_batches = chunk_batches
        self.epoch = 0
        n_min, n_max = len(data) // world_size, -(-len(data) // world_size)
        self._num_batches = n_min // batch_size if drop_last else -(-n_max // batch_size)
        if not drop_last and n_min < self._num_batches:
            raise ValueError(
                f"{len(data)} jets over {world_size} ranks cannot give every rank {self._num_batches} "
                f"non-empty batches of size {batch_size}; use drop_last=True"
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration uses (call it every epoch, as with DDP)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._num_batches

    def batch_indices(self) -> list[np.ndarray]:
        """This rank's batches of the current epoch, as arrays of jet indices (in yield order)."""
        n = len(self.data)
        rng = _epoch_rng(self.seed, self.epoch)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        mine = order[self.rank :: self.world_size]
        if self.drop_last:
            mine = mine[: self._num_batches * self.batch_size]
        batches = bucket_batches(self.data.sizes(), mine, self.batch_size, self.bucket,
                                 self.chunk_batches)
        while len(batches) < self._num_batches:  # this shard is one jet short of the others
            k = max(range(len(batches)), key=lambda i: len(batches[i]))
            half = len(batches[k]) // 2
            batches[k : k + 1] = [batches[k][:half], batches[k][half:]]
        if self.shuffle:
            perm = _epoch_rng(self.seed, self.epoch, self.rank + 1).permutation(len(batches))
            batches = [batches[i] for i in perm]
        return batches

    def __iter__(self) -> Iterator[TensorBatch]:
        for index in self.batch_indices():
            yield self.data.batch(index)

    def padding_waste(self) -> float:
        """Padded pairs / real pairs of this epoch: sum over batches of B * P^2 over sum of n_i^2."""
        lengths = self.data.sizes().astype(np.float64)
        padded = real = 0.0
        for index in self.batch_indices():
            p = padded_length(int(lengths[index].max()), self.data.max_len)
            padded += len(index) * p * p
            real += float((lengths[index] ** 2).sum())
        return padded / real


# --------------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Unit:
    """One independently readable piece of a dataset: a row group of a store, or a whole file."""

    path: Path
    row_group: int | None
    num_rows: int
    row_offset: int = 0  # first row of the unit in its file, for error messages


def _units(paths: PathsLike) -> list[_Unit]:
    units: list[_Unit] = []
    for path in formats.resolve_dataset(paths):
        if path.suffix == ".parquet":
            meta = pq.ParquetFile(path).metadata
            if meta.metadata and store.METADATA_KEY in meta.metadata:
                rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
                starts = np.cumsum([0, *rows[:-1]])
                units += [_Unit(path, g, r, int(o)) for g, (r, o) in enumerate(zip(rows, starts))]
                continue
        units.append(_Unit(path, None, -1))  # another format: read whole through jettag.data.formats
    return units


class StreamingLoader:
    """Batches from data larger than memory: row groups (or whole non-store files) stream through a
    shuffle buffer, and each full buffer is bucketed and cut into batches like ``BatchLoader``.

    Units (row groups) are shuffled per epoch and dealt to ranks (each to the rank with the fewest
    jets so far), so ranks read disjoint data. Each rank stops after ``len(self)`` batches, the
    smallest count over ranks, so that all ranks step together; with one rank nothing is dropped
    (except a short last batch with ``drop_last``; with ``drop_invalid`` the per-rank counts are
    computed before dropping, so a rank can then end a batch or so early). A background thread
    reads and builds features for the next unit while the current batches are consumed
    (``prefetch``).
    """

    def __init__(
        self,
        paths: PathsLike,
        feature_set: str,
        batch_size: int,
        max_len: int = DEFAULT_MAX_LEN,
        shuffle: bool = True,
        seed: int = 0,
        bucket: bool = True,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        buffer_size: int = 100_000,
        chunk_batches: int = 64,
        deta_sign_flip: bool = False,
        prefetch: bool = True,
        device: torch.device | str = "cpu",
        drop_invalid: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.units = _units(paths)
        self.feature_set = feature_set
        self.batch_size = batch_size
        self.max_len = max_len
        self.shuffle = shuffle
        self.seed = seed
        self.bucket = bucket
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.buffer_size = max(buffer_size, batch_size)
        self.chunk_batches = chunk_batches
        self.deta_sign_flip = deta_sign_flip
        self.drop_invalid = drop_invalid
        self.prefetch = prefetch
        self.device = torch.device(device)
        self.epoch = 0
        if len(self.units) < world_size:
            raise ValueError(f"{len(self.units)} row groups/files cannot be shared among {world_size} ranks")
        if any(u.num_rows < 0 for u in self.units):
            self.units = [u if u.num_rows >= 0 else _Unit(u.path, None, self._count(u)) for u in self.units]

    def _count(self, unit: _Unit) -> int:
        return int(formats.num_jets(unit.path))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _assignment(self) -> list[list[_Unit]]:
        order = _epoch_rng(self.seed, self.epoch).permutation(len(self.units)) if self.shuffle else range(
            len(self.units))
        # Deal the shuffled units greedily to the rank holding the fewest jets so far: row groups
        # differ in size, and every rank must stop at the smallest shard's batch count.
        shards: list[list[_Unit]] = [[] for _ in range(self.world_size)]
        rows = np.zeros(self.world_size, dtype=np.int64)
        for i in order:
            r = int(np.argmin(rows))
            shards[r].append(self.units[i])
            rows[r] += self.units[i].num_rows
        return shards

    def __len__(self) -> int:
        rows = [sum(u.num_rows for u in shard) for shard in self._assignment()]
        counts = [n // self.batch_size if self.drop_last else -(-n // self.batch_size) for n in rows]
        return min(counts)

    def _read(self, unit: _Unit) -> Iterator[tuple[str, ak.Array]]:
        if unit.row_group is not None:
            pf = pq.ParquetFile(unit.path)
            columns = [*required_fields(self.feature_set), "label"]
            store._check_columns(unit.path, pf.schema_arrow, columns)
            jets = ak.from_arrow(pf.read_row_group(unit.row_group, columns=columns))
            jets, _ = store.validate_jets(jets, str(unit.path), self.drop_invalid, row_offset=unit.row_offset)
            yield str(unit.path), jets
        else:
            chunks = formats.iter_jets([unit.path], chunk_size=self.buffer_size,
                                       drop_invalid=self.drop_invalid)
            for chunk in chunks:
                yield str(unit.path), chunk

    def _tensors(self, units: Sequence[_Unit]) -> Iterator[JetTensors]:
        for unit in units:
            for src, chunk in self._read(unit):
                yield JetTensors.from_jets(chunk, self.feature_set, self.max_len, "cpu",
                                           self.deta_sign_flip, src)

    def _prefetched(self, units: Sequence[_Unit]) -> Iterator[JetTensors]:
        if not self.prefetch:
            yield from self._tensors(units)
            return
        q: queue.Queue = queue.Queue(maxsize=2)
        done = object()
        stop = threading.Event()

        def work() -> None:
            try:
                for item in self._tensors(units):
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(done)
            except BaseException as err:  # handed to the consumer, which re-raises it
                q.put(err)

        thread = threading.Thread(target=work, daemon=True, name="jettag-stream-prefetch")
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)

    def _flush(
        self, buffer: list[JetTensors], rng: np.random.Generator, final: bool
    ) -> tuple[list[TensorBatch], list[JetTensors]]:
        data = JetTensors.concatenate(buffer)
        order = rng.permutation(len(data)) if self.shuffle else np.arange(len(data))
        batches = bucket_batches(data.sizes(), order, self.batch_size, self.bucket,
                                 self.chunk_batches)
        keep: list[JetTensors] = []
        if batches and len(batches[-1]) < self.batch_size and not final:
            rest = batches.pop()  # carried into the next buffer so that only the epoch's last batch is short
            keep = [data.subset(rest)]
        if final and self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        data = data.to(self.device)
        return [data.batch(b) for b in batches], keep

    def __iter__(self) -> Iterator[TensorBatch]:
        total = len(self)
        rng = _epoch_rng(self.seed, self.epoch, self.rank + 1)
        buffer: list[JetTensors] = []
        buffered = 0
        emitted = 0
        for part in self._prefetched(self._assignment()[self.rank]):
            buffer.append(part)
            buffered += len(part)
            if buffered >= self.buffer_size:
                out, buffer = self._flush(buffer, rng, final=False)
                buffered = sum(len(b) for b in buffer)
                for b in out:
                    if emitted == total:
                        return
                    emitted += 1
                    yield b
        if buffer:
            out, _ = self._flush(buffer, rng, final=True)
            for b in out:
                if emitted == total:
                    return
                emitted += 1
                yield b
