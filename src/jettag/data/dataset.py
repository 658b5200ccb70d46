"""The data of a run: resolve ``data.path`` (a file or ``generate:...``), read it, split it.

The train/val/test split depends only on ``data.split_seed`` (not the training seed), so runs with
different training seeds share one test set and ``jettag evaluate RUN`` can rebuild exactly the
held-out jets of a run from its ``config.yaml`` alone:

- in memory, it is a fixed permutation of all jets (``split_indices``);
- when streaming (``data.streaming``), no process ever sees all jets, so each jet's part is a hash
  of (``split_seed``, file name, row in the file) compared with the fractions (``split_rows``):
  every file, in any order or class layout, gives about ``split`` of its jets to each part, the
  parts of a file do not change when files are added to the dataset, and a jet's part is known
  from its position alone, so a streaming rank keeps its train rows and ``jettag evaluate``
  reads back the test rows. Separate ``data.val``/``data.test`` datasets are used whole instead.
"""

from __future__ import annotations

import zlib
from functools import partial
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from jettag.data import store

GENERATE_PREFIX = "generate:"


def parse_generate(spec: str) -> tuple[str, int, int]:
    """``generate:<recipe>:<n_jets>[:seed]`` -> (recipe, n_jets, seed)."""
    parts = spec.removeprefix(GENERATE_PREFIX).split(":")
    if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
        raise ValueError(f"data spec {spec!r}: expected generate:<recipe>:<n_jets>[:seed]")
    try:
        n = int(float(parts[1]))
        seed = int(parts[2]) if len(parts) == 3 else 0
    except ValueError as err:
        raise ValueError(f"data spec {spec!r}: n_jets and seed must be integers") from err
    return parts[0], n, seed


def resolve_data_path(
    spec: str, data_cfg: dict[str, Any] | None = None, workers: int | None = None
) -> Path | str:
    """A dataset path; ``generate:...`` specs are produced (or found in the cache) first."""
    spec = str(spec)
    if not spec.startswith(GENERATE_PREFIX):
        return spec
    recipe, n, seed = parse_generate(spec)
    from jettag.data.generate import cached_dataset

    data_cfg = data_cfg or {}
    w = workers if workers is not None else int(data_cfg.get("generate_workers", 2))
    return cached_dataset(recipe, n, seed=seed, detector=data_cfg.get("detector", "none"), workers=w)


def read_dataset(path: Path | str, drop_invalid: bool = False) -> tuple[ak.Array, list[str]]:
    """All jets of a dataset (any supported format) and its class names."""
    from jettag.data import formats

    return formats.read_jets(path, drop_invalid=drop_invalid), list(formats.dataset_classes(path))


def split_indices(
    n: int, fractions: list[float], seed: int, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint train/val/test index arrays covering ``range(n)`` (sorted within each part).

    ``limit`` keeps a random subset of that many jets first: files are often ordered by class
    (generated samples are written class by class), so "the first N jets" would be one class.
    """
    perm = np.random.default_rng([seed, 0x5917]).permutation(n)
    if limit is not None:
        perm = perm[: int(limit)]
        n = len(perm)
    n_train = round(fractions[0] * n)
    n_val = round(fractions[1] * n)
    parts = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
    return tuple(np.sort(p) for p in parts)  # type: ignore[return-value]


PARTS = ("train", "val", "test")


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 whose outputs look independent and uniform."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def split_rows(path: Path, first_row: int, num_rows: int, fractions: list[float], seed: int, part: str
               ) -> np.ndarray:
    """Rows ``first_row + i`` of ``path`` that belong to ``part`` (returned as the i): jet (file, row)
    goes to train, val or test as a hash of (seed, file name, row) falls in ``fractions``."""
    key = np.array([(int(seed) & 0xFFFFFFFF) << 32 | zlib.crc32(Path(path).name.encode())], dtype=np.uint64)
    rows = np.arange(first_row, first_row + num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = _mix64(rows ^ _mix64(key))
    u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53  # uniform in [0, 1)
    which = np.searchsorted(np.cumsum(fractions)[:2], u, side="right")
    return np.flatnonzero(which == PARTS.index(part))


def dataset_size(path: Path | str) -> int:
    """Number of jets of a dataset, from file metadata/headers only."""
    from jettag.data import formats

    return sum(formats.num_jets(p) for p in formats.resolve_dataset(path))


def use_streaming(data_cfg: dict[str, Any], path: Path | str) -> bool:
    """Whether a run streams its data: ``data.streaming`` true/false, or ``"auto"``: when ``path``
    holds more than ``data.stream_above`` jets."""
    mode = data_cfg.get("streaming", False)
    if mode not in (True, False, "auto"):
        raise ValueError(f"data.streaming must be true, false or auto, got {mode!r}")
    if mode == "auto":
        return dataset_size(path) > int(data_cfg.get("stream_above", 2_000_000))
    return bool(mode)


def stream_source(cfg: dict[str, Any], part: str, path: Any = None) -> tuple[Any, Any]:
    """Where a streaming run reads ``part``: (dataset path, row selection or None for a whole
    separate ``data.<part>`` dataset)."""
    d = cfg["data"]
    if part != "train" and d.get(part):
        return resolve_data_path(d[part], d), None
    main_path = path if path is not None else resolve_data_path(d["path"], d)
    return main_path, partial(split_rows, fractions=list(d["split"]), seed=int(d.get("split_seed", 0)),
                              part=part)


def check_streaming(d: dict[str, Any]) -> None:
    """Options that need every jet in memory, refused with one line before any reading."""
    if d.get("max_jets"):
        raise ValueError("data.max_jets picks a random subset of all jets in memory; with data.streaming "
                         "write the subset as its own store instead")
    if d.get("drop_invalid"):
        raise ValueError("data.drop_invalid cannot be used with data.streaming (every rank must know its "
                         "jet count before reading); clean the store first: jettag convert --drop-invalid")


def load_splits(cfg: dict[str, Any], which: tuple[str, ...] = ("train", "val", "test"), path: Any = None
                ) -> tuple[dict[str, ak.Array], list[str]]:
    """The requested splits of a run's data as canonical jets, and the class names.

    ``path`` is the already resolved ``data.path`` (rank 0 generates, the others get its path).
    """
    d = cfg["data"]
    main_path = path if path is not None else resolve_data_path(d["path"], d)
    if d.get("streaming") is True:  # a streaming run (config.yaml holds the resolved mode)
        return _stream_splits(cfg, which, main_path)
    jets, classes = read_dataset(main_path, d.get("drop_invalid", False))
    tr, va, te = _split_units(jets, d, str(main_path))
    out: dict[str, ak.Array] = {}
    for name, idx in (("train", tr), ("val", va), ("test", te)):
        if name not in which:
            continue
        if d.get(name) and name != "train":  # a separate dataset for this split
            other, other_classes = read_dataset(resolve_data_path(d[name], d), d.get("drop_invalid", False))
            if other_classes != classes:
                raise store.JetDataError(
                    f"{d[name]}: classes {other_classes} differ from {d['path']}: {classes}"
                )
            out[name] = other
        else:
            out[name] = jets[idx]
        if len(out[name]) == 0:
            raise store.JetDataError(
                f"{d['path']}: the {name} split is empty ({len(jets)} jets, split {d['split']})"
            )
    return out, classes


def _split_units(jets: ak.Array, d: dict[str, Any], source: str) -> tuple[np.ndarray, ...]:
    """``split_indices`` over jets, or over whole events for an event sample whose rows form whole
    events (``store.group_events``): an event's jets then stay in one part and ``data.max_jets``
    counts events. Rows that do not form whole events (a filtered table) are split as jets; the
    ``event`` input kind refuses them with ``group_events``' error when it builds its dataset."""
    n_per = 1
    if "event_jet_index" in jets.fields and len(jets):
        try:
            n_per = len(store.group_events(jets[["event_index", "event_jet_index", "label"]], source)[0])
        except store.JetDataError:
            n_per = 1
    parts = split_indices(len(jets) // n_per, d["split"], int(d.get("split_seed", 0)),
                          d.get("max_jets") or None)
    if n_per == 1:
        return parts
    return tuple((p[:, None] * n_per + np.arange(n_per)).ravel() for p in parts)


def check_class_counts(counts: dict[str, np.ndarray], classes: list[str], source: str) -> None:
    """Training needs jets of at least two classes, overall and in every split (``counts[split]`` is
    the number of jets per class); otherwise a ``JetDataError`` with the counts, before any model is
    built."""
    if len(classes) < 2:
        raise store.JetDataError(f"{source}: the dataset declares one class {classes}; "
                                 "training needs two or more")

    def describe(c: np.ndarray) -> str:
        return ", ".join(f"{cls}: {int(n)}" for cls, n in zip(classes, c))

    total = np.sum(list(counts.values()), axis=0)
    if np.count_nonzero(total) < 2:
        raise store.JetDataError(f"{source}: jets of only one class ({describe(total)}); "
                                 "training needs jets of at least two classes")
    for name, c in counts.items():
        if np.count_nonzero(c) < 2:
            raise store.JetDataError(
                f"{source}: the {name} split has jets of only one class ({describe(c)}); training needs "
                "two or more in every split: use more jets or another data.split / data.split_seed")


def _stream_splits(cfg: dict[str, Any], which: tuple[str, ...], path: Any
                   ) -> tuple[dict[str, ak.Array], list[str]]:
    """The held-out parts of a streaming run read back row group by row group (``split_rows``)."""
    from jettag.data import formats
    from jettag.data.loader import dataset_units, read_unit

    d = cfg["data"]
    check_streaming(d)
    classes = list(formats.dataset_classes(path))
    out: dict[str, ak.Array] = {}
    for name in which:
        src, select = stream_source(cfg, name, path)
        if select is None:
            jets, other = read_dataset(src)
            if other != classes:
                raise store.JetDataError(f"{d[name]}: classes {other} differ from {d['path']}: {classes}")
        else:
            parts = [read_unit(u, select=select) for u in dataset_units(src, select) if u.num_rows]
            if not parts:
                raise store.JetDataError(f"{d['path']}: the {name} split is empty (split {d['split']})")
            jets = parts[0] if len(parts) == 1 else ak.concatenate(parts)
        out[name] = jets
    return out, classes


def run_jets(cfg: dict[str, Any], run_dir: str | Path, data: str | Path | None = None
             ) -> tuple[ak.Array, list[str], str]:
    """The jets to score a trained run on: ``data`` (any supported dataset) or the run's own test
    split rebuilt from its config, with the class names (checked against the run's) and a source
    label for messages."""
    d = cfg["data"]
    if data is None:
        splits, classes = load_splits(cfg, ("test",))
        jets, source = splits["test"], f"{d['path']} (test split of {run_dir})"
    else:
        jets, classes = read_dataset(data, d.get("drop_invalid", False))
        source = str(data)
    if list(classes) != list(cfg["classes"]):
        raise store.JetDataError(f"{source}: classes {classes} differ from the run's {cfg['classes']} "
                                 f"({run_dir})")
    return jets, list(classes), source
