"""Done-markers of embedded recordings (the ``progress`` table): written only after each
recording's windows are counted in its embeddings table, so a marker never names a recording
whose windows a crash lost."""

from __future__ import annotations

import datetime as _dt

import numpy as np
import pyarrow as pa

from .schema import PROGRESS_SCHEMA, embeddings_table_name


def mark_done(db, model: str, done: list[tuple[int, int]]) -> None:
    """Check that each ``(recording_id, n_windows)`` of ``done`` has exactly that many windows of
    ``model`` committed (RuntimeError naming the first that has not), then write their markers
    in one commit (:meth:`index.db.Database.finish_recordings`)."""
    if not done:
        return
    rids = np.array([int(r) for r, _ in done], np.int64)
    want = np.array([int(n) for _, n in done], np.int64)
    have = np.zeros(len(rids), np.int64)
    where = f"recording_id IN ({', '.join(map(str, rids.tolist()))})"
    if db.has_table(embeddings_table_name(model)):
        col = db.embeddings_table(model).search().where(where).select(["recording_id"])
        ids = col.limit(None).to_arrow()["recording_id"].to_numpy()
        got, n = np.unique(ids, return_counts=True)
        at = np.minimum(np.searchsorted(got, rids), max(len(got) - 1, 0))
        have = np.where(got[at] == rids, n[at], 0) if len(got) else have
    bad = np.flatnonzero(have != want)
    if len(bad):
        i = bad[0]
        raise RuntimeError(
            f"recording {rids[i]}: {have[i]} windows committed for model {model!r}, "
            f"expected {want[i]}"
        )
    # only the rows and columns needed: the whole frame would be re-read every chunk
    recs = (
        db.recordings_table()
        .search()
        .where(where)
        .select(["recording_id", "size", "mtime"])
        .limit(None)
        .to_pandas()
        .set_index("recording_id")
        .reindex(rids)
    )
    row = pa.table(
        {
            "recording_id": rids,
            "model": [model] * len(rids),
            "n_windows": want,
            "size": pa.array(recs["size"].to_numpy(), pa.int64(), from_pandas=True),
            "mtime": pa.array(recs["mtime"].to_numpy(), pa.float64(), from_pandas=True),
            "done_at": [_dt.datetime.now()] * len(rids),
        },
        schema=PROGRESS_SCHEMA,
    )
    (
        db.progress_table()
        .merge_insert(["recording_id", "model"])
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute(row)
    )
