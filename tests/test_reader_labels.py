"""The label and row-number helpers every reader shares (``data/formats/common.py``), value by value.

The readers' own tests (``test_formats.py``, ``test_raises_readers.py``) go through whole files; these
pin each helper's exact result and message, including the chunk offset added to every row number.
"""

from __future__ import annotations

import re

import awkward as ak
import numpy as np
import pytest

from jettag.data.formats import common as C
from jettag.data.store import JetDataError

NAMES = ["label_QCD", "label_Hbb", "label_Tbl"]


def test_row_of_flat_and_first_row() -> None:
    counts = np.array([2, 0, 3, 1])  # flat entries 0-1 jet 0, 2-4 jet 2, 5 jet 3
    assert [C._row_of_flat(counts, i) for i in range(6)] == [0, 0, 2, 2, 2, 3]
    assert C._first_row(np.array([False, False, True, True])) == 2


def test_one_hot_to_label_values_and_dtype() -> None:
    onehot = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    got = C._one_hot_to_label(onehot, NAMES, "f.root", 0)
    assert got.dtype == np.int32 and got.tolist() == [2, 0, 1]


@pytest.mark.parametrize("bad", [[1, 1, 0], [0, 0, 0], [0.5, 0.5, 0], [2, -1, 0], [np.nan, 1, 0],
                                 [1, 0, np.inf]], ids=["two", "none", "halves", "2-1", "nan", "inf"])
def test_one_hot_row_without_exactly_one_one_named_with_offset(bad: list[float]) -> None:
    onehot = np.array([[0, 0, 1], [1, 0, 0], bad, [0, 1, 0]], dtype=np.float64)
    seen = re.escape(str(dict(zip(NAMES, np.asarray(bad, dtype=np.float64).tolist()))))
    pattern = (rf"^f\.root: one-hot label fields \['label_QCD', 'label_Hbb', 'label_Tbl'\] do not hold "
               rf"exactly one 1 at row 102 \(values {seen}\)$")
    with pytest.raises(JetDataError, match=pattern):
        C._one_hot_to_label(onehot, NAMES, "f.root", 100)


def test_binary_label_values_and_errors() -> None:
    got = C._binary_label(np.array([0.0, 1.0, 1.0, 0.0]), "is_signal_new", "f.h5", 0)
    assert got.dtype == np.int32 and got.tolist() == [0, 1, 1, 0]
    for bad, shown in ((0.5, "0.5"), (np.nan, "nan"), (-1.0, "-1.0")):
        values = np.array([0.0, 1.0, bad, 7.0])
        with pytest.raises(JetDataError, match=rf"^f\.h5: field 'is_signal_new' must be 0 or 1, found "
                                               rf"{shown} at row 12$"):
            C._binary_label(values, "is_signal_new", "f.h5", 10)


def test_numbers_required() -> None:
    for ok in (ak.Array([1.0, 2.0]), ak.Array([[1, 2], [3]]), ak.Array([True, False]),
               ak.Array([[1.5, None], []])):
        C._require_numbers(ok, "x", "f")
    for bad in (ak.Array(["a", "b"]), ak.Array([["a"], ["b", "c"]]), ak.Array([{"a": 1}])):
        with pytest.raises(JetDataError, match=r"^f: field 'x' must hold real numbers, found type "):
            C._require_numbers(bad, "x", "f")


def test_jagged_float() -> None:
    got = C._jagged_float(ak.Array([[1, 2], [], [3, None]]), "part_px", "f", 0)
    assert str(got.type.content) == "var * float64"
    assert got[0].tolist() == [1.0, 2.0] and len(got[1]) == 0
    assert got[2][0] == 3.0 and np.isnan(got[2][1])  # a missing value becomes NaN, named later
    with pytest.raises(JetDataError, match=r"^f: field 'part_px' is missing \(null\) for the jet at row 6$"):
        C._jagged_float(ak.Array([[1.0], None, [2.0]]), "part_px", "f", 5)
    with pytest.raises(JetDataError, match=r"^f: field 'part_px' must be one list of numbers per jet"):
        C._jagged_float(ak.Array([[[1.0]], [[2.0]]]), "part_px", "f", 0)


def test_flat_column() -> None:
    arr = np.array([1.0, 2.0])
    assert C._flat_column(arr, "jet_pt", "f", 0) is arr  # numpy passes through untouched
    got = C._flat_column(ak.Array([1, 2, 3]), "jet_pt", "f", 0)
    assert isinstance(got, np.ndarray) and got.tolist() == [1, 2, 3]
    with pytest.raises(JetDataError, match=r"^f: field 'jet_pt' is missing \(null\) at row 9$"):
        C._flat_column(ak.Array([1.0, 2.0, None]), "jet_pt", "f", 7)
    with pytest.raises(JetDataError, match=r"^f: field 'jet_pt' must hold one number per jet, found type"):
        C._flat_column(ak.Array([[1.0], [2.0]]), "jet_pt", "f", 0)
    with pytest.raises(JetDataError, match=r"^f: field 'jet_pt' must hold real numbers"):
        C._flat_column(["a", "b"], "jet_pt", "f", 0)


def test_one_hot_message_is_the_same_for_integer_and_float_columns() -> None:
    """ROOT files store the one-hot columns as integers, HDF5/parquet often as floats: the error names
    the values the same way (as floats) whichever it was."""
    for dtype in (np.int32, np.float32):
        onehot = np.array([[0, 1, 0], [1, 1, 0]], dtype=dtype)
        with pytest.raises(JetDataError, match=r"at row 1 \(values \{'label_QCD': 1\.0, 'label_Hbb': 1\.0, "
                                               r"'label_Tbl': 0\.0\}\)$"):
            C._one_hot_to_label(onehot, NAMES, "f", 0)
