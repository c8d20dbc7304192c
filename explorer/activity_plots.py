"""Heatmaps of activity tables (``index.activity``): detections per site and date or hour.

Pure builders: a table in, a plotly figure out, so they are tested without Streamlit. The z
matrix is the table pivoted (groups without windows are empty cells, not zeros: no effort is not
no activity); hours run 00-23 and the ``undated`` bucket comes last, as in the table.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from explorer.plots import TEMPLATE

VALUES = ("detections", "rate", "windows")


def activity_matrix(
    table: pd.DataFrame, rows: str = "site", cols: str = "date", value: str = "detections"
) -> pd.DataFrame:
    """The table pivoted to ``rows`` × ``cols`` (NaN where a group has no windows).

    Parameters
    ----------
    table : an activity table with columns ``rows``, ``cols`` and ``value``.

    Returns
    -------
    pandas.DataFrame
        (n_rows, n_cols) values, index and columns sorted (``undated`` last).
    """
    missing = [c for c in (rows, cols, value) if c not in table.columns]
    if missing:
        raise ValueError(f"the activity table has no column {missing[0]!r}")
    if rows == cols:
        raise ValueError("rows and columns of the heatmap must be different keys")
    if table.duplicated([rows, cols]).any():
        raise ValueError(f"the table has several rows per {rows} × {cols}: group it by these two")
    m = table.pivot(index=rows, columns=cols, values=value)
    return m.sort_index(axis=0).sort_index(axis=1).astype(float)


def activity_heatmap(
    table: pd.DataFrame,
    rows: str = "site",
    cols: str = "date",
    value: str = "detections",
    height: int = 360,
) -> go.Figure:
    """Heatmap of an activity table: ``rows`` down, ``cols`` across, colour = ``value``."""
    if value not in VALUES:
        raise ValueError(f"value must be one of {VALUES}, got {value!r}")
    m = activity_matrix(table, rows, cols, value)
    fmt = ".3f" if value == "rate" else ".0f"
    fig = go.Figure(
        go.Heatmap(
            z=m.to_numpy(),
            x=[str(c) for c in m.columns],
            y=[str(r) for r in m.index],
            colorscale="Viridis",
            colorbar={"title": {"text": value}},
            hoverongaps=False,
            hovertemplate=f"{rows} %{{y}}<br>{cols} %{{x}}<br>%{{z:{fmt}}} {value}<extra></extra>",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        xaxis={"title": cols, "type": "category"},
        yaxis={"title": rows, "type": "category", "autorange": "reversed"},
        margin={"l": 60, "r": 10, "t": 20, "b": 40},
    )
    return fig
