"""The data of a run: resolve ``data.path`` (a file or ``generate:...``), split it, build tensors.

The train/val/test split is a fixed permutation from ``data.split_seed`` (not the training seed),
so runs with different training seeds share one test set and ``jettag evaluate RUN`` can rebuild
exactly the held-out jets of a run from its ``config.yaml`` alone.
"""

from __future__ import annotations

import importlib
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


def _formats():
    try:
        return importlib.import_module("jettag.data.formats")
    except ModuleNotFoundError:  # reader module not installed in this tree: canonical stores only
        return None


def read_dataset(path: Path | str, drop_invalid: bool = False) -> tuple[ak.Array, list[str]]:
    """All jets of a dataset (any supported format) and its class names."""
    fmt = _formats()
    if fmt is not None:
        return fmt.read_jets(path, drop_invalid=drop_invalid), list(fmt.dataset_classes(path))
    jets = store.read_store(path)
    jets, _ = store.validate_jets(jets, source=str(path), drop_invalid=drop_invalid)
    return jets, store.dataset_classes(path)


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


def load_splits(cfg: dict[str, Any], which: tuple[str, ...] = ("train", "val", "test"), path: Any = None
                ) -> tuple[dict[str, ak.Array], list[str]]:
    """The requested splits of a run's data as canonical jets, and the class names.

    ``path`` is the already resolved ``data.path`` (rank 0 generates, the others get its path).
    """
    d = cfg["data"]
    main_path = path if path is not None else resolve_data_path(d["path"], d)
    jets, classes = read_dataset(main_path, d.get("drop_invalid", False))
    tr, va, te = split_indices(len(jets), d["split"], int(d.get("split_seed", 0)), d.get("max_jets") or None)
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


def check_class_counts(splits: dict[str, ak.Array], classes: list[str], source: str) -> None:
    """Training needs jets of at least two classes, overall and in every split; otherwise a
    ``JetDataError`` with the jet count per class (before any model is built)."""
    if len(classes) < 2:
        raise store.JetDataError(f"{source}: the dataset declares one class {classes}; "
                                 "training needs two or more")
    counts = {name: np.bincount(ak.to_numpy(jets["label"]).astype(np.int64), minlength=len(classes))
              for name, jets in splits.items()}

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
