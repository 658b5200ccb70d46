"""JetClass ROOT (tree "tree", part_* branches, one-hot label_*), read with uproot in chunks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np

from jettag.data import store
from jettag.data.formats.common import (
    IMPACT_FIELDS,
    JET_P4_FIELDS,
    JETCLASS_CLASSES,
    JETCLASS_LABELS,
    PID_FLAGS,
    _flat_column,
    _jagged_float,
    _jet_p4_from_stored,
    _one_hot_to_label,
    _pid_from_jagged_flags,
    _Reader,
    error_text,
)
from jettag.data.store import JetDataError


class _JetClassReader(_Reader):
    TREE = "tree"
    REQUIRED = (*store.MOMENTUM_FIELDS, "part_charge", *PID_FLAGS, *JETCLASS_LABELS)

    def _tree(self, path: Path):
        import uproot

        try:
            f = uproot.open(path)
        except Exception as err:  # uproot raises a variety of types for corrupt files
            raise JetDataError(f"{path}: cannot open as ROOT file: {error_text(err)}") from err
        names = {k.split(";")[0] for k in f.keys(recursive=False)}
        if self.TREE not in names:
            f.close()
            raise JetDataError(f"{path}: tree {self.TREE!r} missing; the file has {sorted(names)}")
        return f, f[self.TREE]

    def _branches(self, path: Path, tree) -> tuple[list[str], bool]:
        import uproot

        keys = set(tree.keys())
        missing = [b for b in self.REQUIRED if b not in keys]
        if missing:
            raise JetDataError(f"{path}: tree {self.TREE!r} lacks branch(es) {missing}")
        impact = [b for b in IMPACT_FIELDS if b in keys]
        if impact and len(impact) != len(IMPACT_FIELDS):
            lacking = [b for b in IMPACT_FIELDS if b not in keys]
            raise JetDataError(
                f"{path}: tree {self.TREE!r} lacks branch(es) {lacking} while {impact} are present"
            )
        stored_jet = all(b in keys for b in JET_P4_FIELDS)
        branches = [*self.REQUIRED, *impact, *(JET_P4_FIELDS if stored_jet else ())]
        if isinstance(tree, uproot.TTree):  # a tree whose size field disagrees with its branches
            for b in branches:  # would otherwise be iterated up to the (corrupt) declared size
                if tree[b].num_entries != tree.num_entries:
                    raise JetDataError(
                        f"{path}: tree {self.TREE!r} declares {tree.num_entries} entries but branch {b!r} "
                        f"holds {tree[b].num_entries}"
                    )
        return branches, stored_jet

    def classes(self, path: Path) -> list[str]:
        f, tree = self._tree(path)
        with f:
            self._branches(path, tree)
        return list(JETCLASS_CLASSES)

    def num_jets(self, path: Path) -> int:
        f, tree = self._tree(path)
        with f:
            self._branches(path, tree)
            return int(tree.num_entries)

    def chunks(self, path: Path, chunk_size: int, stop: int | None) -> Iterator[tuple[int, ak.Array]]:
        f, tree = self._tree(path)
        source = str(path)
        with f:
            branches, stored_jet = self._branches(path, tree)
            end = int(tree.num_entries) if stop is None else min(stop, int(tree.num_entries))
            if end == 0:
                return
            offset = 0
            for chunk in tree.iterate(branches, step_size=chunk_size, entry_stop=end, library="ak"):
                mom = [_jagged_float(chunk[b], b, source, offset) for b in store.MOMENTUM_FIELDS]
                counts = ak.to_numpy(ak.num(mom[0], axis=1))
                onehot = np.stack(
                    [_flat_column(chunk[b], b, source, offset) for b in JETCLASS_LABELS], axis=1
                )
                label = _one_hot_to_label(onehot, JETCLASS_LABELS, source, offset)
                pid = _pid_from_jagged_flags(chunk, counts, source, offset)
                extra = {b: chunk[b] for b in IMPACT_FIELDS if b in chunk.fields} or None
                jet_p4 = None
                if stored_jet:
                    jet_p4 = _jet_p4_from_stored(
                        {b: _flat_column(chunk[b], b, source, offset) for b in JET_P4_FIELDS}
                    )
                yield (
                    offset,
                    store.make_jets(
                        *mom,
                        label=label,
                        pid=pid,
                        charge=chunk["part_charge"],
                        extra_particle=extra,
                        jet_p4=jet_p4,
                    ),
                )
                offset += len(chunk)
