"""Arrow columns built from buffers: what ``pa.array`` gives, without importing pandas."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from index.rows import arrow_column


@pytest.mark.parametrize(
    "values",
    [
        np.array([3, -1, 2**40], np.int64),
        np.array([1, 2], np.int32),
        np.array([0.5, np.nan, -2.0], np.float32),
        np.array([1.25], np.float64),
        np.array([], np.float64),
        np.array(["2024-05-01T04:30", "NaT", "1999-12-31T23:59:59.5"], "datetime64[us]"),
        np.array(["NaT", "NaT"], "datetime64[us]"),
    ],
)
def test_numbers_and_times_equal_pa_array(values):
    got = arrow_column(values)
    want = pa.array(values)
    assert got.type == want.type and got.null_count == want.null_count
    np.testing.assert_array_equal(  # NaN and NaT equal themselves here
        got.to_numpy(zero_copy_only=False), want.to_numpy(zero_copy_only=False)
    )
    assert got.is_null().to_pylist() == want.is_null().to_pylist()


@pytest.mark.parametrize("values", [["a", None, "dür/ß €", ""], [None], [], ["x" * 5000, "y"]])
def test_strings_equal_pa_array(values):
    col = np.array(values, dtype=object)
    got = arrow_column(col)
    assert got.equals(pa.array(col, pa.string())) and got.to_pylist() == values


def test_other_shapes_and_types_are_refused():
    with pytest.raises(ValueError, match="1-d"):
        arrow_column(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="no Arrow column"):
        arrow_column(np.array([True, False]))
