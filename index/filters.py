"""SQL filters for search: window columns joined with recording columns, evaluated by LanceDB.

The joined view (one row per window of a pinned snapshot) lives in an in-memory LanceDB
table, rebuilt only when the embeddings or recordings table version changes, so the
predicate is parsed and run by LanceDB's SQL engine (DataFusion) without extra dependencies.
"""

from __future__ import annotations

import re
import threading
import weakref

import lancedb
import numpy as np
import pandas as pd
import pyarrow as pa

from index.timeline import window_times

# Columns a search filter can name: the window, its recording, and times derived from them.
FILTER_COLUMNS = (
    "window_id",
    "recording_id",
    "channel",
    "start_s",
    "end_s",
    "audio_root",
    "path",
    "site",
    "start_time",  # recording start (timestamp, may be null)
    "duration_s",
    "sample_rate",
    "channels",
    "size",  # bytes of the file when it was embedded
    "mtime",  # its modification time (s since the epoch)
    "status",
    "error",
    "time",  # window start time = start_time + start_s (timestamp)
    "hour",  # whole hour of day of the window start, 0..23 (index.timeline)
    "date",  # calendar date of the window start
)

_OFFSET = "_offset"  # snapshot offset of each view row
_memory = None  # one in-memory LanceDB connection per process
_VIEW_TYPES = {
    "time": pa.timestamp("us"),
    "hour": pa.int32(),
    "date": pa.date32(),
    "size": pa.int64(),
    "mtime": pa.float64(),
    "status": pa.string(),
    "error": pa.string(),
    "site": pa.string(),
}
_VIEW_LOCK = threading.Lock()  # guards the views and their queries (see filter_offsets)
MEMO_FILTERS = 32  # answers kept per view: the explorer re-runs one filter for every click


def _conn():
    global _memory
    if _memory is None:
        _memory = lancedb.connect("memory://")
    return _memory


def _view(db, snap) -> pa.Table:
    """Window + recording columns of ``snap`` (one row per window, in offset order)."""
    recs = db.recordings_frame()
    win = pd.DataFrame(
        {
            _OFFSET: np.arange(len(snap), dtype=np.int64),
            "window_id": snap.window_id,
            "recording_id": snap.recording_id,
            "channel": snap.channel,
            "start_s": snap.start_s,
            "end_s": snap.end_s,
        }
    )
    cols = ["recording_id", "audio_root", "path", "site", "start_time", "duration_s"]
    cols += ["sample_rate", "channels", "size", "mtime", "status", "error"]
    df = win.merge(recs[cols], on="recording_id", how="left")
    df[["time", "hour", "date"]] = window_times(df["start_time"], df["start_s"])
    df = df.sort_values(_OFFSET, kind="stable")
    table = pa.Table.from_pandas(df[[_OFFSET, *FILTER_COLUMNS]], preserve_index=False)
    schema = table.schema
    # explicit types: a column that is all null (no errors yet) would otherwise have none
    for name, kind in _VIEW_TYPES.items():
        schema = schema.set(schema.get_field_index(name), pa.field(name, kind))
    return table.cast(schema)


def filter_offsets(db, snap, sql: str) -> np.ndarray:
    """Snapshot offsets (m,) of windows satisfying ``sql``; ValueError with the columns if bad."""
    if ";" in re.sub(r"'(?:[^']|'')*'", "", sql):  # LanceDB would ignore all after the first
        raise ValueError(f"bad search filter {sql!r}: one expression, no ';' (use AND / OR)")
    # the explorer shares one Database between sessions (threads): a view being rebuilt under
    # a query would be dropped while read
    with _VIEW_LOCK:
        return _filter_offsets(db, snap, sql)


def _filter_offsets(db, snap, sql: str) -> np.ndarray:
    # the recordings version as the view reads it (a Lance dataset, not a LanceDB handle per search)
    key = (snap.version, db.data_versions(snap.model)[1], len(snap))
    cached = db.search_state.filter_views.get(snap.model)
    if cached is None or cached[0] != key:
        name = f"view_{id(db)}_{snap.model}"
        conn = _conn()
        conn.drop_table(name, ignore_missing=True)
        table = conn.create_table(name, _view(db, snap))
        if cached is None:  # free the in-memory view with its database handle
            weakref.finalize(db, conn.drop_table, name, ignore_missing=True)
        cached = (key, table, {})
        db.search_state.filter_views[snap.model] = cached
    memo = cached[2]  # sql -> offsets, for this view (these table versions) only
    if sql in memo:
        return memo[sql]
    try:
        got = cached[1].search().where(sql).select([_OFFSET]).limit(None).to_arrow()
    except Exception as e:  # LanceDB raises ValueError/RuntimeError with a parser message
        msg = str(e).split("\n")[0]
        raise ValueError(
            f"bad search filter {sql!r}: {msg}. Columns: {', '.join(FILTER_COLUMNS)}"
        ) from None
    offsets = np.sort(got[_OFFSET].to_numpy().astype(np.int64))
    offsets.flags.writeable = False  # shared by later calls with the same filter
    if len(memo) >= MEMO_FILTERS:
        memo.pop(next(iter(memo)))
    memo[sql] = offsets
    return offsets
