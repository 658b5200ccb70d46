"""TopLandscape pandas HDF5 (key "table", E_i/PX_i/PY_i/PZ_i columns, is_signal_new)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np

from jettag.data import store
from jettag.data.formats.common import (
    TOPLANDSCAPE_CLASSES,
    _binary_label,
    _padded_to_jagged,
    _Reader,
)
from jettag.data.store import JetDataError


class _TopLandscapeReader(_Reader):
    KEY = "table"

    @staticmethod
    def _open(path: Path):
        import pandas as pd

        try:
            return pd.HDFStore(path, mode="r")
        except Exception as err:  # tables raises several unrelated types for a corrupt file
            raise JetDataError(f"{path}: cannot open as pandas HDF5: {err}") from err

    def _layout(self, path: Path) -> tuple[int, int]:
        """(number of jets, number of constituent slots), checking every needed column exists."""
        with self._open(path) as h5:
            if f"/{self.KEY}" not in h5.keys():
                raise JetDataError(f"{path}: HDF5 key {self.KEY!r} missing; the file has keys {h5.keys()}")
            storer = h5.get_storer(self.KEY)
            nrows = int(storer.nrows if storer.is_table else storer.shape[0])
            columns = list(h5.select(self.KEY, start=0, stop=0).columns)
        slots = sorted(int(m.group(1)) for c in columns if (m := re.fullmatch(r"E_(\d+)", str(c))))
        needed = [f"{p}_{i}" for i in range(len(slots)) for p in ("E", "PX", "PY", "PZ")] + ["is_signal_new"]
        missing = [c for c in needed if c not in set(columns)]
        if not slots or missing:
            shown = missing[:8] if slots else ["E_0", "PX_0", "PY_0", "PZ_0"]
            raise JetDataError(
                f"{path}: TopLandscape column(s) {shown}{' ...' if len(missing) > 8 else ''} missing "
                f"(key {self.KEY!r} has {len(columns)} columns: {columns[:6]} ...)"
            )
        return nrows, len(slots)

    def classes(self, path: Path) -> list[str]:
        return list(TOPLANDSCAPE_CLASSES)

    def num_jets(self, path: Path) -> int:
        return self._layout(path)[0]

    def chunks(self, path: Path, chunk_size: int, stop: int | None) -> Iterator[tuple[int, ak.Array]]:
        nrows, m = self._layout(path)
        end = nrows if stop is None else min(stop, nrows)
        cols = {p: [f"{p}_{i}" for i in range(m)] for p in ("E", "PX", "PY", "PZ")}
        source = str(path)
        with self._open(path) as h5:
            for start in range(0, end, chunk_size):
                df = h5.select(self.KEY, start=start, stop=min(start + chunk_size, end))
                arrays = {p: df[c].to_numpy(dtype=np.float64) for p, c in cols.items()}
                # Padding is all-zero; a NaN or a negative energy is kept as a "real" entry so that
                # validation reports it instead of it silently vanishing as padding.
                real = (arrays["E"] != 0) | (arrays["PX"] != 0) | (arrays["PY"] != 0) | (arrays["PZ"] != 0)
                jag, _ = _padded_to_jagged(arrays, real)
                label = _binary_label(df["is_signal_new"].to_numpy(), "is_signal_new", source, start)
                yield start, store.make_jets(jag["PX"], jag["PY"], jag["PZ"], jag["E"], label=label)
