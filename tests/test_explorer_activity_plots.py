"""Activity heatmaps (explorer.activity_plots): the figure's z is the table pivoted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from explorer.activity_plots import activity_heatmap, activity_matrix
from index.activity import UNDATED


def _table():
    return pd.DataFrame(
        {
            "site": ["B", "A", "A", "A"],
            "hour": ["05", "23", "05", UNDATED],
            "windows": [10, 4, 8, 2],
            "detections": [3, 0, 2, 1],
        }
    ).assign(rate=lambda t: t["detections"] / t["windows"])


def test_heatmap_z_is_the_table_with_hours_in_order_and_undated_last():
    fig = activity_heatmap(_table(), "site", "hour")
    assert list(fig.data[0].x) == ["05", "23", UNDATED]
    assert list(fig.data[0].y) == ["A", "B"]
    z = np.asarray(fig.data[0].z, float)
    expected = np.array([[2.0, 0.0, 1.0], [3.0, np.nan, np.nan]])  # B was not recorded at 23
    np.testing.assert_array_equal(z, expected)
    rate = np.asarray(activity_heatmap(_table(), "site", "hour", "rate").data[0].z, float)
    np.testing.assert_allclose(rate[0], [0.25, 0.0, 0.5])


def test_matrix_refuses_a_table_not_grouped_by_the_two_keys():
    with pytest.raises(ValueError, match="no column 'date'"):
        activity_matrix(_table(), "site", "date")
    with pytest.raises(ValueError, match="several rows"):
        activity_matrix(pd.concat([_table(), _table()]), "site", "hour")
    with pytest.raises(ValueError, match="value must be"):
        activity_heatmap(_table(), value="score")
