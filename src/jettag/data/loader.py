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

import atexit
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import torch

from jettag.data import formats, store
from jettag.data.kinds.base import KindDataset, TensorBatch
from jettag.data.kinds.particles import padded_length

#: prefetch threads still running, with their stop events: stopped and joined at interpreter exit, so
#: that no thread is inside pyarrow or torch while their C++ runtimes are torn down (an abandoned
#: iterator's daemon thread there aborted the process: "terminate called without an active exception")
_PREFETCHERS: dict[threading.Thread, threading.Event] = {}


@atexit.register
def _stop_prefetchers() -> None:
    for thread, stop in list(_PREFETCHERS.items()):
        stop.set()
        thread.join(timeout=60)

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
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[TensorBatch]:
        """The batches of the current epoch from batch number ``start`` on (resume mid-epoch)."""
        for index in self.batch_indices()[start:]:
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
#: ``select(path, first_row, num_rows)``: the rows (relative to ``first_row``) of a unit to use
RowSelect = Callable[[Path, int, int], np.ndarray]
#: ``build(jets, source=...)``: a dataset of the model's kind from canonical jets (on the CPU)
Builder = Callable[..., KindDataset]


@dataclass(frozen=True)
class Unit:
    """One independently readable piece of a dataset: a row group of a store, or a whole other file.

    ``num_rows`` counts the rows of the unit that ``select`` keeps (all rows without one).
    """

    path: Path
    row_group: int | None  # None: a file of another format, read whole through jettag.data.formats
    first_row: int  # first row of the unit in its file (error messages, row selection)
    file_rows: int
    num_rows: int


def dataset_units(paths: PathsLike, select: RowSelect | None = None) -> list[Unit]:
    """The units of a dataset in file order, with the number of selected rows of each (from
    parquet metadata or file headers and ``select``, without reading any jet)."""
    units: list[Unit] = []
    for path in formats.resolve_dataset(paths):
        pieces: list[tuple[int | None, int, int]] = []
        if path.suffix == ".parquet":
            meta = pq.ParquetFile(path).metadata
            if meta.metadata and store.METADATA_KEY in meta.metadata:
                rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
                starts = np.cumsum([0, *rows[:-1]])
                pieces = [(g, int(o), r) for g, (r, o) in enumerate(zip(rows, starts))]
        if not pieces:
            pieces = [(None, 0, int(formats.num_jets(path)))]
        for group, first, rows in pieces:
            n = rows if select is None else len(select(path, first, rows))
            units.append(Unit(path, group, first, rows, n))
    return units


def read_unit(unit: Unit, columns: Sequence[str] | None = None, select: RowSelect | None = None,
              validate: bool = True) -> ak.Array:
    """The selected jets of one unit as canonical jets; ``validate`` checks the momenta (errors name
    the file, the field and the row)."""
    if unit.row_group is not None:
        pf = pq.ParquetFile(unit.path)
        store._check_columns(unit.path, pf.schema_arrow, columns)
        jets = ak.from_arrow(pf.read_row_group(unit.row_group, columns=list(columns) if columns else None))
        if validate:
            store.validate_jets(jets, str(unit.path), row_offset=unit.first_row)
    else:
        jets = formats.read_jets([unit.path])
    if select is not None:
        jets = jets[select(unit.path, unit.first_row, unit.file_rows)]
    return jets


@dataclass(frozen=True)
class _Piece:
    """Selected rows ``start:stop`` of unit ``unit`` (a rank's share can begin or end inside a unit)."""

    unit: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass
class _Buffer:
    """A shuffle buffer of the plan: the jets carried over from the previous buffer, then ``pieces``."""

    pieces: list[int]
    n: int  # jets in the buffer, carried ones included
    n_body: int  # jets cut into this buffer's batches (the rest, < batch_size, is carried on)
    n_batches: int
    split_first: bool  # split the first batch in two, so that this rank has as many batches as the others


class StreamingLoader:
    """Batches of any input kind from data larger than memory, in an order that depends only on
    (seed, epoch), so that a run can resume exactly mid-epoch.

    Per epoch the units (row groups of the store, or whole files of other formats) are shuffled and
    laid end to end; rank r takes jets ``[r N / W, (r + 1) N / W)`` of that sequence (N selected
    jets, W ranks), so the ranks are disjoint, together cover every jet, and their shares differ by
    at most one jet (a share may begin or end inside a unit). Each rank reads its units into a
    shuffle buffer of at least ``buffer_size`` jets, builds the features of the buffer with
    ``build``, permutes it, buckets it by ``sizes()`` within chunks of ``chunk_batches`` batches and
    yields its batches in a random order; the < ``batch_size`` jets left over are carried into the
    next buffer, so only the epoch's last batch can be short. Every rank yields ``len(self)``
    batches (a rank one jet short splits a batch in two, as ``BatchLoader`` does).

    Every random draw depends only on jet counts, never on jet content, so ``iter_from(k)`` knows
    which buffers hold the first k batches without building their features: it reads again only
    the few units whose jets were carried into the buffer where batch k lies. A background thread
    reads and builds the next units while the current batches are consumed (``prefetch``). Memory
    holds one buffer plus a few units, whatever the size of the dataset.

    ``select(path, first_row, num_rows)`` picks rows of each unit (a train/val/test split);
    ``columns`` are the store columns that ``build`` reads (None: all).
    """

    def __init__(
        self,
        paths: PathsLike,
        build: Builder,
        batch_size: int,
        columns: Sequence[str] | None = None,
        select: RowSelect | None = None,
        shuffle: bool = True,
        seed: int = 0,
        bucket: bool = True,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        buffer_size: int = 100_000,
        chunk_batches: int = 64,
        prefetch: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.paths = paths
        self.build = build
        self.columns = list(columns) if columns is not None else None
        self.select = select
        self.units = dataset_units(paths, select)
        self.num_jets = sum(u.num_rows for u in self.units)
        if self.num_jets < world_size:
            raise ValueError(f"{paths}: {self.num_jets} jets cannot be shared among {world_size} ranks")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket = bucket
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.buffer_size = max(buffer_size, batch_size)
        self.chunk_batches = chunk_batches
        self.prefetch = prefetch
        self.device = torch.device(device)
        self.epoch = 0
        shares = [self._bound(r + 1) - self._bound(r) for r in range(world_size)]
        self._num_batches = (min(shares) // batch_size if drop_last else -(-max(shares) // batch_size))
        if not drop_last and min(shares) < self._num_batches:
            raise ValueError(f"{self.num_jets} jets over {world_size} ranks cannot give every rank "
                             f"{self._num_batches} non-empty batches of {batch_size}; use drop_last=True")

    def __len__(self) -> int:
        return self._num_batches

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration uses (call it every epoch, as with DDP)."""
        self.epoch = int(epoch)

    def label_counts(self, num_classes: int) -> np.ndarray:
        """Selected jets per class over the whole dataset, from the ``label`` column alone."""
        counts = np.zeros(num_classes, dtype=np.int64)
        for unit in self.units:
            labels = ak.to_numpy(read_unit(unit, ["label"], validate=False)["label"])
            bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
            if len(bad):
                raise store.JetDataError(f"{unit.path}: field 'label' is {int(labels[bad[0]])} at row "
                                         f"{unit.first_row + int(bad[0])}, outside the {num_classes} classes")
            if self.select is not None:
                labels = labels[self.select(unit.path, unit.first_row, unit.file_rows)]
            counts += np.bincount(labels, minlength=num_classes)
        return counts

    # -- the plan of an epoch (jet counts only) ----------------------------------------------------
    def _bound(self, r: int) -> int:
        return r * self.num_jets // self.world_size

    def _pieces(self) -> list[_Piece]:
        """This rank's share of the epoch's unit sequence."""
        n = len(self.units)
        order = _epoch_rng(self.seed, self.epoch).permutation(n) if self.shuffle else np.arange(n)
        lo, hi = self._bound(self.rank), self._bound(self.rank + 1)
        pieces, pos = [], 0
        for u in order:
            size = self.units[u].num_rows
            start, stop = max(lo - pos, 0), min(hi - pos, size)
            if start < stop:
                pieces.append(_Piece(int(u), start, stop))
            pos += size
            if pos >= hi:
                break
        return pieces

    def _plan(self, pieces: list[_Piece]) -> list[_Buffer]:
        bs, total = self.batch_size, self._num_batches
        buffers: list[_Buffer] = []
        group: list[int] = []
        carried = buffered = batches = 0
        for k, piece in enumerate(pieces):
            group.append(k)
            buffered += len(piece)
            final = k == len(pieces) - 1
            if buffered < self.buffer_size and not final:
                continue
            if final:
                body = buffered
                nb = body // bs if self.drop_last else -(-body // bs)
                nb = min(nb, total - batches)
                split = nb < total - batches  # a share one jet short of the others
                nb += split
            else:
                body = buffered - buffered % bs
                nb, split = body // bs, False
            buffers.append(_Buffer(group, buffered, body, nb, split))
            batches += nb
            carried = buffered - body
            group, buffered = [], carried
        return buffers

    # -- reading and building ----------------------------------------------------------------------
    def _build_piece(self, piece: _Piece) -> KindDataset:
        unit = self.units[piece.unit]
        jets = read_unit(unit, self.columns, self.select)[piece.start : piece.stop]
        where = f"{unit.path} (row group {unit.row_group})" if unit.row_group is not None else str(unit.path)
        return self.build(jets, source=where)

    def _built(self, pieces: Sequence[_Piece]) -> Iterator[KindDataset]:
        if not self.prefetch:
            for piece in pieces:
                yield self._build_piece(piece)
            return
        q: queue.Queue = queue.Queue(maxsize=2)
        done = object()
        stop = threading.Event()

        def put(item: object) -> bool:
            """Hand ``item`` to the consumer unless told to stop first; False when stopped."""
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for piece in pieces:
                    if stop.is_set() or not put(self._build_piece(piece)):
                        return
                put(done)
            except BaseException as err:  # handed to the consumer, which re-raises it
                put(err)

        thread = threading.Thread(target=work, daemon=True, name="jettag-stream-prefetch")
        _PREFETCHERS[thread] = stop
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
            _PREFETCHERS.pop(thread, None)

    def _materialize(self, refs: np.ndarray, pieces: list[_Piece]) -> KindDataset:
        """The jets ``refs`` ((piece, row) pairs) in that order, by building their pieces again."""
        used = np.unique(refs[:, 0])
        parts = [self._build_piece(pieces[k]) for k in used]
        starts = dict(zip(used.tolist(), np.cumsum([0, *(len(p) for p in parts[:-1])]).tolist()))
        rows = np.array([starts[int(k)] for k in refs[:, 0]], dtype=np.int64) + refs[:, 1]
        return parts[0].concatenate(parts).subset(rows)

    # -- iteration ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[TensorBatch]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[TensorBatch]:
        """The batches of the current epoch from batch number ``start`` on: the buffers that hold
        only earlier batches are planned but neither read nor built."""
        pieces = self._pieces()
        plan = self._plan(pieces)
        rng = _epoch_rng(self.seed, self.epoch, self.rank + 1)
        first = 0  # the first buffer that holds a batch >= start
        seen = 0
        while first < len(plan) and seen + plan[first].n_batches <= start:
            seen += plan[first].n_batches
            first += 1
        built = self._built([pieces[k] for buf in plan[first:] for k in buf.pieces])
        carry_refs = np.zeros((0, 2), dtype=np.int64)  # carried jets as (piece, row), while skipping
        carry: KindDataset | None = None
        emitted = 0
        for j, buf in enumerate(plan):
            order = self._permutation(rng, buf.n)
            perm = self._permutation(rng, buf.n_batches)
            if j < first:
                refs = np.concatenate([carry_refs, *(
                    np.stack([np.full(len(pieces[k]), k), np.arange(len(pieces[k]))], axis=1)
                    for k in buf.pieces)])
                carry_refs = refs[order[buf.n_body :]]
                emitted += buf.n_batches
                continue
            if j == first and len(carry_refs):
                carry = self._materialize(carry_refs, pieces)
            parts = ([carry] if carry is not None and len(carry) else []) + [next(built) for _ in buf.pieces]
            data = parts[0].concatenate(parts)
            del parts  # memory: one buffer (and the units being prefetched), not its parts as well
            batches = bucket_batches(data.sizes(), order[: buf.n_body], self.batch_size, self.bucket,
                                     self.chunk_batches)[: buf.n_batches - buf.split_first]
            if buf.split_first:
                half = len(batches[0]) // 2
                batches[:1] = [batches[0][:half], batches[0][half:]]
            carry = data.subset(order[buf.n_body :])
            data = data.to(self.device)
            for b in perm:
                if emitted >= start:
                    yield data.batch(batches[b])
                emitted += 1
            del data  # before the next buffer is assembled

    def _permutation(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.permutation(n) if self.shuffle else np.arange(n)

    def parts(self) -> Iterator[tuple[int, KindDataset]]:
        """This rank's jets in dataset order as built datasets of about ``buffer_size`` jets, each with
        the index of its first jet in the selected dataset (for scoring every jet once)."""
        if self.shuffle:
            raise ValueError("parts() walks the data in order: build the loader with shuffle=False")
        pieces = self._pieces()
        pos = self._bound(self.rank)
        group: list[KindDataset] = []
        n = 0
        for k, data in enumerate(self._built(pieces)):
            group.append(data)
            n += len(data)
            if n >= self.buffer_size or k == len(pieces) - 1:
                yield pos, group[0].concatenate(group)
                pos += n
                group, n = [], 0
