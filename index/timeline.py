"""When a window was recorded: the one definition of ``time``, ``hour`` and ``date``.

Search filters, clustering, the map and activity summaries all join windows to their recording's
``start_time`` the same way, so that "hour 5" means the same windows everywhere.
"""

from __future__ import annotations

import pandas as pd


def window_times(start_time: pd.Series, start_s: pd.Series) -> pd.DataFrame:
    """Wall-clock time, hour of day and date of each window.

    Parameters
    ----------
    start_time : Series (n,)
        The recording's start (datetime-like or ISO strings; missing or unparseable when undated).
    start_s : Series (n,)
        The window's offset into its recording, seconds.

    Returns
    -------
    DataFrame (n, 3), on ``start_s``'s index
        ``time`` (datetime64[us], NaT when undated), ``hour`` (the whole hour of day 0-23 as
        float64, NaN when undated: a window starting at 05:59 is in hour 5) and ``date``
        (``datetime.date`` or NaT).
    """
    start = pd.to_datetime(pd.Series(start_time).to_numpy(), errors="coerce")
    start = pd.Series(start, index=start_s.index).astype("datetime64[us]")
    time = start + pd.to_timedelta(start_s.astype("float64"), unit="s")
    return pd.DataFrame(
        {"time": time, "hour": time.dt.hour.astype("float64"), "date": time.dt.date},
        index=start_s.index,
    )
