"""Batches for training and evaluation, built for speed.

Three ideas make batching cheap enough that the model, not the loader, sets the pace:

1. **Flat jagged tensors.** ``JetTensors`` holds a whole dataset as one (n_particles, C) feature
   table, one (n_particles, 4) vector table and per-jet offsets/lengths/labels: no per-jet Python
   objects, and ``.to("cuda")`` moves the dataset onto the GPU once so that every later batch is
   assembled there.
2. **One gather per batch.** A batch is an index (B, P) into the flat table (plus the mask), so
   assembling it is a single vectorised ``index_select`` on whatever device holds the data.
3. **Length bucketing.** Attention and pair features cost O(P^2) per jet. Jets are sorted by
   multiplicity within large random chunks, cut into batches and the batch order is shuffled, and
   every batch is padded only to its own longest jet (rounded up to a multiple of 8 for tensor
   cores, capped at ``max_len``). On realistic multiplicities this keeps padded pairs within ~1.2x
   of the real pairs instead of ~4x for padding every jet to 128.

``BatchLoader`` shards the batches of an epoch over torch.distributed ranks (disjoint, equal batch
counts, deterministic from (seed, epoch)); ``StreamingLoader`` gives the same batches for data sets
larger than memory by streaming row groups through a shuffle buffer.
"""

from __future__ import annotations

import importlib
import math
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import torch

from jettag.data import store
from jettag.data.features import DEFAULT_MAX_LEN, feature_names, particle_table, required_fields

PAD_MULTIPLE = 8
PathsLike = str | os.PathLike | Sequence[str | os.PathLike]


@dataclass
class Batch:
    """Padded network inputs, channel-first as weaver: ``points`` (B, 2, P), ``features`` (B, C, P),
    ``vectors`` (B, 4, P), ``mask`` (B, 1, P) bool, ``label`` (B,) int64; padded entries are 0."""

    points: torch.Tensor
    features: torch.Tensor
    vectors: torch.Tensor
    mask: torch.Tensor
    label: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The same batch on ``device`` (``non_blocking`` overlaps the copy when the source is pinned)."""
        return Batch(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                        for f in fields(self)})

    def pin_memory(self) -> Batch:
        """Page-locked copy, so that ``.to("cuda", non_blocking=True)`` is asynchronous."""
        return Batch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def __len__(self) -> int:
        return int(self.label.shape[0])


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
        paths: PathsLike,
        feature_set: str,
        max_len: int = DEFAULT_MAX_LEN,
        device: torch.device | str = "cpu",
        deta_sign_flip: bool = False,
        chunk_size: int = 100_000,
        drop_invalid: bool = False,
    ) -> JetTensors:
        """Read a dataset (any format ``jettag.data.formats`` knows, else canonical stores) chunk by
        chunk, so only the flat features, never the whole awkward dataset, are held at once."""
        parts = [
            cls.from_jets(chunk, feature_set, max_len, "cpu", deta_sign_flip, source=src)
            for src, chunk in _iter_chunks(paths, feature_set, chunk_size, drop_invalid)
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

    def lengths_numpy(self) -> np.ndarray:
        """Per-jet multiplicities on the CPU (for bucketing without device round trips)."""
        return self._lengths_np

    def batch(self, index: np.ndarray | torch.Tensor, length: int | None = None) -> Batch:
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
        return Batch(
            points=rows[:, c - 2 : c].contiguous(),
            features=rows[:, :c].contiguous(),
            vectors=rows[:, c:].contiguous(),
            mask=mask.unsqueeze(1),
            label=self.labels[idx],
        )


def _formats():
    """``jettag.data.formats`` (every supported input format) when installed, else None."""
    try:
        return importlib.import_module("jettag.data.formats")
    except ModuleNotFoundError:
        return None


def _iter_chunks(
    paths: PathsLike, feature_set: str, chunk_size: int, drop_invalid: bool = False
) -> Iterator[tuple[str, ak.Array]]:
    """(source, canonical jets) chunks of a dataset: through ``jettag.data.formats`` when that reader
    module is installed (every supported format, validated), else straight from canonical stores."""
    formats = _formats()
    if formats is not None:
        for path in formats.resolve_dataset(paths):
            for chunk in formats.iter_jets([path], chunk_size=chunk_size, drop_invalid=drop_invalid):
                yield str(path), chunk
        return
    columns = [*required_fields(feature_set), "label"]
    for path in store.resolve_paths(paths):
        for chunk in store.iter_store([path], columns=columns, chunk_size=chunk_size):
            valid, _ = store.validate_jets(chunk, str(path), drop_invalid=drop_invalid)
            yield str(path), valid


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
    """Length-bucketed, shuffled, DDP-sharded batches of an in-memory ``JetTensors``.

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
        data: JetTensors,
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
        batches = bucket_batches(self.data.lengths_numpy(), mine, self.batch_size, self.bucket,
                                 self.chunk_batches)
        while len(batches) < self._num_batches:  # this shard is one jet short of the others
            k = max(range(len(batches)), key=lambda i: len(batches[i]))
            half = len(batches[k]) // 2
            batches[k : k + 1] = [batches[k][:half], batches[k][half:]]
        if self.shuffle:
            perm = _epoch_rng(self.seed, self.epoch, self.rank + 1).permutation(len(batches))
            batches = [batches[i] for i in perm]
        return batches

    def __iter__(self) -> Iterator[Batch]:
        for index in self.batch_indices():
            yield self.data.batch(index)

    def padding_waste(self) -> float:
        """Padded pairs / real pairs of this epoch: sum over batches of B * P^2 over sum of n_i^2."""
        lengths = self.data.lengths_numpy().astype(np.float64)
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
    formats = _formats()
    files = formats.resolve_dataset(paths) if formats is not None else store.resolve_paths(paths)
    for path in files:
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
        formats = _formats()
        if formats is not None:
            return int(formats.num_jets(unit.path))
        return sum(len(chunk) for _, chunk in self._read(unit))

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
            yield from _iter_chunks([unit.path], self.feature_set, self.buffer_size, self.drop_invalid)

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
    ) -> tuple[list[Batch], list[JetTensors]]:
        data = JetTensors.concatenate(buffer)
        order = rng.permutation(len(data)) if self.shuffle else np.arange(len(data))
        batches = bucket_batches(data.lengths_numpy(), order, self.batch_size, self.bucket,
                                 self.chunk_batches)
        keep: list[JetTensors] = []
        if batches and len(batches[-1]) < self.batch_size and not final:
            rest = batches.pop()  # carried into the next buffer so that only the epoch's last batch is short
            keep = [_subset(data, rest)]
        if final and self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        data = data.to(self.device)
        return [data.batch(b) for b in batches], keep

    def __iter__(self) -> Iterator[Batch]:
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


def _subset(data: JetTensors, index: np.ndarray) -> JetTensors:
    """A new flat dataset holding only jets ``index`` (used to carry a buffer's remainder)."""
    idx = torch.as_tensor(index, dtype=torch.int64)
    lengths = data.lengths[idx]
    starts = torch.cumsum(lengths, 0) - lengths
    rows = torch.repeat_interleave(data.offsets[idx] - starts, lengths) + torch.arange(int(lengths.sum()))
    table = data.table[torch.cat([rows, torch.tensor([data.table.shape[0] - 1])])]
    offsets = torch.zeros(len(idx) + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    return JetTensors(table, offsets, data.labels[idx], data.feature_names, data.max_len)
